"""Request ids on every log line a request causes, REST and gRPC, batcher lines included.

One real server process (``python -m service serve --log-json --log-level DEBUG``) on a fake model
serves a REST call, gRPC calls (unary, streaming, failing, without an id) and is then stopped, so
that every line it wrote is in its log; the test reads those JSON lines.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from service.errors import Overloaded
from service.grpc.request_id import request_id_from
from service.grpc.status import trailing_metadata
from service.protocol.generated.clipserve.v1 import clipserve_pb2 as pb
from service.protocol.generated.clipserve.v1 import clipserve_pb2_grpc as pb_grpc
from service.protocol.headers import ERROR_KIND_KEY, REQUEST_ID_HEADER, RETRY_AFTER_KEY
from tests.api.helpers import write_model
from tests.api.server_process import ServerProcess, free_port

REST_ID, GRPC_ID, STREAM_ID, FAILING_ID = "rest-abc", "grpc-xyz", "stream-123", "grpc-bad"


@dataclass
class Served:
    """What the calls got back, and the JSON lines the server logged while serving them."""

    rest_header: str | None
    grpc_trailers: dict[str, str]
    stream_trailers: dict[str, str]
    stream_ids: list[str]
    failing_code: grpc.StatusCode
    failing_trailers: dict[str, str]
    anonymous_trailers: dict[str, str]
    lines: list[dict[str, Any]]


def trailers(call: Any) -> dict[str, str]:
    """A finished call's trailing metadata as a dict."""
    return dict(call.trailing_metadata() or ())


def json_lines(log: Path) -> list[dict[str, Any]]:
    """The server's JSON log lines (anything else it printed is skipped)."""
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Serve the calls, stop the server (every line is written then), parse its log."""
    models = tmp_path_factory.mktemp("models")
    write_model(models, "fake")
    grpc_port = free_port()
    server = ServerProcess(models / "server.log", "--model", "fake", "--model-dir", str(models), "--no-warmup",
                           "--grpc-port", str(grpc_port), "--log-json", "--log-level", "DEBUG")
    try:
        server.wait_ready()
        rest = httpx.post(f"{server.url}/embed", json={"inputs": [{"text": "a dog"}]},
                          headers={REQUEST_ID_HEADER: REST_ID}, timeout=30)
        assert rest.status_code == 200, rest.text
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = pb_grpc.ClipServiceStub(channel)
            reply, call = stub.Embed.with_call(pb.EmbedRequest(items=[pb.Item(text="a cat")]),
                                               metadata=((REQUEST_ID_HEADER, GRPC_ID),), timeout=30)
            assert reply.model == "fake"
            stream = stub.EmbedStream(
                iter([pb.EmbedStreamRequest(id=str(i), item=pb.Item(text=f"item {i}")) for i in range(3)]),
                metadata=((REQUEST_ID_HEADER, STREAM_ID),), timeout=30,
            )
            stream_ids = sorted(response.id for response in stream)
            with pytest.raises(grpc.RpcError) as failing:
                stub.Embed(pb.EmbedRequest(items=[]), metadata=((REQUEST_ID_HEADER, FAILING_ID),), timeout=30)
            _, anonymous = stub.ListModels.with_call(pb.ListModelsRequest(), timeout=30)
            result = Served(
                rest_header=rest.headers.get(REQUEST_ID_HEADER), grpc_trailers=trailers(call),
                stream_trailers=trailers(stream), stream_ids=stream_ids, failing_code=failing.value.code(),
                failing_trailers=trailers(failing.value), anonymous_trailers=trailers(anonymous), lines=[],
            )
    finally:
        server.stop()
    result.lines = json_lines(server.log)
    yield result


def lines_of(served: Served, request_id: str) -> list[dict[str, Any]]:
    """The lines that carry ``request_id``: as their ``request_id`` or in their ``request_ids``."""
    return [line for line in served.lines
            if line["request_id"] == request_id or request_id in line.get("request_ids", ())]


def access_lines(served: Served, request_id: str) -> list[dict[str, Any]]:
    """The access lines (and any engine lines) of one request."""
    return [line for line in lines_of(served, request_id)
            if line["logger"] == "clipserve.access" or line["logger"].startswith("service.engine")]


def batcher_lines(served: Served, request_id: str) -> list[dict[str, Any]]:
    """The batcher's lines about one request's batches; the id is in their message too."""
    found = [line for line in lines_of(served, request_id) if line["logger"].startswith("service.batching")]
    for line in found:
        assert request_id in line["message"], line
    return found


def test_rest_request_id_reaches_its_access_and_batcher_lines(served: Served) -> None:
    assert served.rest_header == REST_ID
    [access] = access_lines(served, REST_ID)
    assert (access["logger"], access["path"], access["status"]) == ("clipserve.access", "/embed", 200)
    assert batcher_lines(served, REST_ID)


def test_grpc_request_id_is_echoed_in_trailers_and_reaches_its_lines(served: Served) -> None:
    assert served.grpc_trailers[REQUEST_ID_HEADER] == GRPC_ID
    [access] = access_lines(served, GRPC_ID)
    assert (access["logger"], access["rpc"], access["status"]) == ("clipserve.access", "Embed", "OK")
    assert batcher_lines(served, GRPC_ID)


def test_embed_stream_carries_its_request_id_to_every_item(served: Served) -> None:
    assert served.stream_ids == ["0", "1", "2"]
    assert served.stream_trailers[REQUEST_ID_HEADER] == STREAM_ID
    [access] = access_lines(served, STREAM_ID)
    assert (access["rpc"], access["status"]) == ("EmbedStream", "OK")
    items = sum(int(line["message"].split()[2]) for line in batcher_lines(served, STREAM_ID)
                if line["message"].startswith("batch of "))
    assert items == 3  # every item's batch lists the stream's id


def test_a_failing_grpc_call_echoes_its_id_beside_the_error_kind(served: Served) -> None:
    assert served.failing_code == grpc.StatusCode.INVALID_ARGUMENT
    assert served.failing_trailers[REQUEST_ID_HEADER] == FAILING_ID
    assert served.failing_trailers[ERROR_KIND_KEY] == "invalid_argument"
    [access] = access_lines(served, FAILING_ID)
    assert (access["rpc"], access["status"]) == ("Embed", "INVALID_ARGUMENT")


def test_a_grpc_call_without_an_id_gets_a_new_one(served: Served) -> None:
    generated = served.anonymous_trailers[REQUEST_ID_HEADER]
    assert len(generated) == 32 and generated not in (REST_ID, GRPC_ID, STREAM_ID, FAILING_ID)
    [access] = access_lines(served, generated)
    assert (access["rpc"], access["status"]) == ("ListModels", "OK")


def test_lines_outside_requests_carry_no_id(served: Served) -> None:
    startup = [line for line in served.lines if line["message"].startswith("ready: serving")]
    assert startup and all(line["request_id"] == "-" for line in startup)


def test_request_id_from_metadata_keeps_usable_ids_only() -> None:
    assert request_id_from(((REQUEST_ID_HEADER, "abc-1"), ("other", "x"))) == "abc-1"
    for metadata in ((), None, ((REQUEST_ID_HEADER, "x" * 129),), ((REQUEST_ID_HEADER, "caf\u00e9"),)):
        assert len(request_id_from(metadata)) == 32


def test_error_trailers_keep_those_set_before() -> None:
    error = Overloaded("queue full", retry_after_s=2)
    assert trailing_metadata(error, ((REQUEST_ID_HEADER, "rid"),)) == (
        (REQUEST_ID_HEADER, "rid"), (ERROR_KIND_KEY, "overloaded"), (RETRY_AFTER_KEY, "2"),
    )
    assert trailing_metadata(error, None) == trailing_metadata(error)
