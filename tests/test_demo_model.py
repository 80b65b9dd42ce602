"""The bundled demo model classifies CIFAR-10 zero-shot well above chance, through the serving path."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from service.cli.eval import add_arguments, run
from service.config import REPO_MODELS_DIR, Settings
from service.measure.accuracy import balanced_subset, evaluate, list_images
from service.measure.model import ServingModel
from tests.shared_data import require_cifar10

DEMO = REPO_MODELS_DIR / "clipserve-demo"


@pytest.fixture(scope="module")
def demo_model() -> Iterator[ServingModel]:
    """The demo model as the server builds it, on its own backend (ONNX Runtime, exported on demand)."""
    if not (DEMO / "config.json").is_file():
        pytest.fail(f"the bundled demo model is missing ({DEMO}/config.json)")
    model = ServingModel.load("clipserve-demo", Settings(model_dir=REPO_MODELS_DIR))
    yield model
    model.close()


def test_demo_model_zero_shot_cifar10(demo_model: ServingModel) -> None:
    """Prompt-ensemble top-1 on a fixed, class-balanced 1,000-image test subset is at least 60%."""
    cifar = require_cifar10()
    result = evaluate(demo_model, cifar / "test.tar", limit=1000, seed=0)
    assert result.images == 1000 and result.classes == 10 and result.templates == 18
    assert result.label_set == "cifar10"
    assert result.backend == "onnx", "the demo model's config serves it on ONNX Runtime"
    assert result.top1 >= 0.60, f"demo model zero-shot top-1 {result.top1:.3f} < 0.60"
    assert result.top5 >= result.top1


def test_balanced_subset_is_fixed_and_even() -> None:
    """The --limit subset is the same every time and spread evenly over the classes."""
    cifar = require_cifar10()
    items = list_images(cifar / "test.tar")
    first, again = balanced_subset(items, 1000, seed=0), balanced_subset(items, 1000, seed=0)
    assert first == again and len(set(first)) == 1000
    counts = {c: sum(1 for k, _ in first if k == c) for c, _ in items}
    assert set(counts.values()) == {100}
    assert balanced_subset(items, 1000, seed=1) != first


def test_eval_command_rejects_a_missing_dataset(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """A path that is neither a folder nor a tar is a clear error (exit 2), not a traceback."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    bogus = tmp_path / "not-a-dataset.txt"
    bogus.write_text("hello")
    assert run(parser.parse_args(["clipserve-demo", str(bogus)])) == 2
    assert "neither a directory nor a tar" in capsys.readouterr().err
