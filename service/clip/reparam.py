"""Re-parameterisation for inference: MobileCLIP's train-time branches folded once, at load time."""

from __future__ import annotations

from typing import Any


def reparameterizable(model: Any) -> bool:
    """True when the model has blocks built to be re-parameterised for inference (MobileCLIP's FastViT)."""
    return any(hasattr(m, "reparameterize") or hasattr(m, "switch_to_deploy") for m in model.modules())


def reparameterize(model: Any) -> bool:
    """Fold ``model``'s train-time branches into single convolutions, in place, once at load time.

    MobileCLIP / MobileCLIP2 image towers (timm FastViT: MobileOne blocks, RepMixer) train with
    parallel branches and batch norms that their authors fold away for deployment: the same function,
    fewer operations (measured in benchmarks/bench_reparam.py). timm's own ``reparameterize_model``
    does it; other models have nothing to fold and are left alone. Returns True when it folded.
    """
    if not reparameterizable(model):
        return False
    from timm.utils.model import reparameterize_model

    model.eval()  # the folds read the batch norms' running statistics
    reparameterize_model(model, inplace=True)
    return True

