"""Helpers for the container tests (marker ``container``): podman, the images scripts/build_images.sh makes,
and waiting on a container's published ports.

The images are built once per test session by the build script itself (the same command the docs give),
so the test proves the script as well as the Dockerfile. Where podman cannot run, or the build fails for
lack of network (package registries unreachable), the tests skip saying so; any other build failure fails.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import time

import httpx
import pytest

from tests.deploy.conftest import ROOT

BUILD_SCRIPT = ROOT / "scripts" / "build_images.sh"
SLIM_IMAGE = "localhost/clipserve:cpu-onnx"
PROMETHEUS_IMAGE = "localhost/prometheus-debian:bookworm"
BUILD_TIMEOUT_S = 1500  # a guard: a first build on a clean 2-core machine takes about 5 minutes
NO_NETWORK = re.compile(
    r"Temporary failure in name resolution|Name or service not known|Network is unreachable|"
    r"Failed to establish a new connection|Could not resolve|Failed to fetch http|Connection timed out"
)
NO_PODMAN = 3  # the build script's exit status where podman cannot be had or run


def podman() -> str:
    """The podman command, or skip: the tests do not install it (.ci/run and scripts/build_images.sh do)."""
    found = shutil.which("podman")
    if found is None:
        pytest.skip("podman is not installed (apt-get install podman buildah runc, or run scripts/build_images.sh "
                    "as root)")
    return found


def run(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``podman ARGS``; its output captured. ``check``: fail the test, with podman's stderr, on a non-zero exit."""
    out = subprocess.run([podman(), *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert out.returncode == 0, f"podman {' '.join(args)} failed ({out.returncode}):\n{out.stderr}"
    return out


@functools.cache
def build(variant: str) -> str:
    """Build ``variant`` with scripts/build_images.sh (once per session); its image name. Skips where podman
    cannot run here or the registries cannot be reached; fails on any other build error."""
    podman()
    env = {**os.environ, "PYTHON": sys.executable}
    begin = time.monotonic()
    out = subprocess.run([str(BUILD_SCRIPT), variant], capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
                         env=env, cwd=ROOT)
    log = out.stdout + out.stderr
    if out.returncode == NO_PODMAN:
        pytest.skip(f"podman cannot run containers here: {log.strip().splitlines()[-1]}")
    if out.returncode != 0 and NO_NETWORK.search(log):
        pytest.skip(f"the image build could not reach a package registry: {NO_NETWORK.search(log)[0]}")  # type: ignore[index]
    assert out.returncode == 0, f"scripts/build_images.sh {variant} failed:\n{log[-6000:]}"
    print(f"\nbuild {variant}: {time.monotonic() - begin:.0f} s; {out.stdout.strip()}")
    return PROMETHEUS_IMAGE if variant == "prometheus" else f"localhost/clipserve:{variant}"


def image_size_mb(image: str) -> float:
    """The image's size as podman reports it (uncompressed), in MB."""
    return int(run("image", "inspect", "--format", "{{.Size}}", image).stdout) / 1e6


def published(container: str, port: int) -> str:
    """``host:port`` where the container's ``port`` is published."""
    mapping = run("port", container, f"{port}/tcp").stdout.split()
    assert mapping, f"{container}: port {port} is not published"
    return mapping[0].replace("0.0.0.0:", "127.0.0.1:")


def wait_ready(container: str, url: str, timeout_s: float) -> float:
    """Poll ``url``/readyz until 200; seconds it took. Fails with the container's log if it stops first."""
    begin = time.monotonic()
    while time.monotonic() - begin < timeout_s:
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return time.monotonic() - begin
        except httpx.TransportError:
            pass
        state = run("inspect", "--format", "{{.State.Status}}", container).stdout.strip()
        assert state == "running", f"{container} is {state}:\n{logs(container)}"
        time.sleep(0.25)
    raise AssertionError(f"{container} not ready after {timeout_s:.0f} s:\n{logs(container)}")


def logs(container: str) -> str:
    """The container's output (the tail)."""
    out = run("logs", container, check=False)
    return (out.stdout + out.stderr)[-6000:]


def remove(*containers: str) -> None:
    """Remove containers, running or not."""
    run("rm", "--force", "--ignore", *containers, check=False, timeout=120)
