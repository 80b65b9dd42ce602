"""``clipserve eval --backend onnx|torch``: the model is loaded through the server's backend factory, the
result names the backend, and both backends give the demo model the same CIFAR-10 accuracy.

The agreement test reads the shared CIFAR-10 test set (skipped with a message where it is absent); the
others use a few generated images. The demo model's ONNX graphs come from the session's on-demand
export (``CLIPSERVE_CACHE_DIR``, see tests/conftest.py), made at most once.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from service.cli import main
from service.config import REPO_MODELS_DIR
from tests.shared_data import require_cifar10

DEMO = "clipserve-demo"
SUBSET = 200
MAX_CHANGE = 0.001  # 0.1 points: on 200 images, the same number of hits


def _eval(args: list[str], out: Path) -> dict[str, object]:
    """Run ``clipserve eval`` on the demo model with ``args``; its JSON result."""
    assert main(["eval", DEMO, *args, "--model-dir", str(REPO_MODELS_DIR), "--json", str(out)]) == 0
    result: dict[str, object] = json.loads(out.read_text())
    return result


@pytest.fixture
def tiny_set(tmp_path: Path) -> Path:
    """A folder-per-class image set: two classes (cat, truck), three flat-colour PNGs each."""
    for i, (name, colour) in enumerate([("cat", (200, 120, 60)), ("truck", (30, 60, 200))]):
        folder = tmp_path / "images" / name
        folder.mkdir(parents=True)
        for j in range(3):
            buffer = io.BytesIO()
            Image.new("RGB", (40 + 8 * j, 36), tuple(c + 10 * i * j for c in colour)).save(buffer, "PNG")
            (folder / f"{j}.png").write_bytes(buffer.getvalue())
    return tmp_path / "images"


def test_onnx_and_torch_agree_on_the_demo_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--backend onnx`` and ``--backend torch`` on a balanced 200-image CIFAR-10 subset: top-1 and top-5
    within 0.1 point, and each printed line and JSON result names its backend."""
    data = str(require_cifar10() / "test.tar")
    on_onnx = _eval([data, "--limit", str(SUBSET), "--backend", "onnx"], tmp_path / "onnx.json")
    on_torch = _eval([data, "--limit", str(SUBSET), "--backend", "torch"], tmp_path / "torch.json")
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" on ")[0] for line in lines] == [f"{DEMO} (onnx)", f"{DEMO} (torch)"]
    assert (on_onnx["backend"], on_torch["backend"]) == ("onnx", "torch")
    assert on_onnx["images"] == on_torch["images"] == SUBSET
    assert on_onnx["label_set"] == on_torch["label_set"] == "cifar10"
    top1, top5 = float(on_torch["top1"]), float(on_torch["top5"])  # type: ignore[arg-type]
    assert top1 > 0.5, "the demo model should be far above chance (10%) on CIFAR-10"
    assert abs(float(on_onnx["top1"]) - top1) <= MAX_CHANGE  # type: ignore[arg-type]
    assert abs(float(on_onnx["top5"]) - top5) <= MAX_CHANGE  # type: ignore[arg-type]


def test_the_default_backend_is_the_models_own(tiny_set: Path, tmp_path: Path) -> None:
    """Without ``--backend`` the model runs where its config says: ONNX Runtime for the demo model."""
    result = _eval([str(tiny_set)], tmp_path / "result.json")
    assert result["backend"] == "onnx"
    assert result["images"] == 6 and result["classes"] == 2 and result["label_set"] is None


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_an_unknown_model_is_a_clear_error(
    backend: str, tiny_set: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown model: exit 2 and one ``error:`` line naming it, not a traceback."""
    assert main(["eval", "no-such-model", str(tiny_set), "--backend", backend]) == 2
    err = capsys.readouterr().err
    assert "error: " in err and "no-such-model" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{missing}"], "not found"),
        (["{data}", "--limit", "0"], "--limit must be >= 1"),
        (["{data}", "--batch-size", "0"], "--batch-size must be >= 1"),
        (["{data}", "--threads", "-1"], "--threads must be >= 0"),
    ],
)
def test_bad_input_is_a_clear_error(
    args: list[str], message: str, tiny_set: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing image set or a bad number: exit 2 and ``error: ...`` on stderr, not a traceback."""
    filled = [a.format(missing=tmp_path / "no-such-set", data=tiny_set) for a in args]
    assert main(["eval", DEMO, *filled, "--backend", "torch"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
