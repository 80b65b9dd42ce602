"""Every configured limit, with small values: the request over it gets 413/422/429/504 naming it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from service.clip.text_tokenizers import clip_tokenizer
from tests.api.helpers import b64, encode, make_settings, photo, serve, write_model


@pytest.fixture
async def small(model_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        model_dir, max_items_per_request=3, max_text_chars=10, max_image_bytes=3000, max_image_pixels=1000,
        max_body_bytes=20_000, max_labels=3, api_key="sesame",
    )
    async with serve(settings) as client:
        client.headers["X-API-Key"] = "sesame"
        yield client


def small_image() -> str:
    return b64(photo(1, (20, 20)))  # 400 pixels, ~1.3 kB


async def expect(response: httpx.Response, status: int, words: str) -> None:
    assert response.status_code == status, response.text
    assert words in response.json()["error"]["message"], response.text


async def test_items_per_request(small: httpx.AsyncClient) -> None:
    assert (await small.post("/embed", json={"inputs": [{"text": "a"}] * 3})).status_code == 200
    await expect(await small.post("/embed", json={"inputs": [{"text": "a"}] * 4}), 422,
                 "inputs: 4 items; the limit is 3 (max_items_per_request)")
    await expect(await small.post("/similarity", json={"texts": ["a"] * 4}), 422, "the limit is 3")


async def test_text_length(small: httpx.AsyncClient) -> None:
    assert (await small.post("/embed", json={"inputs": [{"text": "x" * 10}]})).status_code == 200
    await expect(await small.post("/embed", json={"inputs": [{"text": "x" * 11}]}), 422,
                 "inputs[0]: text has 11 characters; the limit is 10 (max_text_chars)")


async def test_image_bytes(small: httpx.AsyncClient) -> None:
    assert (await small.post("/embed", json={"inputs": [{"image": small_image()}]})).status_code == 200
    big = photo(2, (30, 30))  # 900 pixels, within the pixel limit; padded past the byte limit
    big += b"\x00" * (3001 - len(big))
    await expect(await small.post("/embed", json={"inputs": [{"image": b64(big)}]}), 413,
                 "inputs[0]: image is 3001 bytes, over the limit of 3000 (max_image_bytes)")


async def test_image_pixels(small: httpx.AsyncClient) -> None:
    await expect(await small.post("/embed", json={"inputs": [{"image": b64(encode(Image.new("RGB", (40, 30))))}]}), 413,
                 "inputs[0]: image is 40x30 = 1200 pixels, over the limit of 1000 (max_image_pixels)")


async def test_body_bytes_by_content_length_and_by_stream(small: httpx.AsyncClient) -> None:
    body = b'{"inputs": [{"text": "' + b"a" * 25_000 + b'"}]}'
    await expect(await small.post("/embed", content=body, headers={"content-type": "application/json"}), 413,
                 "request body is larger than the limit of 20000 bytes (max_body_bytes)")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while streaming
        for i in range(0, len(body), 4096):
            yield body[i : i + 4096]

    streamed = await small.post("/embed", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in streamed.request.headers
    await expect(streamed, 413, "(max_body_bytes)")
    assert (await small.post("/embed", json={"inputs": [{"text": "still ok"}]})).status_code == 200


async def test_labels_and_top_k(small: httpx.AsyncClient) -> None:
    image = small_image()
    ok = await small.post("/classify", json={"images": [image], "labels": ["a", "b", "c"], "top_k": 10})
    assert ok.status_code == 200 and len(ok.json()["results"][0]["labels"]) == 3  # top_k capped at the labels
    await expect(await small.post("/classify", json={"images": [image], "labels": list("abcd")}), 422,
                 "labels: 4 given; the limit is 3 (max_labels)")
    await expect(await small.post("/classify", json={"images": [image], "labels": ["a"], "templates": ["{}"] * 4}),
                 422, "templates: 4 given; the limit is 3 (max_labels)")


async def test_api_key(small: httpx.AsyncClient) -> None:
    for headers in ({"X-API-Key": ""}, {"X-API-Key": "wrong"}):
        await expect(await small.post("/embed", json={"inputs": [{"text": "a"}]}, headers=headers), 401,
                     "missing or wrong API key")
    del small.headers["X-API-Key"]
    for headers in ({}, {"x-api-key": "wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": "sesame"}):
        await expect(await small.get("/models", headers=headers), 401,  # header names are case-insensitive
                     "missing or wrong API key: send it as header X-API-Key: <key> or Authorization: Bearer <key>")
    assert (await small.get("/models", headers={"x-api-key": "sesame"})).status_code == 200
    for path in ("/healthz", "/readyz", "/metrics"):  # probes and scrapes need no key
        assert (await small.get(path)).status_code == 200, path


async def test_request_timeout_gives_504(tmp_path: Path) -> None:
    write_model(tmp_path, "slow", weights="delay_ms=400")
    async with serve(make_settings(tmp_path, model="slow", request_timeout_s=0.1, warmup=False)) as client:
        r = await client.post("/embed", json={"inputs": [{"text": "too slow"}]})
        await expect(r, 504, "timed out")
        assert r.json()["error"]["type"] == "timeout"


async def test_full_queue_gives_429_with_retry_after(tmp_path: Path) -> None:
    write_model(tmp_path, "slow", weights="delay_ms=300")
    settings = make_settings(tmp_path, model="slow", max_batch_size=1, queue_size=2, warmup=False)
    async with serve(settings) as client:
        bodies = [{"inputs": [{"text": f"t{i}"}]} for i in range(8)]
        responses = await asyncio.gather(*(client.post("/embed", json=b) for b in bodies))
        statuses = [r.status_code for r in responses]
        assert set(statuses) == {200, 429}, statuses
        refused = next(r for r in responses if r.status_code == 429)
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"]["type"] == "overloaded" and "over capacity" in refused.json()["error"]["message"]


async def test_a_crashing_batch_fails_only_its_request(tmp_path: Path) -> None:
    marker = clip_tokenizer(77).encode("explode")[1]
    write_model(tmp_path, "crashy", weights=f"fail_token={marker},delay_ms=20")
    async with serve(make_settings(tmp_path, model="crashy", warmup=False)) as client:
        bodies = [{"inputs": [{"text": "explode" if i == 3 else f"fine {i}"}]} for i in range(8)]
        responses = await asyncio.gather(*(client.post("/embed", json=b) for b in bodies))
        assert [r.status_code for r in responses] == [200, 200, 200, 500, 200, 200, 200, 200]
        assert responses[3].json()["error"]["type"] == "internal"
        assert (await client.post("/embed", json={"inputs": [{"text": "after"}]})).status_code == 200
