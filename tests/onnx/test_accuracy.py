"""The demo model's zero-shot CIFAR-10 accuracy on ORT equals torch's (a 1,000-image balanced subset).

Both go through ``service.measure.accuracy.evaluate_model``, the path of ``clipserve eval --backend onnx|torch``
(the server's backend factory; label set, prompt ensemble, subset). The full 10,000-image figures are in
the demo model's card (models/clipserve-demo/MODEL_CARD.md); int8's change is in docs/benchmarks.md
(``benchmarks/bench_onnx.py accuracy``).
"""

from __future__ import annotations

from service.clip.model_config import ModelConfig
from service.config import REPO_MODELS_DIR
from service.measure.accuracy import eval_settings, evaluate_model
from tests.shared_data import require_cifar10

DEMO = "clipserve-demo"
SUBSET = 1000
MAX_CHANGE = 0.003  # 0.3 points


def test_demo_zero_shot_accuracy_matches_torch(demo_onnx: ModelConfig) -> None:
    """ORT on the session's on-demand export of the demo model (``demo_onnx``, found in the session's cache by
    ``ensure_onnx``), torch on its weights."""
    data = require_cifar10() / "test.tar"
    on_onnx = evaluate_model(DEMO, data, eval_settings("onnx", model_dir=REPO_MODELS_DIR), limit=SUBSET)
    on_torch = evaluate_model(DEMO, data, eval_settings("torch", model_dir=REPO_MODELS_DIR), limit=SUBSET)
    assert (on_onnx.backend, on_torch.backend) == ("onnx", "torch")
    assert on_onnx.images == on_torch.images == SUBSET and on_onnx.label_set == on_torch.label_set
    assert on_torch.top1 > 0.5, "the demo model should be far above chance (10%) on CIFAR-10"
    assert abs(on_onnx.top1 - on_torch.top1) <= MAX_CHANGE
    assert abs(on_onnx.top5 - on_torch.top5) <= MAX_CHANGE
