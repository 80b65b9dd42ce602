"""Zero-shot helpers: bundled label sets, prompt-ensemble class embeddings, ranking.

The class-embedding cache is the engine's: tests/engine/test_zeroshot.py.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from service.clip.labelsets import get_label_set, label_set_names
from service.clip.zeroshot import (
    DEFAULT_TEMPLATES,
    class_embeddings,
    classify,
    prompts,
)
from service.errors import InvalidInput, NotFound
from tests.shared_data import SHARED

DIM = 16


class CountingEncoder:
    """A deterministic text 'model': each text maps to a fixed random vector (from its hash)."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            self.calls += 1
            self.texts.extend(texts)
        rows = [
            np.random.default_rng(int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")).normal(size=DIM)
            for t in texts
        ]
        return np.asarray(rows, dtype=np.float32) * 3.0  # not normalised: class_embeddings must normalise


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_bundled_label_sets_are_the_papers() -> None:
    assert label_set_names() == ["cifar10", "cifar100", "imagenet"]
    sizes = {name: (len(get_label_set(name).classes), len(get_label_set(name).templates)) for name in label_set_names()}
    assert sizes == {"imagenet": (1000, 80), "cifar10": (10, 18), "cifar100": (100, 18)}
    assert get_label_set("cifar10").classes[:3] == ("airplane", "automobile", "bird")
    for name in label_set_names():
        classes, templates = get_label_set(name)  # unpacks like a pair
        assert all("{}" in t for t in templates) and all(c.strip() for c in classes)


def test_imagenet_set_equals_the_shared_reference() -> None:
    reference = SHARED / "reference" / "imagenet-prompts.json"
    if not reference.is_file():
        pytest.skip(f"shared reference prompts not found at {reference}")
    data = json.loads(Path(reference).read_text())
    assert get_label_set("imagenet") == (tuple(data["classes"]), tuple(data["templates"]))


def test_unknown_label_set_names_the_known_ones() -> None:
    with pytest.raises(NotFound, match=r"unknown label set 'imagenet21k'.*cifar10, cifar100, imagenet"):
        get_label_set("imagenet21k")


def test_class_embeddings_are_the_prompt_ensemble() -> None:
    encoder = CountingEncoder()
    labels, templates = ["cat", "dog", "sea {lion}"], ["a photo of a {}.", "art of the {}", "{}, a {}"]
    got = class_embeddings(labels, templates, encoder)
    assert encoder.texts == prompts(labels, templates)
    assert encoder.texts[-1] == "sea {lion}, a sea {lion}"  # plain replacement: other braces are kept
    for i, label in enumerate(labels):
        rows = unit(encoder([t.replace("{}", label) for t in templates]))
        np.testing.assert_allclose(got[i], unit(rows.mean(axis=0)), atol=1e-6)
    assert got.dtype == np.float32 and got.shape == (3, DIM)


def test_default_template_and_chunking() -> None:
    encoder = CountingEncoder()
    got = class_embeddings([f"class {i}" for i in range(10)], None, encoder, chunk_size=4)
    assert encoder.texts == [DEFAULT_TEMPLATES[0].format(f"class {i}") for i in range(10)]
    assert encoder.calls == 3  # 4 + 4 + 2 prompts
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-6)


def test_bad_labels_and_templates_are_refused() -> None:
    with pytest.raises(InvalidInput, match="no labels"):
        class_embeddings([], None, CountingEncoder())
    with pytest.raises(InvalidInput, match="'a photo' has no"):
        class_embeddings(["cat"], ["a photo"], CountingEncoder())


def test_classify_ranks_by_softmax_of_scaled_cosine() -> None:
    rng = np.random.default_rng(1)
    images, classes = unit(rng.normal(size=(4, DIM))), unit(rng.normal(size=(7, DIM)))
    indices, probs = classify(images, classes, logit_scale=100.0, top_k=7)
    logits = 100.0 * images @ classes.T
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_array_equal(indices, np.argsort(-expected, axis=1))
    np.testing.assert_allclose(probs, np.take_along_axis(expected, indices, 1), rtol=1e-5)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    top, raw = classify(images, classes, logit_scale=100.0, top_k=3, logits=True)
    np.testing.assert_array_equal(top, indices[:, :3])
    np.testing.assert_allclose(raw, np.take_along_axis(logits, top, 1), rtol=1e-5)
    assert classify(images, classes, 100.0, top_k=50)[0].shape == (4, 7)  # k capped at the class count
    with pytest.raises(InvalidInput, match="top_k"):
        classify(images, classes, 100.0, top_k=0)


def test_demo_model_classifies_cifar10_zero_shot() -> None:
    """End to end with the bundled demo model: the cifar10 label set ranks real CIFAR-10 test images."""
    import tarfile

    from service.clip.model_config import read_config
    from service.clip.preprocess import ImagePreprocessor, PreprocessConfig
    from service.clip.tokenizer import Tokenizer, pad_batch
    from service.config import REPO_MODELS_DIR
    from service.runtime.torch_backend import TorchBackend
    from tests.shared_data import require_cifar10

    entry = REPO_MODELS_DIR / "clipserve-demo"
    if not (entry / "config.json").is_file():
        pytest.skip(f"demo model not found at {entry}")
    classes, templates = get_label_set("cifar10")
    per_class = 10
    datas, truth = [], []
    with tarfile.open(require_cifar10() / "test.tar") as tar:
        for member in tar:
            parts = member.name.split("/")
            if member.isfile() and len(parts) == 3 and truth.count(classes.index(parts[1])) < per_class:
                datas.append(tar.extractfile(member).read())  # type: ignore[union-attr]
                truth.append(classes.index(parts[1]))
            if len(truth) == per_class * len(classes):
                break
    backend = TorchBackend(read_config(entry))
    tokenizer = Tokenizer(backend.info.context_length)
    pre = ImagePreprocessor(PreprocessConfig.from_model_config(backend.config), max_pixels=1_000_000)
    class_emb = class_embeddings(
        classes, templates, lambda texts: backend.encode_texts(pad_batch([tokenizer.encode(t) for t in texts]))
    )
    top, probs = classify(backend.encode_images(pre.stack([pre(d) for d in datas])), class_emb,
                          backend.info.logit_scale, top_k=3)
    accuracy = float(np.mean(top[:, 0] == np.asarray(truth)))
    assert len(truth) == per_class * len(classes)
    assert accuracy >= 0.5, f"top-1 accuracy {accuracy:.2f} on {len(truth)} images (chance 0.10)"
    assert np.all(np.diff(probs, axis=1) <= 0)
