"""Bad input gets a clear 4xx (never a 500, never a hang) and the server keeps serving correctly."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import numpy as np
import pytest

from tests.api.helpers import animated_gif, b64, floats, one_pixel, photo, png16, png_bomb, truncated_jpeg

GOOD_TEXT = {"text": "a good request"}

# (name, method, path, request kwargs, status, words the message must contain)
BAD: list[tuple[str, str, str, dict[str, Any], int, str]] = [
    ("malformed json", "post", "/embed", {"content": b'{"inputs": [', "headers": {"content-type": "application/json"}},
     400, "malformed JSON body"),
    ("not json at all", "post", "/embed", {"content": b"inputs=1", "headers": {"content-type": "text/plain"}},
     422, "must be a JSON object"),
    ("body is a list", "post", "/embed", {"json": [1, 2]}, 422, "must be a JSON object"),
    ("inputs not a list", "post", "/embed", {"json": {"inputs": "nope"}}, 422, "inputs: Input should be a valid list"),
    ("text not a string", "post", "/embed", {"json": {"inputs": [{"text": 5}]}}, 422, "inputs[0].text"),
    ("unknown field", "post", "/embed", {"json": {"inputs": [GOOD_TEXT], "colour": 1}}, 422, "colour"),
    ("text and image", "post", "/embed", {"json": {"inputs": [{"text": "a", "image": b64(photo(1))}]}}, 422,
     "inputs[0]: give exactly one of 'text' or 'image'"),
    ("invalid base64", "post", "/embed", {"json": {"inputs": [GOOD_TEXT, {"image": "not base64!"}]}}, 422,
     "inputs[1].image: invalid base64"),
    ("image not a string", "post", "/classify", {"json": {"images": [5], "labels": ["a"]}}, 422,
     "images[0]: expected a base64 string"),
    ("not an image", "post", "/embed", {"json": {"inputs": [GOOD_TEXT, {"image": b64(b"hello, world")}]}}, 422,
     "inputs[1]: not an image"),
    ("empty image", "post", "/embed", {"json": {"inputs": [{"image": ""}]}}, 422, "inputs[0]: image is empty"),
    ("truncated jpeg", "post", "/embed", {"json": {"inputs": [{"image": b64(truncated_jpeg())}]}}, 422,
     "inputs[0]: cannot decode JPEG image"),
    ("png bomb", "post", "/embed", {"json": {"inputs": [{"image": b64(png_bomb())}]}}, 413,
     "inputs[0]: image is 10000x10000 = 100000000 pixels, over the limit"),
    ("bomb in classify", "post", "/classify", {"json": {"images": [b64(photo(2)), b64(png_bomb())], "labels": ["a"]}},
     413, "images[1]: image is 10000x10000"),
    ("empty inputs", "post", "/embed", {"json": {"inputs": []}}, 422, "inputs: empty list"),
    ("empty images", "post", "/classify", {"json": {"images": [], "labels": ["a"]}}, 422, "images: empty list"),
    ("empty labels", "post", "/classify", {"json": {"images": [b64(photo(3))], "labels": []}}, 422, "labels: empty"),
    ("too many items", "post", "/embed", {"json": {"inputs": [GOOD_TEXT] * 257}}, 422,
     "inputs: 257 items; the limit is 256 (max_items_per_request)"),
    ("text too long", "post", "/embed", {"json": {"inputs": [GOOD_TEXT, {"text": "x" * 2001}]}}, 422,
     "inputs[1]: text has 2001 characters; the limit is 2000 (max_text_chars)"),
    ("label too long", "post", "/classify", {"json": {"images": [b64(photo(3))], "labels": ["a", "y" * 2001]}}, 422,
     "labels[1]: 2001 characters; the limit is 2000 (max_text_chars)"),
    ("unknown label set", "post", "/classify", {"json": {"images": [b64(photo(3))], "label_set": "birds"}}, 404,
     "unknown label set 'birds'; known label sets: cifar10"),
    ("unknown model", "post", "/embed", {"json": {"model": "gpt", "inputs": [GOOD_TEXT]}}, 404,
     "unknown model 'gpt'; this server serves 'fake', 'fake-b'"),
    ("labels and label set", "post", "/classify",
     {"json": {"images": [b64(photo(3))], "labels": ["a"], "label_set": "cifar10"}}, 422, "not both"),
    ("template without slot", "post", "/classify",
     {"json": {"images": [b64(photo(3))], "labels": ["a"], "templates": ["a photo"]}}, 422, "'{}'"),
    ("top_k zero", "post", "/classify", {"json": {"images": [b64(photo(3))], "labels": ["a"], "top_k": 0}}, 422,
     "top_k must be at least 1"),
    ("top_k not a number", "post", "/classify", {"json": {"images": [b64(photo(3))], "labels": ["a"], "top_k": "x"}},
     422, "top_k"),
    ("similarity both forms", "post", "/similarity",
     {"json": {"texts": ["a"], "left": [GOOD_TEXT], "right": [GOOD_TEXT]}}, 422, "not both"),
    ("similarity one side", "post", "/similarity", {"json": {"left": [GOOD_TEXT]}}, 422,
     "give both 'left' and 'right'"),
    ("similarity empty side", "post", "/similarity", {"json": {"left": [GOOD_TEXT], "right": []}}, 422,
     "right: empty list"),
    ("upload with no files", "post", "/embed/upload", {"data": {"encoding": "float"}}, 422, "files"),
    ("upload not an image", "post", "/embed/upload", {"files": [("files", ("a.txt", b"plain text", "text/plain"))]},
     422, "inputs[0]: not an image"),
    ("wrong method", "get", "/embed", {}, 405, "method GET is not allowed on /embed"),
    ("unknown path", "get", "/nowhere", {}, 404, "no such endpoint: GET /nowhere"),
]


async def good_embedding(client: httpx.AsyncClient) -> np.ndarray:
    r = await client.post("/embed", json={"inputs": [GOOD_TEXT, {"image": b64(photo(42))}]})
    assert r.status_code == 200, r.text
    return np.stack([floats(d["embedding"]) for d in r.json()["data"]])


async def test_each_bad_input_gets_a_clear_4xx_and_the_server_still_serves(client: httpx.AsyncClient) -> None:
    before = await good_embedding(client)
    for name, method, path, kwargs, status, words in BAD:
        r = await getattr(client, method)(path, **kwargs)
        assert r.status_code == status, f"{name}: {r.status_code} {r.text}"
        error = r.json()["error"]
        assert words in error["message"], f"{name}: {error['message']!r}"
        assert error["type"] and r.headers["x-request-id"]
    np.testing.assert_array_equal(await good_embedding(client), before)
    assert (await client.get("/readyz")).status_code == 200


@pytest.mark.parametrize("make", [one_pixel, animated_gif, png16], ids=["1x1", "animated-gif", "16-bit-png"])
async def test_edge_images_are_embedded(client: httpx.AsyncClient, make: Any) -> None:
    r = await client.post("/embed", json={"inputs": [{"image": b64(make())}]})
    assert r.status_code == 200, r.text
    row = floats(r.json()["data"][0]["embedding"])
    assert row.shape == (32,) and abs(float(np.linalg.norm(row)) - 1) < 1e-5


async def test_empty_string_and_odd_text_are_embedded(client: httpx.AsyncClient) -> None:
    body = rb'{"inputs": [{"text": ""}, {"text": " "}, {"text": "\ud800 \u0000 \u200b"}]}'  # a lone surrogate
    r = await client.post("/embed", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    rows = [floats(d["embedding"]) for d in r.json()["data"]]
    np.testing.assert_array_equal(rows[0], rows[1])  # both clean to the empty text
    assert rows[2].shape == (32,)


async def test_bad_and_edge_requests_never_break_the_batch_of_good_ones(client: httpx.AsyncClient) -> None:
    goods = [{"inputs": [{"text": f"good {i}"}, {"image": b64(photo(100 + i))}]} for i in range(12)]
    expected = []
    for body in goods:
        r = await client.post("/embed", json=body)
        expected.append(np.stack([floats(d["embedding"]) for d in r.json()["data"]]))
    bads = [
        {"inputs": [{"text": "ok"}, {"image": b64(truncated_jpeg())}]},
        {"inputs": [{"image": b64(b"GIF89a nonsense")}]},
        {"inputs": [{"image": b64(png_bomb())}]},
        {"inputs": [{"text": "z" * 5000}]},
    ]
    edges = [{"inputs": [{"image": b64(make())}]} for make in (one_pixel, animated_gif, png16)] + [
        {"inputs": [{"text": ""}]}
    ]
    bodies = [item for trio in zip(goods, bads * 3, edges * 3, strict=True) for item in trio]
    responses = await asyncio.gather(*(client.post("/embed", json=b) for b in bodies))
    for body, r in zip(bodies, responses, strict=True):
        if body in goods:
            assert r.status_code == 200, r.text
            got = np.stack([floats(d["embedding"]) for d in r.json()["data"]])
            np.testing.assert_array_equal(got, expected[goods.index(body)])
        elif body in bads:
            assert 400 <= r.status_code < 500, r.text
        else:
            assert r.status_code == 200, r.text
