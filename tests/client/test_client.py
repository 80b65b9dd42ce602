"""ClipClient and AsyncClipClient against a real server, over REST and gRPC."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from service.client import AsyncClipClient, ClipClient, RequestFailed
from service.protocol.errors import ErrorKind
from tests.grpc.helpers import DIM, LiveServer, encoded_image
from tests.shared_data import PHOTOS

TEXTS = [f"text number {i}" for i in range(150)]


def _image_files(folder: Path, n: int) -> list[Path]:
    """Real photos when the shared data is there, else synthetic JPEG files."""
    photos = sorted(PHOTOS.glob("*.JPEG"))[:n] if PHOTOS.is_dir() else []
    if len(photos) == n:
        return photos
    files = []
    for i in range(n):
        files.append(folder / f"img{i:02d}.jpg")
        files[-1].write_bytes(encoded_image(i, fmt="JPEG"))
    return files


def test_rest_and_grpc_clients_agree_and_chunking_keeps_order(live: LiveServer) -> None:
    results = {}
    for name, url in (("rest", live.rest_url), ("grpc", live.grpc_url)):
        with ClipClient(url, chunk_size=16, concurrency=4) as chunked, ClipClient(url, chunk_size=256) as whole:
            results[name] = chunked.embed_texts(TEXTS)
            np.testing.assert_array_equal(results[name], whole.embed_texts(TEXTS))
    assert results["rest"].shape == (len(TEXTS), DIM)
    np.testing.assert_array_equal(results["rest"], results["grpc"])
    assert len({row.tobytes() for row in results["rest"]}) == len(TEXTS)


async def test_async_client_matches_the_blocking_one(url: str) -> None:
    with ClipClient(url) as client:
        expected = client.embed_texts(TEXTS)
    async with AsyncClipClient(url, chunk_size=10, concurrency=3) as client:
        np.testing.assert_array_equal(await client.embed_texts(TEXTS), expected)
        models = await client.models()
    assert models[0].name == "fake" and models[0].dimension == DIM


def test_embed_images_from_paths_or_bytes(url: str, tmp_path: Path) -> None:
    files = _image_files(tmp_path, 6)
    with ClipClient(url, chunk_size=4) as client:
        from_paths = client.embed_images(files)
        from_strings = client.embed_images([str(f) for f in files])
        from_bytes = client.embed_images([f.read_bytes() for f in files])
        mixed = client.embed([TEXTS[0], files[0].read_bytes()])
    assert from_paths.shape == (6, DIM)
    np.testing.assert_array_equal(from_paths, from_bytes)
    np.testing.assert_array_equal(from_paths, from_strings)
    np.testing.assert_array_equal(mixed[1], from_paths[0])


async def test_classify_and_similarity(url: str, tmp_path: Path) -> None:
    files = _image_files(tmp_path, 5)
    async with AsyncClipClient(url, chunk_size=2) as client:
        ranked = await client.classify(files, ["cat", "dog", "car"], top_k=2)
        cifar = await client.classify(files[:1], label_set="cifar10", top_k=3)
        sim = await client.similarity(TEXTS[:7], TEXTS[7:10])
    async with AsyncClipClient(url, chunk_size=64) as unchunked:
        whole = await unchunked.similarity(TEXTS[:7], TEXTS[7:10])
    assert len(ranked) == 5 and all(len(r) == 2 and r[0].score >= r[1].score for r in ranked)
    assert len(cifar[0]) == 3
    assert sim.cosine.shape == (7, 3)
    np.testing.assert_allclose(sim.probabilities.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(sim.cosine, whole.cosine, atol=1e-6)  # matmul of other shapes: rounding only
    with pytest.raises(ValueError, match="labels or label_set"):
        await unchunked.classify(files, ["a"], label_set="cifar10")


def test_bad_input_raises_with_the_servers_kind_and_is_not_retried(url: str, caplog: pytest.LogCaptureFixture) -> None:
    with ClipClient(url) as client, caplog.at_level("INFO", logger="service.client.retry"):
        with pytest.raises(RequestFailed) as raised:
            client.embed_images([b"not an image at all"])
        with pytest.raises(RequestFailed) as unknown:
            client.embed_texts(["x"], model="no-such-model")
    field = "items[0]" if url.startswith("grpc") else "inputs[0]"  # each protocol names its own field
    assert raised.value.kind == ErrorKind.INVALID and field in raised.value.message
    assert raised.value.status in (422, "INVALID_ARGUMENT")
    assert unknown.value.kind == ErrorKind.NOT_FOUND and "no-such-model" in unknown.value.message
    assert "retrying" not in caplog.text


def test_grpc_embed_stream_matches_ids(live: LiveServer) -> None:
    from service.client.grpc import GrpcTransport

    transport = GrpcTransport(f"127.0.0.1:{live.grpc_port}")
    try:
        items = [(f"row-{i}", TEXTS[i % len(TEXTS)] + f" #{i}") for i in range(300)]
        got = dict(transport.embed_stream(iter(items), timeout_s=60))
        expected = transport.embed([text for _, text in items[:64]], None, 30)
    finally:
        transport.close()
    assert set(got) == {item_id for item_id, _ in items}
    np.testing.assert_array_equal(np.stack([got[f"row-{i}"] for i in range(64)]), expected)


def test_client_does_not_import_torch() -> None:
    code = (
        "import sys, service.client, service.client.grpc, service.client.rest, service.client.cli; "
        "bad = [m for m in ('torch', 'open_clip', 'service.engine') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
