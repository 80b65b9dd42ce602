"""docker-compose.yml brought up for real with podman-compose: clipserve (the slim image) and Prometheus
(deploy/compose.local.yml: the images scripts/build_images.sh builds, where the official ones cannot be
pulled). After a few requests, a PromQL query against that Prometheus returns clipserve's batch-size
histogram: Prometheus found clipserve by DNS inside the compose network and scraped it. Grafana cannot be
had here: its dashboard is checked statically (test_dashboard_metrics.py)."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from service.measure.serving import free_port
from tests.deploy import podman
from tests.deploy.conftest import ROOT
from tests.deploy.test_compose import _tool

pytestmark = pytest.mark.container

FILES = ["-f", str(ROOT / "docker-compose.yml"), "-f", str(ROOT / "deploy" / "compose.local.yml")]
REQUESTS = 3
SCRAPE_DEADLINE_S = 120.0  # scrape and DNS refresh every 15 s (deploy/prometheus/prometheus.yml): a guard
QUERY = 'sum by (modality) (clipserve_batch_size_count{job="clipserve", model="clipserve-demo"})'


@pytest.fixture(scope="module")
def stack() -> Iterator[dict[str, str]]:
    """clipserve and prometheus up (`podman-compose up -d clipserve prometheus`) on free host ports; their
    URLs. Brought down, volumes included, afterwards."""
    compose = _tool("podman-compose", "pip install podman-compose, in the dev extra")
    podman.build("cpu-onnx")
    podman.build("prometheus")
    ports = {"REST_PORT": free_port(), "GRPC_PORT": free_port(), "PROMETHEUS_PORT": free_port()}
    env = {**os.environ, **{key: str(port) for key, port in ports.items()}}
    name = f"clipserve-test-{uuid.uuid4().hex[:8]}"
    project = ["-p", name]

    def compose_run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([compose, *project, *FILES, *args], capture_output=True, text=True, env=env,
                              timeout=300, cwd=ROOT)

    up = compose_run("up", "-d", "clipserve", "prometheus")
    try:
        assert up.returncode == 0, f"podman-compose up failed:\n{up.stdout}{up.stderr}"
        clipserve = f"http://127.0.0.1:{ports['REST_PORT']}"
        podman.wait_ready(f"{name}_clipserve_1", clipserve, 300)  # podman-compose's container name
        yield {"clipserve": clipserve, "prometheus": f"http://127.0.0.1:{ports['PROMETHEUS_PORT']}"}
    finally:
        down = compose_run("down", "-v")
        assert down.returncode == 0, f"podman-compose down failed:\n{down.stdout}{down.stderr}"


def _batch_counts(prometheus: str) -> dict[str, float]:
    """Scraped batch counts by modality, from a PromQL query (empty until the first scrape)."""
    out = httpx.get(f"{prometheus}/api/v1/query", params={"query": QUERY}, timeout=10)
    assert out.status_code == 200, out.text
    body = out.json()
    assert body["status"] == "success", body
    return {r["metric"]["modality"]: float(r["value"][1]) for r in body["data"]["result"]}


def test_prometheus_scrapes_clipserve_in_the_compose_network(stack: dict[str, str]) -> None:
    for i in range(REQUESTS):
        out = httpx.post(f"{stack['clipserve']}/embed", json={"inputs": [{"text": f"a photo of a dog {i}"}]},
                         timeout=60)
        assert out.status_code == 200, out.text
    deadline = time.monotonic() + SCRAPE_DEADLINE_S
    counts = _batch_counts(stack["prometheus"])
    while counts.get("text", 0) < REQUESTS:  # wait for a scrape after the requests (every 15 s)
        assert time.monotonic() < deadline, f"no scrape with our {REQUESTS} text batches: {counts}"
        time.sleep(1)
        counts = _batch_counts(stack["prometheus"])
    targets = httpx.get(f"{stack['prometheus']}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
    clipserve = [t for t in targets if t["labels"]["job"] == "clipserve"]
    assert clipserve and all(t["health"] == "up" for t in clipserve), clipserve
    assert clipserve[0]["discoveredLabels"]["__meta_dns_name"] == "clipserve"  # found by the compose network's DNS
    buckets = httpx.get(f"{stack['prometheus']}/api/v1/query", timeout=10,
                        params={"query": 'clipserve_batch_size_bucket{job="clipserve", le="+Inf"}'}).json()
    assert buckets["data"]["result"], "the histogram's buckets were not scraped"
    print(f"\nPrometheus (compose network) scraped clipserve_batch_size: {counts}")
