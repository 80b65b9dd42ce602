"""Fixtures for the deployment tests: the repository root, rendered kustomize overlays, a live server."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ("cpu", "gpu")
FAKE_MODEL = "deploy-fake"
STARTUP_DEADLINE_S = 120.0  # a guard against a server that never comes up, not a timing assertion


def kustomize(directory: Path) -> list[dict]:
    """``kubectl kustomize DIR``: every rendered manifest (skips when kubectl is not installed)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: cannot render the kustomize overlays")
    out = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"kubectl kustomize {directory} failed:\n{out.stderr}"
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


# ids are not the bare overlay names: the root conftest skips tests carrying a "gpu" keyword.
@pytest.fixture(scope="session", params=OVERLAYS, ids=[f"overlay-{o}" for o in OVERLAYS])
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[dict]]:
    """(name, rendered manifests) of each overlay under deploy/k8s/overlays."""
    return request.param, kustomize(ROOT / "deploy" / "k8s" / "overlays" / request.param)


def find(manifests: list[dict], kind: str, name: str | None = None) -> dict:
    """The one manifest of ``kind`` (and ``name``)."""
    found = [m for m in manifests if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _tiny_png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (40, 24), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


# Package scope: the server stops once the deploy tests are done, not at the end of the whole run.
@pytest.fixture(scope="package")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of a running ``python -m service serve`` (fake model) that has served a good and a bad
    request."""
    if importlib.util.find_spec("service.rest.app") is None or importlib.util.find_spec("service.__main__") is None:
        pytest.skip("the server (service.rest.app and `python -m service`) does not exist yet")
    from tests.api.server_process import ServerProcess

    models = tmp_path_factory.mktemp("models")
    (models / FAKE_MODEL).mkdir()
    config = {"name": FAKE_MODEL, "architecture": "fake", "backend": "fake", "embed_dim": 16,
              "image_size": 32, "logit_scale": 100.0}
    (models / FAKE_MODEL / "config.json").write_text(json.dumps(config))
    server = ServerProcess(models / "server.log", "--model-dir", str(models), "--model", FAKE_MODEL,
                           "--log-level", "WARNING")
    try:
        server.wait_ready(STARTUP_DEADLINE_S)
        _exercise(server.url)
        yield server.url
    finally:
        server.stop()


def _exercise(base: str) -> None:
    """One good embed (a text and an image) and one bad request, so that error series exist."""
    with httpx.Client(base_url=base, timeout=30) as client:
        image = base64.b64encode(_tiny_png()).decode()
        good = client.post("/embed", json={"inputs": [{"text": "a photo of a dog"}, {"image": image}]})
        assert good.status_code == 200, good.text
        bad = client.post("/embed", json={"inputs": [{"image": "this is not base64!"}]})
        assert 400 <= bad.status_code < 500, bad.text


@pytest.fixture(scope="package")
def live_metrics(live_server: str) -> str:
    """GET /metrics of the live server."""
    metrics = httpx.get(f"{live_server}/metrics", timeout=30)
    assert metrics.status_code == 200
    return metrics.text


def check_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ``CLIPSERVE_*`` variable names a ``Settings`` field (the settings ignore unknown ones, so a
    typo would pass silently), and together they validate."""
    from service.config import Settings

    fields = {f"CLIPSERVE_{name.upper()}" for name in Settings.model_fields}
    unknown = {key for key in env if key.startswith("CLIPSERVE_")} - fields
    assert not unknown, f"not clipserve settings: {sorted(unknown)}"
    for key in list(os.environ):
        if key.startswith("CLIPSERVE_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    Settings()  # raises on a value that does not validate
