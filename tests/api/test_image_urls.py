"""Image URLs, fetched by the server, against a real HTTP image server on 127.0.0.1.

Two live servers (REST and gRPC on one engine each, fake model): ``allowed`` admits 127.0.0.1
(``image_url_allowed_hosts``), ``default`` has the default policy. Through ``allowed`` a URL's embedding
equals the same bytes sent inline, over native REST, the OpenAI route (official SDK), gRPC and the
Python client; redirects, size, time and content are checked. Through ``default`` the same URL, private,
link-local and IPv6 loopback addresses, a name that resolves to loopback and other schemes are refused
before any connection: the image server sees none. No traffic leaves loopback.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import openai
import pytest

from service.cli import main
from service.client import ClipClient, ImageUrl, RequestFailed
from service.protocol.errors import ErrorKind
from service.protocol.generated.clipserve.v1 import clipserve_pb2 as pb
from service.protocol.generated.clipserve.v1 import clipserve_pb2_grpc as pb_grpc
from service.protocol.wire import matrix_from_pb
from tests.api.helpers import b64, floats, photo, serve
from tests.api.helpers import make_settings as make_api_settings
from tests.api.image_server import ImageServer, image_server
from tests.grpc.helpers import LiveServer, make_settings, write_model

JPEG = photo(1, (64, 48), "JPEG")
PNG = photo(2, (40, 40), "PNG")
LIMIT = 200_000  # max_image_bytes of both servers: the test images are far below it
FAST = {"image_url_timeout_s": 1.0, "image_url_connect_timeout_s": 1.0, "max_image_bytes": LIMIT}


@pytest.fixture(scope="module")
def images() -> Iterator[ImageServer]:
    """The HTTP image server on 127.0.0.1."""
    with image_server({"a.jpg": JPEG, "b.png": PNG}) as server:
        yield server


@contextmanager
def live(tmp_path_factory: pytest.TempPathFactory, **settings: Any) -> Iterator[LiveServer]:
    """A live server on a fake model, with ``FAST`` and ``settings``."""
    repo: Path = tmp_path_factory.mktemp("models")
    write_model(repo, "fake")
    server = LiveServer(make_settings(repo, **{**FAST, **settings})).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def allowed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A live server that admits 127.0.0.1."""
    with live(tmp_path_factory, image_url_allowed_hosts="127.0.0.1") as server:
        yield server


@pytest.fixture(scope="module")
def default(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A live server with the default address policy."""
    with live(tmp_path_factory) as server:
        yield server


def embed(server: LiveServer, inputs: list[dict[str, str]], status: int = 200) -> Any:
    """POST /embed; the answer's body, after checking its status."""
    answer = httpx.post(f"{server.rest_url}/embed", json={"inputs": inputs}, timeout=30)
    assert answer.status_code == status, answer.text
    body = answer.json()
    return np.stack([floats(row["embedding"]) for row in body["data"]]) if status == 200 else body["error"]


def close(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape and float(np.max(np.abs(a - b))) <= 1e-6


def test_rest_url_embeddings_equal_the_same_bytes_inline(allowed: LiveServer, images: ImageServer) -> None:
    rows = embed(allowed, [{"image": images.url("/img/a.jpg")}, {"image": images.url("/img/b.png")},
                           {"image": b64(JPEG)}, {"image": b64(PNG)}])
    close(rows[:2], rows[2:])
    answer = httpx.post(f"{allowed.rest_url}/classify", timeout=30, json={
        "images": [images.url("/img/a.jpg"), b64(JPEG)], "labels": ["cat", "dog", "car"], "top_k": 3})
    first, second = answer.json()["results"]
    assert answer.status_code == 200 and first == second
    answer = httpx.post(f"{allowed.rest_url}/similarity", timeout=30, json={
        "images": [images.url("/img/b.png")], "texts": ["a", "b"]})
    inline = httpx.post(f"{allowed.rest_url}/similarity", timeout=30, json={"images": [b64(PNG)], "texts": ["a", "b"]})
    close(np.array(answer.json()["cosine"]), np.array(inline.json()["cosine"]))


def test_openai_sdk_url_embeddings_equal_the_same_bytes_inline(allowed: LiveServer, images: ImageServer) -> None:
    client = openai.OpenAI(base_url=f"{allowed.rest_url}/v1", api_key="x", max_retries=0)
    result = client.embeddings.create(model="fake", input=[images.url("/img/a.jpg")],
                                      extra_body={"modality": "image"}, encoding_format="float")
    close(np.array([result.data[0].embedding], dtype=np.float32), embed(allowed, [{"image": b64(JPEG)}]))


def test_grpc_url_embeddings_equal_the_same_bytes_inline(allowed: LiveServer, images: ImageServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{allowed.grpc_port}") as channel:
        stub = pb_grpc.ClipServiceStub(channel)
        answer = stub.Embed(pb.EmbedRequest(items=[pb.Item(image_url=images.url("/img/b.png")), pb.Item(image=PNG)]))
        rows = matrix_from_pb(answer.embeddings)
        close(rows[:1], rows[1:])
        ranked = stub.Classify(pb.ClassifyRequest(
            image_items=[pb.Item(image_url=images.url("/img/a.jpg")), pb.Item(image=JPEG)], labels=["x", "y"]))
        assert ranked.results[0] == ranked.results[1]
        with pytest.raises(grpc.RpcError) as caught:
            stub.Classify(pb.ClassifyRequest(image_items=[pb.Item(image=JPEG), pb.Item(image_url=images.url("/huge"))],
                                             labels=["x", "y"]))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert caught.value.details().startswith(f"image_items[1]: {images.url('/huge')}: the image is over the limit")
        with pytest.raises(grpc.RpcError) as caught:
            stub.Embed(pb.EmbedRequest(items=[pb.Item(image_url=images.url("/page"))]))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details().startswith(f"items[0]: {images.url('/page')}: not an image")


@pytest.mark.parametrize("scheme", ["rest", "grpc"])
def test_the_client_sends_urls_as_urls(allowed: LiveServer, images: ImageServer, scheme: str) -> None:
    url = allowed.rest_url if scheme == "rest" else allowed.grpc_url
    seen = len(images.paths)
    with ClipClient(url) as client:
        rows = client.embed_images([images.url("/img/a.jpg"), JPEG])
        close(rows[:1], rows[1:])
        mixed = client.embed([ImageUrl(images.url("/img/b.png")), PNG, "a caption"])
        close(mixed[:1], mixed[1:2])
        first, second = client.classify([images.url("/img/a.jpg"), JPEG], ["cat", "dog"])
        assert first == second
        with pytest.raises(RequestFailed) as caught:
            client.embed_images([images.url("/huge")])
        assert caught.value.kind == ErrorKind.TOO_LARGE
    assert images.paths[seen:].count("/img/a.jpg") == 2  # fetched by the server, once per call


def test_the_command_line_classifies_urls(
    allowed: LiveServer, images: ImageServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = images.url("/img/a.jpg")
    assert main(["client", "classify", url, "--labels", "cat,dog", "--url", allowed.grpc_url]) == 0
    table = capsys.readouterr().out.splitlines()
    with ClipClient(allowed.rest_url) as client:
        best = client.classify([JPEG], ["cat", "dog"])[0][0].label
    assert table[1].startswith(url) and table[1].split()[1] == best


def test_default_policy_refuses_before_connecting(default: LiveServer, images: ImageServer) -> None:
    """The allowed server's URL, private, link-local, IPv6 loopback, a loopback name, other schemes: all
    refused, and the image server accepts no connection at all."""
    port = images.server_address[1]
    before = images.connections
    cases = {
        images.url("/img/a.jpg"): "127.0.0.1 is a loopback address",
        f"http://10.1.2.3:{port}/a.jpg": "10.1.2.3 is a private address",
        "https://192.168.1.20/a.jpg": "192.168.1.20 is a private address",
        "http://169.254.169.254/latest/meta-data/": "169.254.169.254 is a link-local address",
        f"http://[::1]:{port}/img/a.jpg": "::1 is a loopback address",
        images.url("/img/a.jpg", host="localhost"): "localhost resolves to",
        images.url("/img/a.jpg", host="2130706433"): "2130706433 resolves to 127.0.0.1, a loopback address",
        images.url("/img/a.jpg", host="[::ffff:127.0.0.1]"): "::ffff:127.0.0.1 is a loopback address",
        "ftp://127.0.0.1/a.jpg": "unsupported scheme 'ftp': only http and https",
        "file:///etc/passwd": "unsupported scheme 'file'",
    }
    for url, reason in cases.items():
        error = embed(default, [{"text": "a"}, {"image": url}], status=422)
        assert error["type"] == "invalid_argument" and error["message"].startswith(f"inputs[1]: {url}: "), error
        assert reason in error["message"], error
    assert "refused" in embed(default, [{"image": images.url("/img/a.jpg", host="localhost")}], 422)["message"]
    assert images.connections == before  # nothing reached the image server
    metrics = httpx.get(f"{default.rest_url}/metrics", timeout=30).text
    assert 'clipserve_image_fetch_failures_total{reason="refused_address"} 9.0' in metrics
    assert 'clipserve_image_fetch_failures_total{reason="scheme"} 2.0' in metrics


def test_a_redirect_is_checked_again(allowed: LiveServer, images: ImageServer) -> None:
    ok = images.url("/redirect?to=" + images.url("/img/b.png"))
    close(embed(allowed, [{"image": ok}]), embed(allowed, [{"image": b64(PNG)}]))
    refused = images.url("/redirect?to=http://169.254.169.254/latest/meta-data/")
    error = embed(allowed, [{"image": refused}], status=422)
    assert "http://169.254.169.254/latest/meta-data/: refused: 169.254.169.254 is a link-local address" in error[
        "message"]
    error = embed(allowed, [{"image": images.url("/loop/0")}], status=422)
    assert error["message"] == f"inputs[0]: {images.url('/loop/0')}: too many redirects (more than 3, " \
                               "image_url_max_redirects)"
    assert "/loop/3" in images.paths and "/loop/4" not in images.paths


@pytest.mark.parametrize(("path", "status", "message"), [
    ("/huge", 413, f"the image is over the limit of {LIMIT} bytes (max_image_bytes); stopped reading"),
    ("/huge-declared", 413, f"the image has 67108864 bytes; the limit is {LIMIT} (max_image_bytes)"),
    ("/page", 422, "not an image: the server sent 38 bytes of text/html"),
    ("/missing", 422, "the server answered 404 Not Found"),
    ("/slow", 422, "timed out: no complete answer within 1 s (image_url_timeout_s)"),
])
def test_failures_are_4xx_naming_the_url(
    allowed: LiveServer, images: ImageServer, path: str, status: int, message: str
) -> None:
    url = images.url(path)
    error = embed(allowed, [{"image": url}], status=status)
    assert error["message"] == f"inputs[0]: {url}: {message}"
    close(embed(allowed, [{"image": images.url("/img/a.jpg")}]), embed(allowed, [{"image": b64(JPEG)}]))


def test_fetches_in_flight_are_bounded(tmp_path_factory: pytest.TempPathFactory) -> None:
    """With one fetch allowed at a time, a second request with a URL is refused (429, Retry-After) while
    the first waits on a slow origin; afterwards URLs are fetched again."""
    settings = {"image_url_allowed_hosts": "127.0.0.1", "image_url_max_in_flight": 1, "image_url_timeout_s": 30.0}
    with image_server({"a.jpg": JPEG}) as slow_images, live(tmp_path_factory, **settings) as server:
        first: dict[str, Any] = {}
        slow = [{"image": slow_images.url("/slow")}]
        thread = threading.Thread(target=lambda: first.update(error=embed(server, slow, status=422)))
        thread.start()
        assert slow_images.slow_started.wait(30)
        answer = httpx.post(f"{server.rest_url}/embed", timeout=30,
                            json={"inputs": [{"image": slow_images.url("/img/a.jpg")}]})
        assert answer.status_code == 429 and answer.headers["Retry-After"] == "1", answer.text
        assert "image_url_max_in_flight 1" in answer.json()["error"]["message"]
        slow_images.release.set()  # the slow answer ends short of its Content-Length: the first fails
        thread.join(30)
        assert "/img/a.jpg" not in slow_images.paths and first["error"]["type"] == "invalid_argument"
        close(embed(server, [{"image": slow_images.url("/img/a.jpg")}]), embed(server, [{"image": b64(JPEG)}]))


async def test_image_urls_off(tmp_path: Path, images: ImageServer) -> None:
    """``image_urls=false``: a URL is a 422 naming the setting, nothing is fetched, and the OpenAPI document
    no longer offers URLs."""
    write_model(tmp_path, "fake")
    seen = images.connections
    async with serve(make_api_settings(tmp_path, image_urls=False, image_url_allowed_hosts="127.0.0.1")) as client:
        answer = await client.post("/embed", json={"inputs": [{"text": "a"}, {"image": images.url("/img/a.jpg")}]})
        assert answer.status_code == 422
        assert answer.json()["error"]["message"] == ("inputs[1]: this server does not fetch image URLs "
                                                     "(image_urls is off); send the image itself")
        document = (await client.get("/openapi.json")).text
        assert '"format":"byte"' in document.replace(" ", "") and '"format":"uri"' not in document.replace(" ", "")
    assert images.connections == seen
