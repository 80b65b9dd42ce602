"""A client that goes away: its queued items are dropped before compute (real server process)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.api.helpers import write_model
from tests.api.server_process import ServerProcess


def metric(url: str, prefix: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return 0.0


def test_disconnected_client_items_are_dropped(tmp_path: Path) -> None:
    write_model(tmp_path, "slow", weights="delay_ms=1500")
    server = ServerProcess(tmp_path / "server.log", "--model", "slow", "--model-dir", str(tmp_path),
                           "--max-batch-size", "1", "--no-warmup")
    try:
        server.wait_ready()
        texts = 'clipserve_items_embedded_total{modality="text",model="slow"}'
        before = metric(server.url, texts)
        with ThreadPoolExecutor(1) as pool:
            busy = pool.submit(httpx.post, f"{server.url}/embed", json={"inputs": [{"text": "first"}]}, timeout=60)
            while metric(server.url, 'clipserve_requests_in_flight{protocol="rest"}') < 1:
                time.sleep(0.02)
            with pytest.raises(httpx.ReadTimeout):  # queued behind "first"; the client gives up
                httpx.post(f"{server.url}/embed", json={"inputs": [{"text": "second"}]}, timeout=0.5)
            assert busy.result().status_code == 200
        deadline = time.monotonic() + 30
        while metric(server.url, 'clipserve_requests_total{protocol="rest",route="embed",status="499"}') < 1:
            assert time.monotonic() < deadline, server.log.read_text()
            time.sleep(0.05)
        assert metric(server.url, 'clipserve_dropped_items_total{modality="text",model="slow",reason="cancelled"}') == 1
        # One worker, one item per batch, first in first out: a "second" still queued or formed ahead
        # would be computed before "third".
        third = httpx.post(f"{server.url}/embed", json={"inputs": [{"text": "third"}]}, timeout=60)
        assert third.status_code == 200, third.text
        assert metric(server.url, texts) == before + 2  # "first" and "third": never "second"
    finally:
        server.stop()
