"""Health, reflection, API key, TLS and the grpc_port switch of the gRPC server."""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from service.engine import Engine
from service.grpc.server import GrpcServer, start_grpc
from service.metrics import Metrics
from service.protocol.generated.clipserve.v1 import clipserve_pb2 as pb
from service.protocol.generated.clipserve.v1 import clipserve_pb2_grpc as pb_grpc
from tests.grpc.helpers import grpc_server, make_settings, write_model

PING = pb.EmbedRequest(items=[pb.Item(text="ping")])


async def test_health_is_serving_when_ready(server: tuple[Engine, GrpcServer]) -> None:
    async with grpc.aio.insecure_channel(server[1].address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "clipserve.v1.ClipService"):
            response = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert response.status == health_pb2.HealthCheckResponse.SERVING
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()


async def test_reflection_lists_the_services_and_describes_clipservice(server: tuple[Engine, GrpcServer]) -> None:
    async with grpc.aio.insecure_channel(server[1].address) as channel:
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="clipserve.v1.ClipService"),
        ]
        responses = [r async for r in reflection.ServerReflectionInfo(iter(requests))]
    services = {s.name for s in responses[0].list_services_response.service}
    assert {"clipserve.v1.ClipService", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= services
    files = responses[1].file_descriptor_response.file_descriptor_proto
    assert files and b"EmbedStream" in files[0]


async def test_api_key_is_required_except_for_health(tmp_path: Path) -> None:
    write_model(tmp_path, "fake")
    settings = make_settings(tmp_path, api_key="s3cret")
    async with grpc_server(settings) as (_, handle), grpc.aio.insecure_channel(handle.address) as channel:
        stub = pb_grpc.ClipServiceStub(channel)
        for metadata in ((), (("x-api-key", "wrong"),)):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.Embed(PING, metadata=metadata, timeout=5)
            assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "x-api-key: <key> or authorization: Bearer <key>" in (raised.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await anext(aiter(stub.EmbedStream(iter([pb.EmbedStreamRequest(id="1", item=pb.Item(text="a"))]))))
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        ok = await stub.Embed(PING, metadata=(("x-api-key", "s3cret"),), timeout=5)
        assert ok.embeddings.rows == 1
        health = health_pb2_grpc.HealthStub(channel)
        status = (await health.Check(health_pb2.HealthCheckRequest())).status
        assert status == health_pb2.HealthCheckResponse.SERVING


def _self_signed(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


async def test_tls_serves_to_a_client_that_trusts_the_certificate(tmp_path: Path) -> None:
    try:
        cert, key = _self_signed(tmp_path)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"openssl could not make a test certificate: {exc}")
    write_model(tmp_path, "fake")
    async with grpc_server(make_settings(tmp_path, grpc_tls_cert=cert, grpc_tls_key=key)) as (_, handle):
        assert handle.tls
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        async with grpc.aio.secure_channel(handle.address, credentials) as channel:
            assert (await pb_grpc.ClipServiceStub(channel).Embed(PING, timeout=10)).embeddings.rows == 1
        async with grpc.aio.insecure_channel(handle.address) as plain:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await pb_grpc.ClipServiceStub(plain).Embed(PING, timeout=5)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_grpc_port_zero_turns_grpc_off_and_half_tls_is_refused(tmp_path: Path) -> None:
    write_model(tmp_path, "fake")
    engine = Engine(make_settings(tmp_path), Metrics())
    assert await start_grpc(engine, make_settings(tmp_path, grpc_port=0)) is None
    with pytest.raises(ValueError, match="grpc_tls_key"):
        await start_grpc(engine, make_settings(tmp_path, grpc_tls_cert=tmp_path / "c.pem"), port=0)
