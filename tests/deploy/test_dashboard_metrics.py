"""Every query of the Grafana dashboard, the alert rules and the Prometheus Adapter rules names only
metrics that a running clipserve exports on GET /metrics (checked against a live server), apart from an
explicit list of metrics other exporters provide."""

from __future__ import annotations

import json

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.conftest import ROOT
from tests.deploy.promql import (
    adapter_query_names,
    dashboard_exprs,
    dashboard_panels,
    metric_names,
    variable_query_names,
)

DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "clipserve.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ADAPTER = ROOT / "deploy" / "prometheus-adapter" / "values.yaml"
# Not clipserve's: NVIDIA DCGM exporter (the dashboard's GPU row only) and Prometheus' own `up`.
DCGM_METRICS = {"DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_POWER_USAGE"}
GPU_ROW_PREFIX = "GPU"
PROMETHEUS_METRICS = {"up"}
# The sample names each metric type exposes (Prometheus stores counters as <name>_total, and so on).
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count"),
            "gauge": ("",), "unknown": ("",), "info": ("_info",), "stateset": ("",), "gaugehistogram": ("_bucket",)}


def exported_names(exposition: str) -> tuple[set[str], set[str]]:
    """(every series name a scrape of ``exposition`` can store, the names with at least one sample).

    A labelled metric with no child yet is declared (HELP/TYPE) without samples; Prometheus would store
    its series as soon as one exists, so declared names count as exported.
    """
    declared: set[str] = set()
    sampled: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        declared.update(family.name + suffix for suffix in SUFFIXES[family.type])
        sampled.update(sample.name for sample in family.samples)
    return declared | sampled, sampled


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _dashboard_names() -> dict[str, set[str]]:
    """Metric name -> where the dashboard uses it (panel titles and variables)."""
    uses: dict[str, set[str]] = {}
    for title, row, expr in dashboard_exprs(_dashboard()):
        for name in metric_names(expr):
            if name in DCGM_METRICS:
                assert row is not None and row.startswith(GPU_ROW_PREFIX), f"{name} outside the GPU row: {title}"
            uses.setdefault(name, set()).add(title)
    for variable in _dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            for name in variable_query_names(query):
                uses.setdefault(name, set()).add(f"${variable['name']}")
    return uses


def test_extractor_finds_metric_names() -> None:
    """The PromQL walk finds selectors inside functions, aggregations and binary operations, not labels."""
    expr = ('histogram_quantile(0.95, sum by (le) (rate(a_bucket{job=~"$job", route!~"x|y"}[$__rate_interval])))'
            " / on() group_left sum(b_total) + count(c{d=\"e_total\"} offset 5m) > bool 3")
    assert metric_names(expr) == {"a_bucket", "b_total", "c"}
    assert variable_query_names('label_values(clipserve_ready{job=~"$job"}, instance)') == {"clipserve_ready"}
    assert adapter_query_names("sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)") == set()
    with pytest.raises(ValueError, match="without a metric name"):
        metric_names('sum({job="x"})')


def test_exported_names_handle_suffixes() -> None:
    exposition = (
        "# HELP x_total Things.\n# TYPE x_total counter\nx_total 3.0\n"
        "# HELP h Durations.\n# TYPE h histogram\n"
        "# HELP g A gauge.\n# TYPE g gauge\ng 1.0\n"
    )
    names, sampled = exported_names(exposition)
    assert {"x_total", "h_bucket", "h_sum", "h_count", "g"} <= names
    assert "x" not in names and "h" not in names
    assert sampled == {"x_total", "g"}


def test_dashboard_covers_the_requested_panels() -> None:
    names = set(_dashboard_names())
    required = {"clipserve_requests_total", "clipserve_request_duration_seconds_bucket", "clipserve_batch_size_bucket",
                "clipserve_queue_depth", "clipserve_queue_wait_duration_seconds_bucket",
                "clipserve_preprocess_duration_seconds_bucket", "clipserve_inference_duration_seconds_bucket"}
    assert required <= names, required - names
    assert names >= DCGM_METRICS
    quantiles = {q for _, _, e in dashboard_exprs(_dashboard()) if "clipserve_request_duration_seconds_bucket" in e
                 for q in ("0.5", "0.95", "0.99") if f"histogram_quantile({q}," in e}
    assert quantiles == {"0.5", "0.95", "0.99"}


def test_dashboard_names_only_exported_metrics(live_metrics: str) -> None:
    exported, sampled = exported_names(live_metrics)
    missing = {name: sorted(where) for name, where in _dashboard_names().items()
               if name not in exported and name not in DCGM_METRICS}
    assert not missing, f"dashboard queries name metrics the server does not export: {missing}"
    # The requests sent (one good embed, one bad request) gave the traffic, error and latency panels data.
    for name in ("clipserve_requests_total", "clipserve_request_duration_seconds_bucket",
                 "clipserve_batch_size_bucket", "clipserve_inference_duration_seconds_bucket",
                 "clipserve_items_embedded_total", "clipserve_ready"):
        assert name in sampled, f"{name} has no sample after the requests"
    statuses = {sample.labels.get("status") for family in text_string_to_metric_families(live_metrics)
                for sample in family.samples if sample.name == "clipserve_requests_total"}
    assert any(s and s.startswith("4") for s in statuses), f"no client-error series: {statuses}"


def test_alert_and_adapter_rules_name_only_exported_metrics(live_metrics: str) -> None:
    exported, _ = exported_names(live_metrics)
    rules = [r for group in yaml.safe_load(ALERTS.read_text())["groups"] for r in group["rules"]]
    used = {name for rule in rules for name in metric_names(rule["expr"])}
    adapter = yaml.safe_load(ADAPTER.read_text())["rules"]["custom"]
    used |= {name for rule in adapter for q in (rule["seriesQuery"], rule["metricsQuery"])
             for name in adapter_query_names(q)}
    missing = used - exported - PROMETHEUS_METRICS
    assert not missing, f"alert / adapter rules name metrics the server does not export: {missing}"
    assert {"clipserve_queue_depth", "clipserve_requests_in_flight"} <= used


def test_dashboard_json_is_consistent() -> None:
    """Unique panel ids, every target on the dashboard's datasource variable, a unique uid."""
    dashboard = _dashboard()
    rows = [p for p in dashboard["panels"] if p["type"] == "row"]
    panels = [p for p, _ in dashboard_panels(dashboard)]
    ids = [p["id"] for p in rows + panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
    assert dashboard["uid"] == "clipserve"
