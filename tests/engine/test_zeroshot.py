"""Zero-shot class embeddings in the engine: the LRU cache, the prompt limits, shared and cancelled work."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from service.clip.labelsets import get_label_set, label_set_names
from service.clip.zeroshot import DEFAULT_TEMPLATES, class_embeddings
from service.engine import Engine, TextItem
from service.engine.zeroshot import prompt_batches, prompt_chars
from service.errors import LimitExceeded
from service.metrics import Metrics
from tests.api.helpers import make_settings, photo


def sample(engine: Engine, name: str, **labels: str) -> float:
    return engine.metrics.registry.get_sample_value(name, labels) or 0.0


def texts_embedded(engine: Engine, model: str = "fake") -> float:
    return sample(engine, "clipserve_items_embedded_total", model=model, modality="text")


async def started(model_dir: Path, **overrides: object) -> Engine:
    engine = Engine(make_settings(model_dir, **overrides), Metrics())
    await engine.start()
    return engine


@pytest.fixture
async def small_cache(model_dir: Path) -> AsyncIterator[Engine]:
    """``fake`` and ``other`` with a class cache of two entries."""
    engine = await started(model_dir, model="fake,other", class_cache_size=2)
    yield engine
    await engine.stop(1.0)


async def test_cache_encodes_each_label_list_once(small_cache: Engine) -> None:
    engine, image = small_cache, [photo(1)]
    served = engine._model("fake")
    first = await engine.class_embeddings.get(served, ["cat", "dog"], list(DEFAULT_TEMPLATES), _far())
    texts_after_first = texts_embedded(engine)
    await engine.classify(image, labels=["cat", "dog"])  # templates None: the default, the same entry
    assert texts_embedded(engine) == texts_after_first  # no text encoded on a hit
    again = await engine.class_embeddings.get(served, ["cat", "dog"], list(DEFAULT_TEMPLATES), _far())
    assert again is first and not first.flags.writeable
    assert sample(engine, "clipserve_class_cache_hits_total", model="fake") == 2
    assert sample(engine, "clipserve_class_cache_misses_total", model="fake") == 1
    await engine.classify(image, labels=["cat", "dog"], model="other")  # another model: another entry
    await engine.classify(image, labels=["cat"])  # evicts the least recently used (fake cat/dog)
    before = texts_embedded(engine)
    await engine.classify(image, labels=["cat", "dog"])
    assert texts_embedded(engine) == before + 2  # computed again: it had been evicted


async def test_cache_size_zero_stores_nothing(model_dir: Path) -> None:
    engine = await started(model_dir, class_cache_size=0)
    try:
        before = texts_embedded(engine)
        await engine.classify([photo(1)], labels=["cat"])
        await engine.classify([photo(1)], labels=["cat"])
        assert texts_embedded(engine) == before + 2
        assert sample(engine, "clipserve_class_cache_misses_total", model="fake") == 2
    finally:
        await engine.stop(1.0)


async def test_class_matrix_equals_the_prompt_ensemble_reference(engine: Engine) -> None:
    labels, templates = [f"label {i}" for i in range(11)], ["a {}", "the {} here", "{}!"]
    served = engine._model("fake")
    got = await engine.class_embeddings.get(served, labels, templates, _far())

    prompts = [t.replace("{}", label) for label in labels for t in templates]
    rows = dict(zip(prompts, (await engine.embed([TextItem(p) for p in prompts])).embeddings, strict=True))

    def encode(texts: list[str]) -> np.ndarray:
        return np.stack([rows[t] for t in texts])

    np.testing.assert_allclose(got, class_embeddings(labels, templates, encode), atol=1e-6)


def test_prompt_batches_and_chars_match_the_prompts() -> None:
    labels, templates = ["cat", "big dog", "x"], ["a {}", "{} and {}", "plain"]
    everything = [t.replace("{}", label) for label in labels for t in templates]
    batches = list(prompt_batches(labels, templates, 4))
    assert [len(texts) for _, texts in batches] == [4, 4, 1]
    assert [t for _, texts in batches for t in texts] == everything
    assert [i for label_at, _ in batches for i in label_at] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert prompt_chars(labels, templates) == sum(len(p) for p in everything)


def test_bundled_label_sets_fit_the_default_limits(engine: Engine) -> None:
    for name in label_set_names():
        found = get_label_set(name)
        names, templates = engine.class_embeddings.resolve(None, None, name)
        assert (names, templates) == (list(found.classes), list(found.templates))


async def test_labels_times_templates_is_refused_naming_the_limit(engine: Engine) -> None:
    labels = [f"l{i}" for i in range(50)]
    templates = [f"{{}} {i}" for i in range(50)]
    engine.settings.max_prompts = 2000  # 50 x 50 = 2500
    with pytest.raises(LimitExceeded, match=r"50 labels x 50 templates = 2500 prompts.*max_prompts"):
        await engine.classify([photo(1)], labels=labels, templates=templates)
    engine.settings.max_prompt_chars = 100
    with pytest.raises(LimitExceeded, match="max_prompt_chars"):
        await engine.classify([photo(1)], labels=labels[:10], templates=templates[:10])
    assert texts_embedded(engine) == 1  # start-up only: nothing was encoded for refused requests


async def test_shared_computation_is_cancelled_when_every_waiter_leaves(model_dir: Path) -> None:
    engine = await started(model_dir, model="slow", max_batch_size=2)  # 300 ms per batch of 2 prompts
    try:
        labels = [f"class {i}" for i in range(40)]
        clients = [asyncio.create_task(engine.classify([photo(i)], labels=labels)) for i in range(2)]
        served = engine._model("slow")
        deadline = time.monotonic() + 30
        while not engine.class_embeddings.pending or served.texts.in_flight == 0:
            assert time.monotonic() < deadline, "the computation never submitted prompts"
            await asyncio.sleep(0.01)  # polls a state: the computation has started and submitted prompts
        jobs = engine.class_embeddings.pending
        assert len(jobs) == 1  # two requests, one computation
        assert sample(engine, "clipserve_class_cache_misses_total", model="slow") == 1
        clients[0].cancel()
        await asyncio.gather(clients[0], return_exceptions=True)
        assert not jobs[0].done()  # one waiter left: the work goes on
        clients[1].cancel()
        await asyncio.gather(*clients, *jobs, return_exceptions=True)
        assert jobs[0].cancelled() and engine.class_embeddings.pending == []
        assert served.texts.in_flight == 0  # its submitted prompts left the batcher
    finally:
        await engine.stop(1.0)


def _far() -> float:
    return time.monotonic() + 60
