"""SigLIP, SigLIP 2 and MobileCLIP 2 served through the real server on loopback, against open_clip.

Seeded random weights (ViT-B-16-SigLIP from a checkpoint whose logit scale and bias are set so that
sigmoid scores are far from 0 and 1); SigLIP tokenizers are trained in a fixture
(``tests/clip/tokenizer_files``) and pointed at by each repository entry's ``"tokenizer"``, the
reference tokenizing with open_clip's ``HFTokenizer`` on the same folder. Criteria: torch fp32 max abs
<= 1e-5; ORT (``--backend onnx``, exported on first start) cosine >= 0.99999 and max abs <= 1e-4;
SigLIP probabilities computed by hand, ``sigmoid(logit_scale * cos + logit_bias)``, within 1e-5 of
``/classify`` and ``/similarity``.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.client import ClipClient
from tests.api.server_process import ServerProcess
from tests.clip.tokenizer_files import make_tokenizer_folder

open_clip = pytest.importorskip("open_clip")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

SEED = 0
TORCH_TOLERANCE = 1e-5
ORT_COSINE, ORT_TOLERANCE = 0.99999, 1e-4
# entry -> (open_clip architecture, trained tokenizer kind or None for CLIP's BPE)
FAMILIES = {"siglip": ("ViT-B-16-SigLIP", "unigram"), "siglip2": ("ViT-B-16-SigLIP2", "bpe"),
            "mobileclip2": ("MobileCLIP2-S0", None)}
SIGLIP_SCALE, SIGLIP_BIAS = math.log(8.0), 2.5  # the checkpoint's: scores spread around 0.9
TEXTS = ["a photo of a cat", "A Blurry photo of the DOG!", "", "beach " * 80, "ünïcödé 😀 text"]


@dataclass
class Reference:
    images: np.ndarray
    texts: np.ndarray
    logit_scale: float
    logit_bias: float | None


def _images() -> list[bytes]:
    rng = np.random.default_rng(0)
    out = []
    for size in ((300, 200), (180, 260)):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


IMAGES = _images()


def _reference(arch: str, tokenizer: Path | None, checkpoint: Path | None) -> Reference:
    torch.manual_seed(SEED)
    model, _, transform = open_clip.create_model_and_transforms(arch)
    if checkpoint is not None:
        with torch.no_grad():
            model.logit_scale.fill_(SIGLIP_SCALE)
            model.logit_bias.fill_(SIGLIP_BIAS)
        torch.save(model.state_dict(), checkpoint)
    model.eval()
    tok = (open_clip.tokenizer.HFTokenizer(str(tokenizer), 64, clean="canonicalize") if tokenizer
           else open_clip.get_tokenizer(arch))
    pixels = torch.stack([transform(Image.open(io.BytesIO(b))) for b in IMAGES])
    with torch.no_grad():
        images = torch.nn.functional.normalize(model.encode_image(pixels), dim=-1).numpy()
        texts = torch.nn.functional.normalize(model.encode_text(tok(TEXTS)), dim=-1).numpy()
        bias = model.logit_bias.item() if getattr(model, "logit_bias", None) is not None else None
        return Reference(images, texts, float(model.logit_scale.exp().item()), bias)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Reference]]:
    """A model repository with the three entries, and open_clip's embeddings for each."""
    root = tmp_path_factory.mktemp("families")
    references = {}
    for name, (arch, kind) in FAMILIES.items():
        entry = root / "models" / name
        entry.mkdir(parents=True)
        config: dict[str, object] = {"name": name, "architecture": arch, "seed": SEED}
        tokenizer = make_tokenizer_folder(root / f"tok-{kind}", kind) if kind else None
        if tokenizer:
            config["tokenizer"] = str(tokenizer)
        checkpoint = entry / "weights.pt" if name == "siglip" else None
        references[name] = _reference(arch, tokenizer, checkpoint)
        if checkpoint is not None:
            config["weights"] = checkpoint.name
        (entry / "config.json").write_text(json.dumps(config))
    return root / "models", references


def _serve(models: Path, log: Path, backend: str) -> ServerProcess:
    server = ServerProcess(log, "--model-dir", str(models), "--model", ",".join(FAMILIES), "--backend", backend,
                           "--no-warmup", "--max-batch-size", "4")
    try:
        server.wait_ready(timeout_s=900)
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="module")
def torch_server(repo: tuple[Path, dict[str, Reference]], tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[ClipClient]:
    server = _serve(repo[0], tmp_path_factory.mktemp("log") / "torch.log", "torch")
    try:
        with ClipClient(server.url) as client:
            yield client
    finally:
        server.stop()


@pytest.mark.parametrize("name", list(FAMILIES))
def test_torch_embeddings_equal_open_clip(torch_server: ClipClient, repo: tuple[Path, dict[str, Reference]],
                                          name: str) -> None:
    ref = repo[1][name]
    images = torch_server.embed_images(IMAGES, model=name)
    texts = torch_server.embed_texts(TEXTS, model=name)
    assert np.abs(images - ref.images).max() <= TORCH_TOLERANCE
    assert np.abs(texts - ref.texts).max() <= TORCH_TOLERANCE


def test_models_show_each_familys_scoring(torch_server: ClipClient, repo: tuple[Path, dict[str, Reference]]) -> None:
    info = {m.name: m for m in torch_server.models()}
    for name, ref in repo[1].items():
        assert info[name].scoring == ("sigmoid" if ref.logit_bias is not None else "softmax")
        assert info[name].logit_bias == pytest.approx(ref.logit_bias, abs=1e-6) if ref.logit_bias else True
        assert info[name].logit_scale == pytest.approx(ref.logit_scale, rel=1e-6)
    assert info["siglip"].context_length == 64 and info["mobileclip2"].context_length == 77
    assert info["siglip"].extra["text_trimming"] == info["mobileclip2"].extra["text_trimming"] == "off"


def _by_hand(ref: Reference) -> np.ndarray:
    logits = ref.logit_scale * (ref.images @ ref.texts.T) + ref.logit_bias
    return np.asarray(1.0 / (1.0 + np.exp(-logits.astype(np.float64))))


def test_siglip_classify_scores_are_sigmoids_by_hand(torch_server: ClipClient,
                                                     repo: tuple[Path, dict[str, Reference]]) -> None:
    ref = repo[1]["siglip"]
    expected = _by_hand(ref)
    assert expected.min() > 0.05 and expected.max() < 0.999, "the scores must be informative"
    # Labels are the texts, one template "{}": a class embedding is its text's (reference) embedding.
    columns = [j for j, text in enumerate(TEXTS) if text]
    labels = [TEXTS[j] for j in columns]
    results = torch_server.classify(IMAGES, labels, templates=["{}"], top_k=len(labels), model="siglip")
    for row, ranked in zip(expected[:, columns], results, strict=True):
        got = {s.label: s.score for s in ranked}
        assert len(got) == len(labels)
        for j, label in enumerate(labels):
            assert abs(got[label] - row[j]) <= 1e-5
        assert sum(got.values()) > 1.0  # independent labels: no softmax


def test_siglip_similarity_probabilities_are_sigmoids_by_hand(
    torch_server: ClipClient, repo: tuple[Path, dict[str, Reference]]
) -> None:
    ref = repo[1]["siglip"]
    result = torch_server.similarity(IMAGES, TEXTS, model="siglip")
    assert np.abs(result.cosine - ref.images @ ref.texts.T).max() <= 1e-5
    assert np.abs(result.probabilities - _by_hand(ref)).max() <= 1e-5


def test_softmax_families_still_sum_to_one(torch_server: ClipClient) -> None:
    result = torch_server.similarity(IMAGES, TEXTS, model="mobileclip2")
    np.testing.assert_allclose(result.probabilities.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_onnx_runtime_embeddings_match_open_clip(repo: tuple[Path, dict[str, Reference]],
                                                 tmp_path_factory: pytest.TempPathFactory) -> None:
    """Each model exported on the server's first start (``--backend onnx``), then served on ORT."""
    server = _serve(repo[0], tmp_path_factory.mktemp("log") / "onnx.log", "onnx")
    try:
        with ClipClient(server.url) as client:
            assert {m.name: m.backend for m in client.models()} == dict.fromkeys(FAMILIES, "onnx")
            for name, ref in repo[1].items():
                for got, want in ((client.embed_images(IMAGES, model=name), ref.images),
                                  (client.embed_texts(TEXTS, model=name), ref.texts)):
                    assert (got * want).sum(axis=1).min() >= ORT_COSINE, name
                    assert np.abs(got - want).max() <= ORT_TOLERANCE, name
            siglip = {m.name: m for m in client.models()}["siglip"]
            assert siglip.scoring == "sigmoid" and siglip.logit_bias == pytest.approx(SIGLIP_BIAS, abs=1e-6)
    finally:
        server.stop()
