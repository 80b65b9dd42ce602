"""CLIP's text tower run over only as many positions as the batch's longest text needs.

CLIP's text transformer is causal: position i attends to positions <= i only, and the feature is
read at the end-of-text token. Positions after the longest text's end-of-text token therefore cannot
change any output, and dropping them is exact. Typical prompts are 5-20 tokens of 77, so this saves
most of the text compute (measured in ``benchmarks/bench_encoders.py``).

Hot path: this mirrors ``open_clip.CLIP.encode_text`` step by step (token embedding, positional
embedding, causal mask, transformer, ``ln_final``, pooling, projection) on the shortened sequence.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# Pooling that reads a position at or before the end-of-text token: unaffected by trimming.
_TRIMMABLE_POOLS = ("argmax", "eos", "first")


def can_trim(model: Any) -> bool:
    """True when trimming is exact for ``model``: an open_clip CLIP with a causal mask and EOT pooling."""
    import open_clip

    return (
        isinstance(model, open_clip.CLIP)
        and getattr(model, "attn_mask", None) is not None
        and getattr(model, "text_pool_type", None) in _TRIMMABLE_POOLS
    )


def needed_length(tokens: torch.Tensor) -> int:
    """Positions the batch needs: up to its last non-padding (non-zero) column, at least 1.

    Only trimmable models get here (``can_trim``): open_clip CLIPs, whose tokenizer (CLIP's BPE) pads
    with 0. Models with other pad ids (SigLIP's Hugging Face tokenizers) have no causal mask, are never
    trimmed, and get full-length rows from their tokenizer.
    """
    used = (tokens != 0).any(dim=0).nonzero()
    return int(used[-1].item()) + 1 if used.numel() else 1


def encode_text_trimmed(model: Any, tokens: torch.Tensor) -> torch.Tensor:
    """Un-normalised text features, equal to ``model.encode_text`` on the same texts padded to 77.

    ``tokens``: (N, L) integer ids, zero-padded, L <= the model's context length (L may already be
    the longest text's length). Models where trimming is not exact get the full context length: rows
    shorter than it are padded with 0 (CLIP's BPE pad id, as MobileCLIP uses); tokenizers with another
    pad id (``HfTokenizer``) give full rows, so nothing is padded here.
    """
    import torch
    import torch.nn.functional as F

    context = int(model.context_length if hasattr(model, "context_length") else model.text.context_length)
    if tokens.shape[1] > context:
        raise ValueError(f"{tokens.shape[1]} token positions exceed the context length {context}")
    if not can_trim(model):
        return model.encode_text(F.pad(tokens, (0, context - tokens.shape[1])))
    from open_clip.transformer import text_global_pool

    length = needed_length(tokens)
    tokens = tokens[:, :length]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype)
    x = x + model.positional_embedding[:length].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    projection = model.text_projection
    if projection is None:
        return x
    if isinstance(projection, torch.nn.Linear):
        return projection(x)
    return x @ projection
