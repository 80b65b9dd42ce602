"""API keys on gRPC (a real grpc.aio server): any of the server's keys, as metadata ``x-api-key`` or
``authorization: Bearer``; one UNAUTHENTICATED for every refusal; health stays open."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.auth import DENIED_GRPC
from service.protocol.generated.clipserve.v1 import clipserve_pb2 as pb
from service.protocol.generated.clipserve.v1 import clipserve_pb2_grpc as pb_grpc
from tests.grpc.helpers import grpc_server, make_settings, write_model

PING = pb.EmbedRequest(items=[pb.Item(text="ping")])
KEYS = ("flag-key", "env-key-a", "env-key-b", "file-key-1", "file-key-2")


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    path.write_text("# clipserve API keys\n\nfile-key-1\nfile-key-2\n")
    return path


async def test_every_key_works_in_either_form(tmp_path: Path, key_file: Path) -> None:
    write_model(tmp_path, "fake")
    settings = make_settings(tmp_path, api_key="flag-key", api_keys="env-key-a,env-key-b", api_key_file=key_file)
    async with grpc_server(settings) as (_, handle), grpc.aio.insecure_channel(handle.address) as channel:
        stub = pb_grpc.ClipServiceStub(channel)
        for key in KEYS:
            for metadata in ((("x-api-key", key),), (("authorization", f"Bearer {key}"),),
                             (("authorization", f"bearer {key}"),)):
                reply = await stub.Embed(PING, metadata=metadata, timeout=5)
                assert reply.embeddings.rows == 1, metadata
        stream = stub.EmbedStream(iter([pb.EmbedStreamRequest(id="1", item=pb.Item(text="a"))]),
                                  metadata=(("authorization", "Bearer file-key-1"),), timeout=5)
        assert [r.id async for r in stream] == ["1"]


async def test_a_missing_or_wrong_key_is_one_unauthenticated(tmp_path: Path, key_file: Path) -> None:
    write_model(tmp_path, "fake")
    settings = make_settings(tmp_path, api_key="flag-key", api_key_file=key_file)
    async with grpc_server(settings) as (_, handle), grpc.aio.insecure_channel(handle.address) as channel:
        stub = pb_grpc.ClipServiceStub(channel)
        for metadata in ((), (("x-api-key", "wrong"),), (("authorization", "Bearer wrong"),),
                         (("authorization", "flag-key"),), (("authorization", "Basic ZmxhZy1rZXk6"),),
                         (("x-api-key", "flag-key,file-key-1"),)):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.Embed(PING, metadata=metadata, timeout=5)
            assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED, metadata
            assert raised.value.details() == DENIED_GRPC
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.ListModels(pb.ListModelsRequest(), metadata=metadata, timeout=5)
            assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        health = health_pb2_grpc.HealthStub(channel)  # probes carry no key
        status = (await health.Check(health_pb2.HealthCheckRequest(), timeout=5)).status
        assert status == health_pb2.HealthCheckResponse.SERVING


async def test_no_keys_no_check(tmp_path: Path) -> None:
    write_model(tmp_path, "fake")
    async with grpc_server(make_settings(tmp_path)) as (_, handle), \
            grpc.aio.insecure_channel(handle.address) as channel:
        reply = await pb_grpc.ClipServiceStub(channel).Embed(PING, timeout=5)
        assert reply.embeddings.rows == 1
