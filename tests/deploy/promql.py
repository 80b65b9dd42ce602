"""Metric names in PromQL expressions (Grafana panels, alert rules, Prometheus Adapter rules).

Expressions are parsed with promql-parser (the Rust PromQL parser's Python binding), after Grafana's
template variables are replaced by values that parse; every vector selector must name its metric.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import promql_parser

# Grafana's range variables become a duration; any other $variable (or ${variable}) a plain label value.
RANGE_VARIABLES = re.compile(r"\$(__rate_interval|__interval|__range)\b|\$\{(__rate_interval|__interval|__range)\}")
VARIABLES = re.compile(r"\$\{?\w+\}?")
# Grafana variable queries: label_values(<selector>, <label>) or label_values(<label>).
LABEL_VALUES = re.compile(r"^\s*label_values\((?P<selector>.*),\s*\w+\s*\)\s*$", re.S)
# Prometheus Adapter templates.
ADAPTER_TEMPLATES = {"<<.Series>>": "series_placeholder", "<<.LabelMatchers>>": 'a="b"', "<<.GroupBy>>": "pod"}


def substitute_variables(expr: str) -> str:
    """Replace Grafana template variables so that the expression parses."""
    return VARIABLES.sub("x", RANGE_VARIABLES.sub("5m", expr))


def metric_names(expr: str) -> set[str]:
    """The metric names that the vector selectors of ``expr`` read."""
    names: set[str] = set()
    unnamed: list[str] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            else:
                unnamed.append(str(node))

    promql_parser.walk(promql_parser.parse(substitute_variables(expr)), visit)
    if unnamed:
        raise ValueError(f"selectors without a metric name in {expr!r}: {unnamed}")
    return names


def variable_query_names(query: str) -> set[str]:
    """Metric names in a Grafana Prometheus variable query (``label_values(sel, label)`` or a PromQL query)."""
    match = LABEL_VALUES.match(query)
    if match:
        return metric_names(match["selector"])
    if re.match(r"^\s*label_values\(\s*\w+\s*\)\s*$", query):
        return set()  # every series' label values: names no metric
    return metric_names(query)


def adapter_query_names(query: str) -> set[str]:
    """Metric names in a Prometheus Adapter seriesQuery or metricsQuery (its <<.X>> templates filled in)."""
    for template, value in ADAPTER_TEMPLATES.items():
        query = query.replace(template, value)
    return metric_names(query) - {ADAPTER_TEMPLATES["<<.Series>>"]}


def dashboard_panels(dashboard: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str | None]]:
    """Every panel of a dashboard with the title of the row it sits in (rows nest collapsed panels)."""
    row: str | None = None
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            row = panel.get("title")
            for inner in panel.get("panels", []):
                yield inner, row
        else:
            yield panel, row


def dashboard_exprs(dashboard: dict[str, Any]) -> Iterator[tuple[str, str | None, str]]:
    """(panel title, row title, expr) of every query target in the dashboard."""
    for panel, row in dashboard_panels(dashboard):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield panel.get("title", ""), row, target["expr"]
