"""Every REST endpoint, in-process with the lifespan running, on the deterministic fake backend."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from tests.api.helpers import FAKE_DIM, b64, floats, photo


async def embed_one(client: httpx.AsyncClient, item: dict[str, str], **extra: object) -> np.ndarray:
    r = await client.post("/embed", json={"inputs": [item], **extra})
    assert r.status_code == 200, r.text
    return floats(r.json()["data"][0]["embedding"])


async def test_embed_mixed_keeps_input_order(client: httpx.AsyncClient) -> None:
    items = [{"text": "a dog"}, {"image": b64(photo(1))}, {"text": "a cat"}, {"image": b64(photo(2))}]
    r = await client.post("/embed", json={"inputs": items})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "fake" and body["dimension"] == FAKE_DIM
    assert [d["index"] for d in body["data"]] == [0, 1, 2, 3]
    rows = np.stack([floats(d["embedding"]) for d in body["data"]])
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-5)
    alone = [await embed_one(client, item) for item in items]
    np.testing.assert_array_equal(rows, np.stack(alone))
    assert len({r.tobytes() for r in rows}) == 4  # four different inputs, four different rows


async def test_embed_base64_encoding_is_little_endian_float32(client: httpx.AsyncClient) -> None:
    item = {"text": "compact please"}
    packed = await embed_one(client, item, encoding="base64")
    plain = await embed_one(client, item)
    assert packed.dtype == np.dtype("<f4") and packed.shape == (FAKE_DIM,)
    np.testing.assert_array_equal(packed, plain)


async def test_embed_upload_multipart_matches_json(client: httpx.AsyncClient) -> None:
    images = [photo(3), photo(4, fmt="JPEG")]
    files = [("files", (f"img{i}", data, "application/octet-stream")) for i, data in enumerate(images)]
    r = await client.post("/embed/upload", files=files, data={"encoding": "base64"})
    assert r.status_code == 200, r.text
    uploaded = [floats(d["embedding"]) for d in r.json()["data"]]
    for data, row in zip(images, uploaded, strict=True):
        np.testing.assert_array_equal(row, await embed_one(client, {"image": b64(data)}))


async def test_embed_with_a_named_model(client: httpx.AsyncClient) -> None:
    r = await client.post("/embed", json={"model": "fake-b", "inputs": [{"text": "x"}]})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "fake-b" and r.json()["dimension"] == 16


async def test_classify_ranks_labels_with_probabilities(client: httpx.AsyncClient) -> None:
    labels = ["cat", "dog", "car", "tree"]
    r = await client.post("/classify", json={"images": [b64(photo(5)), b64(photo(6))], "labels": labels, "top_k": 3})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 2
    for result in results:
        scores = [s["score"] for s in result["labels"]]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True)
        assert {s["label"] for s in result["labels"]} <= set(labels)
        assert 0 < sum(scores) <= 1 + 1e-6
    everything = await client.post("/classify", json={"images": [b64(photo(5))], "labels": labels, "top_k": 99})
    assert sum(s["score"] for s in everything.json()["results"][0]["labels"]) == pytest.approx(1, abs=1e-5)


async def test_classify_agrees_with_similarity_and_logits(client: httpx.AsyncClient) -> None:
    image, labels = b64(photo(7)), ["red", "green", "blue"]
    body = {"images": [image], "labels": labels, "templates": ["{}"], "top_k": 3}
    probs = (await client.post("/classify", json=body)).json()["results"][0]["labels"]
    logits = (await client.post("/classify", json={**body, "return_logits": True})).json()["results"][0]["labels"]
    sim = (await client.post("/similarity", json={"images": [image], "texts": labels})).json()
    by_label = dict(zip(labels, sim["probabilities"][0], strict=True))
    for entry in probs:
        assert entry["score"] == pytest.approx(by_label[entry["label"]], abs=1e-5)
    cosine = dict(zip(labels, sim["cosine"][0], strict=True))
    for entry in logits:
        assert entry["score"] == pytest.approx(100.0 * cosine[entry["label"]], abs=1e-3)


async def test_classify_with_a_label_set(client: httpx.AsyncClient) -> None:
    r = await client.post("/classify", json={"images": [b64(photo(8))], "label_set": "cifar10", "top_k": 10})
    assert r.status_code == 200, r.text
    names = {s["label"] for s in r.json()["results"][0]["labels"]}
    assert len(names) == 10 and "airplane" in names


async def test_similarity_forms(client: httpx.AsyncClient) -> None:
    images, texts = [b64(photo(9)), b64(photo(10))], ["one", "two", "three"]
    simple = (await client.post("/similarity", json={"images": images, "texts": texts})).json()
    assert np.asarray(simple["cosine"]).shape == (2, 3)
    np.testing.assert_allclose(np.asarray(simple["probabilities"]).sum(axis=1), 1.0, rtol=1e-5)
    general = await client.post("/similarity", json={
        "left": [{"image": i} for i in images], "right": [{"text": t} for t in texts]
    })
    assert general.status_code == 200, general.text
    np.testing.assert_allclose(general.json()["cosine"], simple["cosine"], atol=1e-6)
    self_sim = (await client.post("/similarity", json={"texts": texts})).json()
    np.testing.assert_allclose(np.diag(self_sim["cosine"]), 1.0, rtol=1e-5)
    mixed_body = {"left": [{"text": "a"}], "right": [{"image": images[0]}, {"text": "a"}]}
    mixed = await client.post("/similarity", json=mixed_body)
    assert mixed.json()["cosine"][0][1] == pytest.approx(1.0, abs=1e-5)


async def test_models_lists_both_with_the_default_first(client: httpx.AsyncClient) -> None:
    r = await client.get("/models")
    assert r.status_code == 200
    cards = r.json()["data"]
    assert [c["id"] for c in cards] == ["fake", "fake-b"]
    assert cards[0]["default"] and not cards[1]["default"]
    assert cards[0]["backend"] == "fake" and cards[0]["image_size"] == 32 and cards[1]["dimension"] == 16
    assert cards[0]["backend_reason"] == "the model's config says backend fake"
    assert len(cards[0]["fingerprint"]) == 16 and cards[0]["fingerprint"] != cards[1]["fingerprint"]


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}


async def test_metrics_count_requests_and_work(client: httpx.AsyncClient) -> None:
    await client.post("/embed", json={"inputs": [{"text": "count me"}, {"image": b64(photo(11))}]})
    await client.post("/embed", json={"inputs": []})
    text = (await client.get("/metrics")).text
    assert 'clipserve_requests_total{protocol="rest",route="embed",status="200"}' in text
    assert 'clipserve_requests_total{protocol="rest",route="embed",status="422"}' in text
    for name in ("clipserve_preprocess_duration_seconds_count", "clipserve_inference_duration_seconds_count",
                 "clipserve_queue_wait_duration_seconds_count", "clipserve_batch_size_bucket",
                 'clipserve_items_embedded_total{modality="image",model="fake"}',
                 "clipserve_model_load_duration_seconds",
                 "clipserve_model_warmup_duration_seconds", "clipserve_ready 1.0", "clipserve_requests_in_flight"):
        assert name in text, name


async def test_request_id_is_echoed_or_generated(client: httpx.AsyncClient) -> None:
    given = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = await client.post("/embed", json={"inputs": "nope"})
    assert len(made.headers["x-request-id"]) == 32


async def test_concurrent_requests_share_batches_and_get_their_own_rows(client: httpx.AsyncClient) -> None:
    texts = [f"text number {i}" for i in range(24)]
    responses = await asyncio.gather(*(client.post("/embed", json={"inputs": [{"text": t}]}) for t in texts))
    rows = [floats(r.json()["data"][0]["embedding"]) for r in responses]
    for text, row in zip(texts, rows, strict=True):
        np.testing.assert_array_equal(row, await embed_one(client, {"text": text}))
    sizes = (await client.get("/metrics")).text
    assert 'clipserve_batch_size_count{modality="text",model="fake"}' in sizes


async def test_openapi_schema_has_examples(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    for path in ("/embed", "/embed/upload", "/classify", "/similarity", "/models", "/healthz", "/readyz", "/metrics"):
        assert path in schema["paths"], path
    for name in ("EmbedRequest", "ClassifyRequest", "SimilarityRequest", "EmbedResponse", "ErrorResponse"):
        assert schema["components"]["schemas"][name].get("examples"), name
