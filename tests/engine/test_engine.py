"""The engine core on fake models: ordering, the zero-shot cache, limits, deadlines, draining."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from service.engine import Engine, ImageItem, Item, TextItem
from service.errors import DeadlineExceeded, InvalidInput, LimitExceeded, NotFound, Unavailable
from service.metrics import Metrics
from tests.api.helpers import make_settings, photo, png_bomb, truncated_jpeg


def sample(engine: Engine, name: str, **labels: str) -> float:
    return engine.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_mixed_inputs_keep_their_order(engine: Engine) -> None:
    items: list[Item] = [TextItem("a"), ImageItem(photo(1)), TextItem("b"), ImageItem(photo(2)), ImageItem(photo(1))]
    result = await engine.embed(items)
    assert result.model == "fake" and result.embeddings.shape == (5, 32) and result.dimension == 32
    for i, item in enumerate(items):
        alone = (await engine.embed([item])).embeddings[0]
        np.testing.assert_array_equal(result.embeddings[i], alone)
    np.testing.assert_array_equal(result.embeddings[1], result.embeddings[4])  # same image, same row
    assert not np.array_equal(result.embeddings[0], result.embeddings[2])


async def test_repeated_labels_hit_the_cache_and_encode_no_text(engine: Engine) -> None:
    images, labels = [photo(3)], ["cat", "dog", "bird"]
    first = await engine.classify(images, labels=labels, templates=["a {}", "the {}"], top_k=3)
    texts_after_first = sample(engine, "clipserve_items_embedded_total", model="fake", modality="text")
    second = await engine.classify(images, labels=labels, templates=["a {}", "the {}"], top_k=3)
    assert sample(engine, "clipserve_items_embedded_total", model="fake", modality="text") == texts_after_first
    assert sample(engine, "clipserve_class_cache_hits_total", model="fake") == 1
    assert sample(engine, "clipserve_class_cache_misses_total", model="fake") == 1
    assert first.results == second.results
    await engine.classify(images, labels=labels, top_k=3)  # other templates: another entry
    assert sample(engine, "clipserve_class_cache_misses_total", model="fake") == 2


async def test_concurrent_requests_for_new_labels_share_one_computation(engine: Engine) -> None:
    labels = [f"class {i}" for i in range(20)]
    results = await asyncio.gather(*(engine.classify([photo(i)], labels=labels) for i in range(5)))
    assert sample(engine, "clipserve_class_cache_misses_total", model="fake") == 1
    assert sample(engine, "clipserve_class_cache_hits_total", model="fake") == 4
    assert sample(engine, "clipserve_items_embedded_total", model="fake", modality="text") == 20 + 1  # + start-up
    assert all(len(r.results[0]) == 5 for r in results)


async def test_classify_scores_are_softmax_of_scaled_cosine(engine: Engine) -> None:
    image, labels = photo(4), ["x", "y", "z"]
    ranked = (await engine.classify([image], labels=labels, templates=["{}"], top_k=3)).results[0]
    sim = await engine.similarity([ImageItem(image)], [TextItem(t) for t in labels])
    expected = dict(zip(labels, sim.probabilities[0], strict=True))
    for entry in ranked:
        assert entry.score == pytest.approx(float(expected[entry.label]), abs=1e-6)
    logits = (await engine.classify([image], labels=labels, templates=["{}"], logits=True)).results[0]
    cosine = dict(zip(labels, sim.cosine[0], strict=True))
    assert all(e.score == pytest.approx(100 * float(cosine[e.label]), abs=1e-4) for e in logits)


async def test_similarity_matrices(engine: Engine) -> None:
    left: list[Item] = [TextItem("a"), ImageItem(photo(5))]
    right: list[Item] = [TextItem("a"), TextItem("b"), ImageItem(photo(5))]
    result = await engine.similarity(left, right, model="other")
    assert result.model == "other" and result.cosine.shape == (2, 3)
    assert result.cosine[0, 0] == pytest.approx(1, abs=1e-5) and result.cosine[1, 2] == pytest.approx(1, abs=1e-5)
    np.testing.assert_allclose(result.probabilities.sum(axis=1), 1, rtol=1e-6)


async def test_limits_and_unknowns_raise_errors_naming_them(engine: Engine) -> None:
    cases = [
        (lambda: engine.embed([]), InvalidInput, "inputs: empty list"),
        (lambda: engine.embed([TextItem("a")] * 257), InvalidInput, "max_items_per_request"),
        (lambda: engine.embed([TextItem("x" * 2001)]), InvalidInput, "inputs[0]: text has 2001 characters"),
        (lambda: engine.embed([TextItem("ok"), ImageItem(b"nope")]), InvalidInput, "inputs[1]: not an image"),
        (lambda: engine.embed([ImageItem(truncated_jpeg())]), InvalidInput, "inputs[0]: cannot decode JPEG"),
        (lambda: engine.embed([ImageItem(png_bomb())]), LimitExceeded, "inputs[0]: image is 10000x10000"),
        (lambda: engine.embed([TextItem("a")], model="nope"), NotFound,
         "unknown model 'nope'; this server serves 'fake', 'other'"),
        (lambda: engine.embed([TextItem("a")], timeout_s=0), InvalidInput, "timeout must be positive"),
        (lambda: engine.classify([photo(1)], labels=[f"l{i}" for i in range(51)]), InvalidInput,
         "the limit is 50 (max_labels)"),
        (lambda: engine.classify([photo(1)], labels=["a"], top_k=0), InvalidInput, "top_k must be at least 1"),
        (lambda: engine.classify([photo(1)], label_set="nope"), NotFound, "unknown label set 'nope'"),
        (lambda: engine.classify([photo(1)]), InvalidInput, "give labels or a label_set"),
        (lambda: engine.classify([photo(1)], labels=["a"], templates=["{} ok", "bad"]), InvalidInput,
         "'bad' has no '{}'"),
        (lambda: engine.similarity([TextItem("a")], []), InvalidInput, "right: empty list"),
    ]
    for call, kind, words in cases:
        with pytest.raises(kind) as caught:
            await call()
        assert words in caught.value.message, caught.value.message
    assert sample(engine, "clipserve_requests_total", route="embed", protocol="rest", status="422") == 6
    assert sample(engine, "clipserve_requests_in_flight", protocol="rest") == 0
    assert (await engine.embed([TextItem("still fine")])).embeddings.shape == (1, 32)


async def test_label_set_and_models(engine: Engine) -> None:
    result = await engine.classify([photo(6)], label_set="cifar10", top_k=10)
    assert len(result.results[0]) == 10
    assert [m.name for m in engine.models()] == ["fake", "other"]


async def test_deadline_exceeded_on_a_slow_model(model_dir: Path) -> None:
    engine = Engine(make_settings(model_dir, model="slow", warmup=False), Metrics())
    await engine.start()
    try:
        with pytest.raises(DeadlineExceeded):
            await engine.embed([TextItem("late")], timeout_s=0.05, protocol="grpc")
        assert sample(engine, "clipserve_requests_total", route="embed", protocol="grpc", status="504") == 1
    finally:
        await engine.stop(0)


async def test_drain_refuses_new_calls_and_finishes_those_in_flight(model_dir: Path) -> None:
    engine = Engine(make_settings(model_dir, model="slow", warmup=False, max_batch_size=1), Metrics())
    await engine.start()
    assert engine.ready and sample(engine, "clipserve_ready") == 1
    calls = [asyncio.create_task(engine.embed([TextItem(f"t{i}")])) for i in range(3)]
    for _ in range(1000):  # until all three are in flight (each batch of the slow model takes long)
        if engine.in_flight == 3:
            break
        await asyncio.sleep(0.005)
    assert engine.in_flight == 3
    engine.begin_drain()
    assert not engine.ready and engine.draining and sample(engine, "clipserve_ready") == 0
    with pytest.raises(Unavailable, match="shutting down"):
        await engine.embed([TextItem("new")])
    assert await engine.wait_idle(30)
    assert all(c.result().embeddings.shape == (1, 32) for c in calls)
    await engine.stop(1)
    assert all(b.closed for s in engine._served for b in s.backends)  # type: ignore[attr-defined]
