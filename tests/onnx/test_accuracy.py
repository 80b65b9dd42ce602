"""The demo model's zero-shot CIFAR-10 accuracy on ORT equals torch's (a 1,000-image balanced subset).

Both go through ``service.evaluate.evaluate`` (label set, prompt ensemble, subset): torch with the eval
command's own model, ORT through the serving backend. The full 10,000-image figures, and int8's change,
are in docs/benchmarks.md (``benchmarks/bench_onnx.py accuracy``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.bench_onnx import BackendZeroShot
from service.clip.model_config import read_config, resolve_model
from service.config import REPO_MODELS_DIR
from service.evaluate import ZeroShotModel, evaluate
from service.export import ExportOptions, export_model
from service.runtime.onnx_backend import OnnxBackend
from tests.shared_data import require_cifar10

DEMO = "clipserve-demo"
SUBSET = 1000
MAX_CHANGE = 0.003  # 0.3 points


def test_demo_zero_shot_accuracy_matches_torch(tmp_path: Path) -> None:
    if not (REPO_MODELS_DIR / DEMO / "config.json").is_file():
        pytest.skip(f"the demo model is not in {REPO_MODELS_DIR / DEMO} yet")
    data = require_cifar10() / "test.tar"
    export_model(resolve_model(DEMO, REPO_MODELS_DIR), tmp_path / DEMO, DEMO, ExportOptions())
    config = read_config(tmp_path / DEMO)
    onnx_model = BackendZeroShot(OnnxBackend(config), config)
    on_onnx = evaluate(onnx_model, data, limit=SUBSET)  # type: ignore[arg-type]  # evaluate duck-types its model
    on_torch = evaluate(ZeroShotModel(DEMO, REPO_MODELS_DIR), data, limit=SUBSET)
    assert on_onnx.images == on_torch.images == SUBSET and on_onnx.label_set == on_torch.label_set
    assert on_torch.top1 > 0.5, "the demo model should be far above chance (10%) on CIFAR-10"
    assert abs(on_onnx.top1 - on_torch.top1) <= MAX_CHANGE
    assert abs(on_onnx.top5 - on_torch.top5) <= MAX_CHANGE
