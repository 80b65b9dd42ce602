"""Start-up mistakes an operator can make: each ends with a non-zero exit and a line or two on stderr naming
the setting as written (``--port`` as a flag, ``CLIPSERVE_PORT`` in the environment), the value and what to do.

The traceback only with ``--log-level debug``; no line twice. Process-level cases run
``python -m service serve`` (the real start-up); settings refusals run ``service.cli.main`` in process.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service import __version__
from service.cli import main

REPO = Path(__file__).resolve().parents[1]
EXIT_S = 120.0
OFFLINE_BOUND_S = 30.0  # the probe gives up after 3 s; the rest is the interpreter and torch importing


def start(*flags: str, env: dict[str, str] | None = None) -> tuple[int, str, float]:
    """``python -m service serve`` with ``flags`` (no warm-up, gRPC off unless given); exit status, stderr, seconds."""
    command = [sys.executable, "-m", "service", "serve", "--no-warmup", *flags]
    if "--grpc-port" not in flags:
        command += ["--grpc-port", "0"]
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    begin = time.monotonic()
    done = subprocess.run(command, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=EXIT_S)
    return done.returncode, done.stderr, time.monotonic() - begin


def assert_short_refusal(status: int, err: str, *named: str) -> str:
    """Non-zero, no traceback, at most 3 lines, none twice; the ``clipserve serve:`` line names each of ``named``."""
    lines = err.strip().splitlines()
    assert status != 0, err
    assert "Traceback" not in err and len(lines) <= 3, err
    assert len(set(lines)) == len(lines), f"a line appears twice:\n{err}"
    message = [line for line in lines if line.startswith("clipserve serve:")]
    assert len(message) == 1, err
    for name in named:
        assert name in message[0], err
    return message[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port something else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_unknown_model_lists_the_repository_entries_and_the_closest_architectures() -> None:
    status, err, _ = start("--model", "nosuchmodel")
    message = assert_short_refusal(status, err, "--model nosuchmodel", "clipserve-demo", "open_clip")
    assert "closest" in message


def test_unknown_model_close_to_an_architecture_names_it() -> None:
    status, err, _ = start("--model", "ViT-B-3")
    assert_short_refusal(status, err, "--model ViT-B-3", "ViT-B-32")


def test_missing_model_dir_from_the_environment_names_the_variable() -> None:
    status, err, _ = start(env={"CLIPSERVE_MODEL_DIR": "/nonexistent"})
    message = assert_short_refusal(status, err, "CLIPSERVE_MODEL_DIR=/nonexistent", "does not exist")
    assert "unknown open_clip architecture" not in message


def test_missing_checkpoint_names_the_path() -> None:
    status, err, _ = start("--model", "ViT-B-32:/no/such/file.pt")
    assert_short_refusal(status, err, "--model ViT-B-32:/no/such/file.pt", "/no/such/file.pt", "does not exist")


def test_corrupt_checkpoint_is_one_line_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage, not a checkpoint\xff" * 10)
    status, err, _ = start("--model", f"ViT-B-32:{bad}")
    assert_short_refusal(status, err, f"--model ViT-B-32:{bad}", f"checkpoint file {bad}")


def test_offline_download_fails_fast_saying_how_to_fetch(tmp_path: Path) -> None:
    status, err, seconds = start("--model", "ViT-B-32:openai", "--cache-dir", str(tmp_path))
    message = assert_short_refusal(status, err, "--model ViT-B-32:openai", "cannot be reached", "--cache-dir")
    assert "ViT-B-32:/path/to/checkpoint" in message
    assert seconds < OFFLINE_BOUND_S, (seconds, err)


@pytest.mark.parametrize(("flag", "other"), [("--port", "--grpc-port"), ("--grpc-port", "--port")])
def test_a_port_in_use_names_the_flag(flag: str, other: str, busy_port: int) -> None:
    status, err, _ = start(flag, str(busy_port), other, "0")
    assert_short_refusal(status, err, f"{flag} {busy_port}", "address already in use")


def test_a_port_in_use_from_the_environment_names_the_variable(busy_port: int) -> None:
    status, err, _ = start(env={"CLIPSERVE_PORT": str(busy_port)})
    assert_short_refusal(status, err, f"CLIPSERVE_PORT={busy_port}", "address already in use")


def test_debug_log_level_shows_the_traceback() -> None:
    status, err, _ = start("--model", "nosuchmodel", "--log-level", "debug")
    assert status != 0 and "Traceback" in err and "--model nosuchmodel" in err, err


@pytest.mark.parametrize(
    ("flags", "env", "named"),
    [
        (["--port", "99999"], {}, "--port 99999"),
        (["--grpc-port", "-1"], {}, "--grpc-port -1"),
        ([], {"CLIPSERVE_PORT": "abc"}, "CLIPSERVE_PORT=abc"),
        ([], {"CLIPSERVE_DEVICE": "tpu"}, "CLIPSERVE_DEVICE=tpu"),
        (["--device", "cuda:x"], {}, "--device cuda:x"),
        ([], {"CLIPSERVE_LOG_LEVEL": "LOUD"}, "CLIPSERVE_LOG_LEVEL=LOUD"),
        # the admission, zero-shot, timeout and memory settings of the overload work
        (["--max-prompts", "0"], {}, "--max-prompts 0"),
        ([], {"CLIPSERVE_MAX_PROMPT_CHARS": "-5"}, "CLIPSERVE_MAX_PROMPT_CHARS=-5"),
        (["--max-class-jobs", "0"], {}, "--max-class-jobs 0"),
        (["--max-items-in-flight", "0"], {}, "--max-items-in-flight 0"),
        ([], {"CLIPSERVE_MAX_REQUESTS_IN_FLIGHT": "many"}, "CLIPSERVE_MAX_REQUESTS_IN_FLIGHT=many"),
        (["--max-body-bytes-in-flight", "0"], {}, "--max-body-bytes-in-flight 0"),
        (["--body-timeout-s", "0"], {}, "--body-timeout-s 0"),
        (["--header-timeout-s", "-1"], {}, "--header-timeout-s -1"),
        (["--keep-alive-timeout-s", "0"], {}, "--keep-alive-timeout-s 0"),
        (["--backlog", "0"], {}, "--backlog 0"),
        (["--max-connections", "-1"], {}, "--max-connections -1"),
        ([], {"CLIPSERVE_MALLOC_ARENA_MAX": "-1"}, "CLIPSERVE_MALLOC_ARENA_MAX=-1"),
        (["--cors-origins", "https://app.example/ui"], {}, "--cors-origins https://app.example/ui"),
        ([], {"CLIPSERVE_CORS_ORIGINS": "app.example"}, "CLIPSERVE_CORS_ORIGINS=app.example"),
        # image URLs
        (["--image-url-allowed-hosts", "10.0.0.0/33"], {}, "--image-url-allowed-hosts 10.0.0.0/33"),
        ([], {"CLIPSERVE_IMAGE_URL_ALLOWED_HOSTS": "ok.host,bad host"}, "'bad host' is neither a host name"),
        (["--image-url-timeout-s", "0"], {}, "--image-url-timeout-s 0"),
        (["--image-url-max-in-flight", "0"], {}, "--image-url-max-in-flight 0"),
        (["--image-url-connect-timeout-s", "-1"], {}, "--image-url-connect-timeout-s -1"),
        (["--image-url-max-redirects", "-1"], {}, "--image-url-max-redirects -1"),
        ([], {"CLIPSERVE_IMAGE_URLS": "sometimes"}, "CLIPSERVE_IMAGE_URLS=sometimes"),
        ([], {"CLIPSERVE_IMAGE_URL_ALLOW_PRIVATE": "2"}, "CLIPSERVE_IMAGE_URL_ALLOW_PRIVATE=2"),
        # the playground and the ONNX cache
        ([], {"CLIPSERVE_PLAYGROUND": "maybe"}, "CLIPSERVE_PLAYGROUND=maybe"),
        ([], {"CLIPSERVE_ONNX_CACHE_VERIFY": "always"}, "CLIPSERVE_ONNX_CACHE_VERIFY=always"),
    ],
)
def test_bad_settings_exit_2_with_one_line_naming_them_as_written(
    flags: list[str], env: dict[str, str], named: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["serve", *flags]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "invalid settings" in err and named in err, err


@pytest.mark.parametrize("level", ["debug", "Warning", "INFO"])
def test_log_levels_are_case_insensitive(level: str) -> None:
    from service.config import Settings

    assert Settings(log_level=level).log_level == level.upper()


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:1"])
def test_devices_accepted(device: str) -> None:
    from service.config import Settings

    assert Settings(device=device).device == device


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"clipserve {__version__}"


def test_serve_help_describes_model_names_and_shows_real_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    from service.config import Settings

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for words in ("repository entr", "ARCH:PRETRAINED", "ARCH:/path/to/checkpoint", "Hugging Face CLIP folder"):
        assert words in text, text
    settings = Settings()
    assert f"default: {settings.model_dir}" in text and "computed" not in text
    assert f"CLIPSERVE_PREPROCESS_THREADS; default: {settings.preprocess_threads})" in text


def test_hub_probe_offline_unreachable_and_reachable(monkeypatch: pytest.MonkeyPatch, busy_port: int) -> None:
    """The probe: HF_HUB_OFFLINE wins; a refused connection is unreachable; a listening host is reachable."""
    from huggingface_hub import constants

    from service.clip.loading import hub_reachable

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{busy_port}")
    assert hub_reachable(timeout_s=1.0)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        refused = closed.getsockname()[1]
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{refused}")
    assert not hub_reachable(timeout_s=1.0)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{busy_port}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert not hub_reachable(timeout_s=1.0)


def test_rest_bind_failure_inside_uvicorn_names_the_port(busy_port: int) -> None:
    """Past the early check (a port taken meanwhile), uvicorn's exit becomes a SettingError naming --port."""
    import asyncio

    import uvicorn

    from service.config import SettingError
    from service.server import RestServer

    async def app(scope: object, receive: object, send: object) -> None:  # never called
        raise AssertionError

    config = uvicorn.Config(app, host="127.0.0.1", port=busy_port, log_config=None, lifespan="off")
    config.load()
    server = RestServer(config)
    server.lifespan = config.lifespan_class(config)  # as uvicorn's Server._serve sets it up
    with pytest.raises(SettingError) as refused:
        asyncio.run(server.startup())
    assert refused.value.setting == "port"


def test_a_checkpoint_of_another_architecture_names_both(tmp_path: Path) -> None:
    import torch

    from service.clip.loading import build_model

    vision = {"image_size": 32, "patch_size": 16, "width": 32, "layers": 1, "head_width": 16}
    tiny = {"embed_dim": 16, "vision_cfg": vision,
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    other = tmp_path / "tiny.pt"
    torch.save(build_model(tiny).state_dict(), other)
    status, err, _ = start("--model", f"ViT-B-32:{other}", "--backend", "torch")
    assert_short_refusal(status, err, f"--model ViT-B-32:{other}", "is not a ViT-B-32 checkpoint", "of other shapes")


def _entry(model_dir: Path, tokenizer: str) -> None:
    entry = model_dir / "hf-tok"
    entry.mkdir(parents=True)
    (entry / "config.json").write_text(
        f'{{"name": "hf-tok", "architecture": "ViT-B-32", "tokenizer": "{tokenizer}"}}'
    )


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_a_tokenizer_folder_missing_or_corrupt_names_the_model_and_how_to_give_it(tmp_path: Path, damage: str) -> None:
    folder = tmp_path / "tokenizer"
    if damage == "corrupt":
        folder.mkdir()
        (folder / "tokenizer.json").write_text('{"version": "1.0", "model": ')
    _entry(tmp_path / "models", str(folder))
    status, err, _ = start("--model-dir", str(tmp_path / "models"), "--model", "hf-tok", "--backend", "torch")
    expected = "does not exist" if damage == "missing" else "cannot be read"
    assert_short_refusal(status, err, "--model hf-tok", str(folder), expected, '"tokenizer": "/path/to/folder"')


def test_siglip_offline_without_its_tokenizer_says_so(tmp_path: Path) -> None:
    """On main this started and failed at warm-up with a bare IndexError (CLIP ids in a 32,000-token vocabulary)."""
    status, err, _ = start("--model", "ViT-B-16-SigLIP", "--backend", "torch", "--cache-dir", str(tmp_path))
    assert_short_refusal(status, err, "--model ViT-B-16-SigLIP", "hf-hub:timm/ViT-B-16-SigLIP", "offline",
                         '"tokenizer": "/path/to/folder"')
