"""REST and gRPC on one engine (the app's lifespan starts both) give identical embeddings."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import grpc
import httpx
import numpy as np
import pytest

from service.protocol.generated.clipserve.v1 import clipserve_pb2 as pb
from service.protocol.generated.clipserve.v1 import clipserve_pb2_grpc as pb_grpc
from service.protocol.wire import matrix_from_pb
from tests.grpc.helpers import LiveServer, encoded_image, make_settings, write_model
from tests.shared_data import require_photos


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The whole app on loopback: REST and gRPC sharing one engine."""
    repo = tmp_path_factory.mktemp("repo")
    write_model(repo, "fake")
    server = LiveServer(make_settings(repo)).start()
    yield server
    server.stop()


def _inputs(kind: str) -> list[str | bytes]:
    if kind == "photos":
        images = [p.read_bytes() for p in require_photos()[:4]]
    else:
        images = [encoded_image(i, fmt="JPEG") for i in range(4)]
    return ["a photo of a dog", images[0], "un chat", *images[1:], ""]


def _rest(live: LiveServer, inputs: list[str | bytes], encoding: str) -> np.ndarray:
    body = {
        "inputs": [{"text": x} if isinstance(x, str) else {"image": base64.b64encode(x).decode()} for x in inputs],
        "encoding": encoding,
    }
    response = httpx.post(f"{live.rest_url}/embed", json=body, timeout=30)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    if encoding == "base64":
        return np.stack([np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in data])
    return np.asarray([d["embedding"] for d in data], dtype=np.float32)


def _grpc(live: LiveServer, inputs: list[str | bytes]) -> np.ndarray:
    items = [pb.Item(text=x) if isinstance(x, str) else pb.Item(image=x) for x in inputs]
    with grpc.insecure_channel(f"127.0.0.1:{live.grpc_port}") as channel:
        response = pb_grpc.ClipServiceStub(channel).Embed(pb.EmbedRequest(items=items), timeout=30)
    return matrix_from_pb(response.embeddings)


@pytest.mark.parametrize("kind", ["synthetic", "photos"])
def test_rest_and_grpc_embeddings_are_identical(live: LiveServer, kind: str) -> None:
    inputs = _inputs(kind)
    over_grpc = _grpc(live, inputs)
    assert over_grpc.shape == (len(inputs), 32)
    np.testing.assert_array_equal(_rest(live, inputs, "base64"), over_grpc)
    np.testing.assert_array_equal(_rest(live, inputs, "float"), over_grpc)


def test_both_protocols_are_counted_on_the_shared_engine(live: LiveServer) -> None:
    _grpc(live, ["count me"])
    _rest(live, ["count me"], "base64")
    metrics = httpx.get(f"{live.rest_url}/metrics", timeout=10).text
    assert 'route="embed"' in metrics
    assert 'protocol="grpc"' in metrics and 'protocol="rest"' in metrics
