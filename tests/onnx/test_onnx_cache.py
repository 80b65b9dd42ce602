"""On-demand ONNX exports (``service.runtime.onnx_cache``): made once into the cache, reused, never half-used.

The tiny random model is exported for real once here (seconds); the demo model's export is the
session's (``demo_onnx``), the one the server makes when it serves the demo model by default.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import service.export
from service.clip.model_config import ModelConfig, read_config, resolve_model, write_config
from service.config import REPO_MODELS_DIR, Settings
from service.errors import NotFound
from service.runtime.factory import create_backend
from service.runtime.onnx_cache import DIGESTS_FILE, cache_folder, cache_root, choose_backend, ensure_onnx
from tests.api.helpers import make_settings, serve
from tests.onnx.conftest import write_tiny

Export = Callable[..., ModelConfig]


@pytest.fixture
def tiny(tmp_path: Path) -> ModelConfig:
    """The tiny model as a repository entry without ONNX files (its config says torch)."""
    return write_tiny(tmp_path / "models")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Serve on onnx, with a cache of this test's own."""
    return Settings(model_dir=tmp_path / "models", cache_dir=tmp_path / "cache", backend="onnx")


def count_exports(monkeypatch: pytest.MonkeyPatch, export: Export = service.export.export_model) -> list[Path]:
    """Route ``service.export.export_model`` through ``export``, recording each call's output folder."""
    calls: list[Path] = []

    def counted(config: ModelConfig, out_dir: Path, *args: Any, **kwargs: Any) -> ModelConfig:
        calls.append(out_dir)
        return export(config, out_dir, *args, **kwargs)

    monkeypatch.setattr(service.export, "export_model", counted)
    return calls


def copy_export(source: Path) -> Export:
    """An export that copies the finished export in ``source`` (fast stand-in for the real one)."""

    def export(config: ModelConfig, out_dir: Path, name: str, *args: Any) -> ModelConfig:
        shutil.copytree(source, out_dir, dirs_exist_ok=True)
        exported = read_config(out_dir).model_copy(update={"name": name})
        write_config(exported, out_dir)
        return exported

    return export


def mtimes(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_exports_once_into_the_cache_then_reuses_it(tiny: ModelConfig, settings: Settings,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    calls = count_exports(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="service.runtime.onnx_cache"):
        first = ensure_onnx(tiny, settings)
    folder = cache_folder(tiny, settings)
    assert len(calls) == 1 and calls[0].parent == folder.parent != calls[0]  # a temporary folder, renamed
    assert first.path == folder and folder.parent == settings.cache_dir / "onnx"  # type: ignore[operator]
    assert folder.name.startswith("tiny-") and len(folder.name) == len("tiny-") + 12
    assert (first.name, first.backend, first.embed_dim) == ("tiny", "onnx", 32)
    assert any("exported to ONNX in" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no temporary folder left
    before = mtimes(folder)

    again = ensure_onnx(tiny, settings)
    assert len(calls) == 1 and again == first and mtimes(folder) == before
    backend = create_backend(again, settings)
    assert (backend.info.name, backend.info.backend, backend.info.dimension) == ("tiny", "onnx", 32)
    backend.close()


def test_an_interrupted_export_is_never_reused(tiny: ModelConfig, settings: Settings, tiny_repo: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def killed(config: ModelConfig, out_dir: Path, *args: Any) -> ModelConfig:
        (out_dir / "onnx").mkdir(parents=True)
        (out_dir / "onnx" / "image.onnx").write_bytes(b"half a graph")
        raise RuntimeError("killed mid-export")

    count_exports(monkeypatch, killed)
    with pytest.raises(RuntimeError, match="killed"):
        ensure_onnx(tiny, settings)
    folder = cache_folder(tiny, settings)
    assert not folder.exists() and not list(folder.parent.iterdir())

    folder.mkdir()  # a folder that lacks its graphs (deleted by hand, say) is exported again
    write_config(read_config(tiny_repo / "tiny-onnx"), folder)
    calls = count_exports(monkeypatch, copy_export(tiny_repo / "tiny-onnx"))
    exported = ensure_onnx(tiny, settings)
    assert len(calls) == 1 and exported.path == folder and (folder / "onnx" / "image.onnx").is_file()


def test_without_torch_a_missing_export_is_not_found(tiny: ModelConfig, settings: Settings,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    calls = count_exports(monkeypatch)
    with pytest.raises(NotFound) as caught:
        ensure_onnx(tiny, settings)
    message = caught.value.message
    assert str(tiny.resolve("onnx/image.onnx")) in message
    assert "run `clipserve export --model tiny`" in message
    assert "torch cannot be imported" in message and "pip install 'clipserve[torch]'" in message
    assert not calls and not cache_folder(tiny, settings).exists()


def test_existing_files_and_other_backends_are_left_alone(tiny: ModelConfig, settings: Settings, tiny_repo: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    calls = count_exports(monkeypatch)
    exported = read_config(tiny_repo / "tiny-onnx")
    assert ensure_onnx(exported, settings) is exported
    assert ensure_onnx(tiny, settings.model_copy(update={"backend": "torch"})) is tiny
    assert ensure_onnx(tiny, settings.model_copy(update={"backend": None})) is tiny  # its config says torch
    assert not calls and not settings.cache_dir.exists()  # type: ignore[union-attr]


def test_the_cache_key_follows_what_the_graphs_compute(tiny: ModelConfig, settings: Settings) -> None:
    folder = cache_folder(tiny, settings)
    assert cache_folder(tiny.model_copy(update={"backend": "onnx", "logit_scale": 3.0}), settings) == folder
    for change in ({"seed": 4}, {"image_size": 32}, {"mean": (0.5, 0.5, 0.5)}, {"weights": "openai"}):
        assert cache_folder(tiny.model_copy(update=change), settings) != folder, change
    assert tiny.path is not None
    (tiny.path / "arch.json").write_text((tiny.path / "arch.json").read_text().replace('"layers": 2', '"layers": 1'))
    assert cache_folder(tiny, settings) != folder


def test_the_default_cache_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert cache_root(Settings(cache_dir=tmp_path)) == tmp_path
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root(Settings(cache_dir=None)) == tmp_path / "xdg" / "clipserve"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_root(Settings(cache_dir=None)) == Path.home() / ".cache" / "clipserve"


def test_the_demo_models_export_is_reused(demo_onnx: ModelConfig, clipserve_cache: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    demo = resolve_model("clipserve-demo", REPO_MODELS_DIR)
    assert demo.backend == "onnx" and demo.onnx is not None and demo.onnx.precision == "fp32"
    if demo_onnx is demo:
        pytest.skip("models/clipserve-demo/onnx/ holds an export (made in place): the cache is not used")
    assert demo_onnx.path == cache_folder(demo, Settings(cache_dir=clipserve_cache))
    calls = count_exports(monkeypatch)
    assert ensure_onnx(demo, Settings(model_dir=REPO_MODELS_DIR)) == demo_onnx  # the session's CLIPSERVE_CACHE_DIR
    assert not calls


async def test_the_demo_model_is_served_on_onnx_by_default(demo_onnx: ModelConfig) -> None:
    """Default settings (model, model dir, backend): GET /models reports ONNX Runtime."""
    async with serve(Settings(grpc_port=0)) as client:
        response = await client.get("/models")
    assert response.status_code == 200
    (info,) = response.json()["data"]
    assert (info["id"], info["backend"], info["precision"]) == ("clipserve-demo", "onnx", "fp32")
    assert info["providers"] == ["CPUExecutionProvider"]


def auto_tiny(model_dir: Path, name: str = "tiny-auto", weights: str | None = None) -> ModelConfig:
    """The tiny model as a repository entry that names no backend (``auto``: ONNX Runtime by default)."""
    config = write_tiny(model_dir, name).model_copy(update={"backend": "auto", "weights": weights})
    assert config.path is not None
    write_config(config, config.path)
    return read_config(config.path)


async def test_a_failed_export_falls_back_to_torch_with_one_line(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """A real failure: the cache folder cannot be made (the cache dir is a file). The model is served on
    torch; one warning names the reason, and /models says it."""
    auto_tiny(tmp_path / "models")
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder should be")
    settings = make_settings(tmp_path / "models", model="tiny-auto", cache_dir=blocked, warmup=False)
    with caplog.at_level(logging.WARNING, logger="service.runtime.onnx_cache"):
        async with serve(settings) as client:
            (card,) = (await client.get("/models")).json()["data"]
            response = await client.post("/embed", json={"inputs": [{"text": "still served"}]})
    assert response.status_code == 200 and len(response.json()["data"][0]["embedding"]) == 32
    assert card["backend"] == "torch" and card["backend_reason"].startswith("export failed: ")
    assert str(blocked) in card["backend_reason"]  # the reason names what failed
    fallbacks = [r.getMessage() for r in caplog.records if "serving on torch" in r.getMessage()]
    assert len(fallbacks) == 1 and card["backend_reason"] in fallbacks[0], fallbacks


def test_a_forced_onnx_backend_does_not_fall_back(tmp_path: Path) -> None:
    config = auto_tiny(tmp_path / "models")
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file")
    with pytest.raises(OSError):
        choose_backend(config, Settings(model_dir=tmp_path / "models", cache_dir=blocked, backend="onnx"))
    assert choose_backend(config, Settings(cache_dir=blocked, backend="torch")).reason == "forced by --backend torch"


def test_the_key_reads_no_weights_and_the_stored_digest_is_checked_on_demand(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The key is a stat of the weights file: the same size and mtime with other bytes reuse the export,
    unless ``onnx_cache_verify`` compares the digests stored at export (then it exports again)."""
    from service.clip.loading import arch_config, build_model

    config = auto_tiny(tmp_path / "models", weights="weights.pt")
    weights = config.resolve("weights.pt")

    def save(seed: int) -> None:
        torch.save(build_model(arch_config(config)[0], seed=seed).state_dict(), weights)

    save(1)
    settings = Settings(model_dir=tmp_path / "models", cache_dir=tmp_path / "cache")
    calls = count_exports(monkeypatch)
    first = choose_backend(config, settings)
    assert first.reason.startswith("exported on first start") and len(calls) == 1
    folder = cache_folder(config, settings)
    stored = json.loads((folder / DIGESTS_FILE).read_text())
    assert stored == {str(weights.resolve()): hashlib.sha256(weights.read_bytes()).hexdigest()}

    status = weights.stat()
    save(2)  # other weights, same size; the modification time put back
    os.utime(weights, ns=(status.st_atime_ns, status.st_mtime_ns))
    assert weights.stat().st_size == status.st_size and cache_folder(config, settings) == folder
    assert choose_backend(config, settings).reason == f"the ONNX export cached in {folder}" and len(calls) == 1

    verify = settings.model_copy(update={"onnx_cache_verify": True})
    with caplog.at_level(logging.WARNING, logger="service.runtime.onnx_cache"):
        again = choose_backend(config, verify)
    assert again.reason.startswith("exported on first start") and len(calls) == 2
    assert any("weights differ from the digests" in r.getMessage() for r in caplog.records)
    assert choose_backend(config, verify).reason == f"the ONNX export cached in {folder} (digest verified)"
    assert len(calls) == 2

    os.utime(weights, ns=(status.st_atime_ns, status.st_mtime_ns + 1_000_000_000))  # touched: another key
    assert cache_folder(config, settings) != folder


def test_entries_sharing_an_export_each_keep_their_own_tokenizer_folder(tmp_path: Path, tiny_repo: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Entries of one name and equal graphs in two model repositories (two servers, one cache) share one
    cached export; each still tokenizes with its own files."""
    entries = []
    for repo in ("first", "second"):
        entry = write_tiny(tmp_path / repo).model_copy(update={"tokenizer": "tok"})
        (entry.path / "tok").mkdir()  # type: ignore[operator]
        entries.append(entry)
    settings = Settings(model_dir=tmp_path / "first", cache_dir=tmp_path / "cache", backend="onnx")
    calls = count_exports(monkeypatch, copy_export(tiny_repo / "tiny-onnx"))
    served = [ensure_onnx(entry, settings) for entry in entries]
    assert len(calls) == 1 and served[0].path == served[1].path  # one export, shared
    for entry, config in zip(entries, served, strict=True):
        assert (config.name, config.tokenizer) == (entry.name, str((entry.path / "tok").resolve()))  # type: ignore[operator]
