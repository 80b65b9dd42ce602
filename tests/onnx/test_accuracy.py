"""The demo model's zero-shot CIFAR-10 accuracy on ORT equals torch's (a 1,000-image balanced subset).

Both go through ``service.measure.accuracy.evaluate`` (label set, prompt ensemble, subset): torch with the eval
command's own model, ORT through the serving backend. The full 10,000-image figures, and int8's change,
are in docs/benchmarks.md (``benchmarks/bench_onnx.py accuracy``).
"""

from __future__ import annotations

from benchmarks.bench_onnx import BackendZeroShot
from service.clip.model_config import ModelConfig
from service.config import REPO_MODELS_DIR
from service.measure.accuracy import ZeroShotModel, evaluate
from service.runtime.onnx_backend import OnnxBackend
from tests.shared_data import require_cifar10

DEMO = "clipserve-demo"
SUBSET = 1000
MAX_CHANGE = 0.003  # 0.3 points


def test_demo_zero_shot_accuracy_matches_torch(demo_onnx: ModelConfig) -> None:
    """ORT on the session's on-demand export of the demo model (``demo_onnx``), torch on its weights."""
    data = require_cifar10() / "test.tar"
    onnx_model = BackendZeroShot(OnnxBackend(demo_onnx), demo_onnx)
    on_onnx = evaluate(onnx_model, data, limit=SUBSET)  # type: ignore[arg-type]  # evaluate duck-types its model
    on_torch = evaluate(ZeroShotModel(DEMO, REPO_MODELS_DIR), data, limit=SUBSET)
    assert on_onnx.images == on_torch.images == SUBSET and on_onnx.label_set == on_torch.label_set
    assert on_torch.top1 > 0.5, "the demo model should be far above chance (10%) on CIFAR-10"
    assert abs(on_onnx.top1 - on_torch.top1) <= MAX_CHANGE
    assert abs(on_onnx.top5 - on_torch.top5) <= MAX_CHANGE
