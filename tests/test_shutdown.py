"""Graceful shutdown of the real server process: SIGTERM drains, then the process exits 0."""

from __future__ import annotations

import json
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.api.helpers import write_model
from tests.api.server_process import ServerProcess

IN_FLIGHT = 5


def in_flight(url: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith('clipserve_requests_in_flight{protocol="rest"}'):
            return float(line.split()[-1])
    return 0.0


def test_sigterm_unready_first_then_in_flight_requests_finish_and_exit_0(tmp_path: Path) -> None:
    # Each batch of the slow fake model takes 0.7 s and holds one item: 5 requests keep it busy ~3.5 s.
    write_model(tmp_path, "slow", weights="delay_ms=700")
    server = ServerProcess(tmp_path / "server.log", "--model", "slow", "--model-dir", str(tmp_path),
                           "--max-batch-size", "1", "--no-warmup", "--drain-timeout-s", "120", "--log-json")
    try:
        server.wait_ready()
        with ThreadPoolExecutor(IN_FLIGHT) as pool:
            calls = [
                pool.submit(httpx.post, f"{server.url}/embed", json={"inputs": [{"text": f"t{i}"}]}, timeout=120)
                for i in range(IN_FLIGHT)
            ]
            while in_flight(server.url) < IN_FLIGHT:  # every request accepted and waiting on the model
                time.sleep(0.05)
            server.proc.send_signal(signal.SIGTERM)
            while (ready := httpx.get(f"{server.url}/readyz", timeout=5)).status_code == 200:
                time.sleep(0.02)
            pending_when_unready = sum(not c.done() for c in calls)
            late = httpx.post(f"{server.url}/embed", json={"inputs": [{"text": "late"}]}, timeout=30)
            responses = [c.result() for c in calls]
        assert ready.status_code == 503 and ready.json() == {"status": "draining"}
        assert pending_when_unready > 0, "readiness turned false only after the requests finished"
        assert late.status_code == 503 and late.json()["error"]["type"] == "unavailable"
        assert int(late.headers["retry-after"]) >= 1
        assert [r.status_code for r in responses] == [200] * IN_FLIGHT, [r.text for r in responses]
        assert all(len(r.json()["data"][0]["embedding"]) == 32 for r in responses)
        assert server.proc.wait(timeout=120) == 0, server.log.read_text()
        logs = [json.loads(line) for line in server.log.read_text().splitlines() if line.strip()]  # all JSON
        served = [e for e in logs if e["logger"] == "clipserve.access" and e["route"] == "embed"]
        assert sorted(e["status"] for e in served) == [200] * IN_FLIGHT + [503]
        assert len({e["request_id"] for e in served}) == IN_FLIGHT + 1
    finally:
        server.stop()


def test_grpc_alone_with_rest_off_serves_and_drains_on_sigterm(tmp_path: Path) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from service.measure.serving import free_port
    from service.protocol.generated.clipserve.v1 import clipserve_pb2 as pb
    from service.protocol.generated.clipserve.v1 import clipserve_pb2_grpc as pb_grpc

    write_model(tmp_path, "slow", weights="delay_ms=700")
    grpc_port = free_port()
    server = ServerProcess(tmp_path / "server.log", "--model", "slow", "--model-dir", str(tmp_path),
                           "--port", "0", "--grpc-port", str(grpc_port), "--max-batch-size", "1",
                           "--no-warmup", "--drain-timeout-s", "120", "--log-json")
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    try:
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 120
        while True:  # polls for the state "serving"; the process must not have died
            assert server.proc.poll() is None and time.monotonic() < deadline, server.log.read_text()
            try:
                if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    break
            except grpc.RpcError:
                time.sleep(0.1)
        stub = pb_grpc.ClipServiceStub(channel)
        calls = [stub.Embed.future(pb.EmbedRequest(items=[pb.Item(text=f"t{i}")]), timeout=120)
                 for i in range(IN_FLIGHT)]
        calls[0].result()  # one answered (0.7 s per call): the others have long reached the engine
        server.proc.send_signal(signal.SIGTERM)
        while health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == 1:
            assert time.monotonic() < deadline + 60, "health never left SERVING after SIGTERM"
            time.sleep(0.02)
        pending_when_unready = sum(not c.done() for c in calls)
        late_trailers: dict[str, str] = {}
        try:
            stub.Embed(pb.EmbedRequest(items=[pb.Item(text="late")]), timeout=30)
            late = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            late = exc.code()
            late_trailers = dict(exc.trailing_metadata() or ())
        answers = [c.result() for c in calls]
        assert pending_when_unready > 0, "readiness turned false only after the calls finished"
        assert late == grpc.StatusCode.UNAVAILABLE and float(late_trailers["retry-after"]) > 0
        assert [len(a.embeddings.data) for a in answers] == [32 * 4] * IN_FLIGHT
        assert server.proc.wait(timeout=120) == 0, server.log.read_text()
        logs = [json.loads(line) for line in server.log.read_text().splitlines() if line.strip()]
        assert not any(e["logger"].startswith("uvicorn") for e in logs)  # REST never started
    finally:
        channel.close()
        server.stop()
