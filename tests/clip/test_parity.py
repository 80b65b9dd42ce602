"""clipserve's embeddings equal open_clip's for ViT-B-32 and RN50 (seeded random weights).

clipserve's path: ``ImagePreprocessor`` / ``Tokenizer`` + ``TorchBackend`` (loader, trimmed text
tower). The reference: ``open_clip.create_model_and_transforms`` (after ``torch.manual_seed``), its
preprocessing transform and tokenizer, ``encode_image`` / ``encode_text`` normalised. Images: real
photos from the shared folder, and PNG, palette, grayscale, RGBA and CMYK versions made from them.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from service.clip.loading import build_model
from service.clip.model_config import ModelConfig
from service.clip.preprocess import ImagePreprocessor, PreprocessConfig
from service.clip.text import encode_text_trimmed
from service.clip.tokenizer import Tokenizer, pad_batch
from service.config import REPO_MODELS_DIR
from service.runtime.torch_backend import TorchBackend
from tests.shared_data import require_photos

TOLERANCE = 1e-5
SEED = 0
LABELS = ["cat", "aquarium fish", "sweet pepper", "great white shark", "Komodo dragon", "x"]
TEMPLATES = ["a photo of a {}.", "a blurry photo of the {}.", "itap of a {}.", "{}", "a low contrast photo of a {}."]
TEXTS = [t.replace("{}", label) for label in LABELS for t in TEMPLATES] + [
    "",
    "A man riding a horse on the beach at sunset, photographed with a 35mm lens. " * 6,  # > 77 tokens: cut
    "ünïcödé, emoji 🐱 and 日本語のテキスト",
    "  lots   of   spaces\tand\nnewlines  ",
    "numbers 1234567890 and punctuation !?.,;:'\"()",
]


def _variants(data: bytes) -> dict[str, bytes]:
    """The photo re-encoded as PNG, palette PNG, grayscale PNG, RGBA PNG and CMYK JPEG."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    made = {
        "png": (image, "PNG"),
        "palette": (image.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
        "gray": (image.convert("L"), "PNG"),
        "rgba": (image.convert("RGBA"), "PNG"),  # opaque: RGBA handling agrees with the reference's convert
        "cmyk": (image.convert("CMYK"), "JPEG"),
    }
    out = {}
    for name, (img, fmt) in made.items():
        buf = io.BytesIO()
        img.save(buf, fmt)
        out[name] = buf.getvalue()
    return out


@pytest.fixture(scope="module")
def images() -> dict[str, bytes]:
    photos = require_photos()
    chosen = photos[:: max(1, len(photos) // 4)][:4]
    out = {p.stem: p.read_bytes() for p in chosen}
    for photo in chosen[:2]:
        out.update({f"{photo.stem}.{k}": v for k, v in _variants(photo.read_bytes()).items()})
    return out


@pytest.fixture(scope="module", params=["ViT-B-32", "RN50"])
def models(request: pytest.FixtureRequest) -> Iterator[tuple[Any, Any, Any, TorchBackend]]:
    """(reference model, its transform, its tokenizer, clipserve's backend) for one architecture."""
    arch = request.param
    torch.manual_seed(SEED)
    reference, _, transform = open_clip.create_model_and_transforms(arch)
    reference.eval()
    backend = TorchBackend(ModelConfig(name=arch, architecture=arch, seed=SEED))
    yield reference, transform, open_clip.get_tokenizer(arch), backend
    backend.close()


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max())


def test_image_embeddings_match_open_clip(models: Any, images: dict[str, bytes]) -> None:
    reference, transform, _, backend = models
    with torch.inference_mode():
        batch = torch.stack([transform(Image.open(io.BytesIO(data))) for data in images.values()])
        expected = reference.encode_image(batch, normalize=True).numpy()
    pre = ImagePreprocessor(PreprocessConfig.from_model_config(backend.config), max_pixels=50_000_000)
    ours = backend.encode_images(pre.stack([pre(data) for data in images.values()]))
    per_image = np.abs(ours - expected).max(axis=1)
    worst = {name: float(d) for name, d in zip(images, per_image, strict=True) if d > TOLERANCE}
    assert not worst, f"images over {TOLERANCE}: {worst}"
    assert ours.dtype == np.float32 and np.allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-6)


def test_text_embeddings_match_open_clip(models: Any) -> None:
    """Trimmed batches of several longest lengths, and (N, 77) input, all equal the full-77 reference."""
    reference, _, tokenize, backend = models
    with torch.inference_mode():
        expected = reference.encode_text(tokenize(TEXTS), normalize=True).numpy()
    tokenizer = Tokenizer(backend.info.context_length)
    token_lists = [tokenizer.encode(t) for t in TEXTS]
    short = [i for i, ids in enumerate(token_lists) if len(ids) <= 8]
    batches = {
        "all, padded to the longest": (list(range(len(TEXTS))), pad_batch(token_lists)),
        "short texts only": (short, pad_batch([token_lists[i] for i in short])),
        "one text": ([3], pad_batch([token_lists[3]])),
        "padded to 77": ([0, 1, 2], tokenizer(TEXTS[:3])),
    }
    for name, (rows, tokens) in batches.items():
        diff = _max_diff(backend.encode_texts(tokens), expected[rows])
        assert diff <= TOLERANCE, f"{name}: max abs difference {diff}"


def _trimmed_vs_full(model: Any, tokens: torch.Tensor) -> float:
    """Worst normalised difference of trimmed batches (of several longest lengths) from encode_text."""
    lengths = (tokens != 0).sum(dim=1)
    everything = torch.arange(len(tokens))
    batches = (everything, everything[lengths <= 8], everything[:3])
    with torch.inference_mode():
        full = model.encode_text(tokens, normalize=True)
        diffs = [
            float((torch.nn.functional.normalize(encode_text_trimmed(model, tokens[rows]), dim=-1) - full[rows])
                  .abs().max())
            for rows in batches
        ]
    return max(diffs)


def test_trimmed_text_tower_equals_encode_text_demo_arch() -> None:
    arch = REPO_MODELS_DIR / "clipserve-demo" / "arch.json"
    if not arch.is_file():
        pytest.skip(f"demo model architecture not found at {arch}")
    model = build_model(json.loads(arch.read_text()), seed=SEED).eval()
    assert _trimmed_vs_full(model, open_clip.tokenize(TEXTS)) <= TOLERANCE
