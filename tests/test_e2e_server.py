"""End to end: the real server process classifies CIFAR-10 test JPEGs over HTTP with the demo model.

The server serves the demo model on ONNX Runtime, its default, from the session's cache
(``CLIPSERVE_CACHE_DIR``, inherited): exported there on demand unless another test did it first.
"""

from __future__ import annotations

import base64
import tarfile
from collections import defaultdict
from pathlib import Path

import httpx
import pytest

from tests.api.server_process import REPO, ServerProcess
from tests.shared_data import require_cifar10

DEMO_CONFIG = REPO / "models" / "clipserve-demo" / "config.json"
PER_CLASS = 50  # 10 classes x 50 = 500 images
CHUNK = 50  # images per request


def cifar10_subset(tar_path: Path, per_class: int) -> list[tuple[str, bytes]]:
    """The first ``per_class`` test images of each class (by file name): (class, JPEG bytes)."""
    by_class: dict[str, list[tarfile.TarInfo]] = defaultdict(list)
    with tarfile.open(tar_path) as tar:
        for member in tar.getmembers():
            parts = member.name.split("/")
            if member.isfile() and len(parts) == 3 and parts[2].endswith(".jpg"):
                by_class[parts[1]].append(member)
        chosen = [
            (label, m) for label in sorted(by_class) for m in sorted(by_class[label], key=lambda m: m.name)[:per_class]
        ]
        return [(label, tar.extractfile(m).read()) for label, m in chosen]  # type: ignore[union-attr]


@pytest.mark.slow
def test_classify_cifar10_over_http_with_the_demo_model(tmp_path: Path) -> None:
    if not DEMO_CONFIG.is_file():
        pytest.skip(f"the bundled demo model is not there yet ({DEMO_CONFIG.relative_to(REPO)})")
    images = cifar10_subset(require_cifar10() / "test.tar", PER_CLASS)
    assert len(images) == 10 * PER_CLASS
    server = ServerProcess(tmp_path / "server.log", "--model", "clipserve-demo", "--max-batch-size", "32")
    try:
        server.wait_ready()
        correct = 0
        with httpx.Client(base_url=server.url, timeout=120) as client:
            (info,) = client.get("/models").json()["data"]
            assert (info["backend"], info["precision"]) == ("onnx", "fp32")  # exported on demand, cached
            for start in range(0, len(images), CHUNK):
                chunk = images[start : start + CHUNK]
                body = {"images": [base64.b64encode(data).decode() for _, data in chunk], "label_set": "cifar10",
                        "top_k": 1}
                r = client.post("/classify", json=body)
                assert r.status_code == 200, r.text
                predicted = [result["labels"][0]["label"] for result in r.json()["results"]]
                correct += sum(p == label for p, (label, _) in zip(predicted, chunk, strict=True))
        accuracy = correct / len(images)
        print(f"CIFAR-10 zero-shot top-1 over HTTP on {len(images)} test images: {accuracy:.1%}")
        assert accuracy >= 0.60
    finally:
        server.stop()
