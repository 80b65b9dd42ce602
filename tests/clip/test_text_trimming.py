"""Text trimming per family: only where it is exact (CLIP's causal mask, end-of-text pooling).

SigLIP / SigLIP 2 (no causal mask, the last position pooled, padding with a pad id that need not be 0) and
MobileCLIP 2 (no causal mask) read every position: ``can_trim`` is False for them and their text tower
always runs the full context; for each family the served text features equal ``encode_text`` on the
full, padded rows; and for the non-causal ones, cutting the padding would change the features (so
trimming them would be wrong, not merely slower).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from service.clip.loading import build_model
from service.clip.text import can_trim, encode_text_trimmed

open_clip = pytest.importorskip("open_clip")
torch = pytest.importorskip("torch")
SMALL_TEXT = {"width": 64, "heads": 2, "layers": 1, "vocab_size": 1000}
# family -> (open_clip architecture, trimming exact, pad id of its tokenizer)
FAMILIES = {"clip": ("ViT-B-32", True, 0), "siglip": ("ViT-B-16-SigLIP", False, 1),
            "siglip2": ("ViT-B-16-SigLIP2", False, 0), "mobileclip2": ("MobileCLIP2-S0", False, 0)}


def _small(arch: str) -> Any:
    """The architecture with a small text tower (its class, mask, pooling and padding kept)."""
    cfg = copy.deepcopy(open_clip.get_model_config(arch))
    cfg["text_cfg"].update(SMALL_TEXT)
    cfg["text_cfg"].pop("hf_tokenizer_name", None)
    return build_model(cfg).eval()


def _rows(context: int, pad: int, lengths: tuple[int, ...]) -> Any:
    generator = torch.Generator().manual_seed(0)
    tokens = torch.full((len(lengths), context), pad, dtype=torch.long)
    for row, n in enumerate(lengths):
        tokens[row, :n] = torch.randint(3, SMALL_TEXT["vocab_size"] - 1, (n,), generator=generator)
        tokens[row, n - 1] = SMALL_TEXT["vocab_size"] - 1  # end of text: the largest id (argmax pooling)
    return tokens


@pytest.mark.parametrize("family", list(FAMILIES))
def test_trimming_only_where_exact_and_served_features_equal_encode_text(family: str) -> None:
    arch, exact, pad = FAMILIES[family]
    model = _small(arch)
    assert can_trim(model) is exact
    context = int(getattr(model, "context_length", None) or model.text.context_length)
    tokens = _rows(context, pad, (3, 7, 5))
    with torch.inference_mode():
        full = model.encode_text(tokens)
        served = encode_text_trimmed(model, tokens)
        assert float((served - full).abs().max()) <= 1e-5
        if exact:  # the batch cut to its longest text: the same features
            assert float((encode_text_trimmed(model, tokens[:, :7]) - full).abs().max()) <= 1e-5
        else:  # the padding takes part: a cut batch would be wrong
            cut = tokens[:, :7]
            if family == "mobileclip2":  # CLIP BPE pads with 0: encode_text_trimmed pads back, exactly
                assert float((encode_text_trimmed(model, cut) - full).abs().max()) <= 1e-5
            shorter = model.text(cut) if hasattr(model, "text") else model.encode_text(cut)
            assert float((shorter - full).abs().max()) > 1e-3
