"""The client-only install: base dependencies, what the client imports, and the server's install sites.

``pip install clipserve`` is the Python client (numpy, httpx, grpcio, protobuf, tqdm);
``clipserve[server]`` serves; ``clipserve[torch]`` and ``clipserve[dev]`` bring the server too.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import tomllib

from tests.client.client_only import CLIENT_PACKAGES, SERVER_MODULES
from tests.grpc.helpers import DIM, LiveServer

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
CLIENT_DEPENDENCIES = {"numpy", "httpx", "grpcio", "protobuf", "tqdm"}
SERVER_ONLY = {
    "fastapi", "uvicorn", "httptools", "uvloop", "pydantic", "pydantic-settings", "python-multipart", "pillow",
    "ftfy", "regex", "prometheus-client", "grpcio-health-checking", "grpcio-reflection", "onnxruntime",
    "safetensors", "torch", "torchvision", "open-clip-torch", "onnx", "onnxscript",
}
# The distribution of each third-party module the client imports.
DISTRIBUTION = {"numpy": "numpy", "httpx": "httpx", "grpc": "grpcio", "google": "protobuf", "tqdm": "tqdm"}
OPTIONAL = {"pyarrow"}  # imported only to write .parquet, with a message naming it when missing


def _name(requirement: str) -> str:
    """The normalised distribution name of a requirement string."""
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group()).lower()


def _extras(requirement: str) -> set[str]:
    """The extras of a ``clipserve[...]`` requirement."""
    match = re.match(r"clipserve\[([\w,\s-]+)\]", requirement)
    return {e.strip() for e in match.group(1).split(",")} if match else set()


def extras_closure(extras: set[str]) -> set[str]:
    """The extras, with those they bring through ``clipserve[...]``."""
    found, todo = set(), set(extras)
    while todo:
        extra = todo.pop()
        found.add(extra)
        for requirement in PROJECT["optional-dependencies"][extra]:
            todo |= _extras(requirement) - found
    return found


def _run_client_only(live: LiveServer, workdir: Path, mode: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests/client/client_only.py"), live.rest_url, live.grpc_url, str(workdir), mode],
        capture_output=True, text=True, timeout=120, env=env, cwd=workdir,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return report


@pytest.mark.parametrize("mode", ["installed", "absent"])
def test_the_client_runs_in_a_fresh_interpreter_without_the_servers_packages(
    live: LiveServer, tmp_path: Path, mode: str
) -> None:
    """``installed``: nothing loads them although they are there; ``absent``: it works where they are not."""
    report = _run_client_only(live, tmp_path, mode)
    assert report["forbidden"] == []
    for url in (live.rest_url, live.grpc_url):
        assert report[f"blocking {url}"] == report[f"asyncio {url}"] == [3, DIM]
    assert report["stream"] == ["t0", "t1", "t2"]
    assert report["clipserve client"] == 0 and (tmp_path / "emb.npy").is_file()
    if mode == "absent":
        assert report["clipserve serve"] == 2
        message = report["clipserve serve stderr"]
        assert message.count("\n") == 1 and "not available in this install" in message
        assert "pip install 'clipserve[server]'" in message


def test_base_dependencies_are_the_clients_and_the_extras_bring_the_server() -> None:
    base = {_name(r) for r in PROJECT["dependencies"]}
    assert base == CLIENT_DEPENDENCIES
    server = {_name(r) for r in PROJECT["optional-dependencies"]["server"]}
    assert SERVER_ONLY - {"torch", "torchvision", "open-clip-torch", "onnx", "onnxscript"} <= server
    for extra in ("torch", "dev"):
        assert "server" in extras_closure({extra}), f"clipserve[{extra}] does not bring the server"
    assert "server" not in extras_closure({"gpu"})  # scripts/gpu_check.sh installs gpu's list as it is


def _client_sources() -> list[Path]:
    protocol = [p for p in (ROOT / "service/protocol").rglob("*.py") if p.name != "codegen.py"]
    entry = [ROOT / "service/__init__.py", ROOT / "service/cli/__init__.py"]
    return sorted((ROOT / "service/client").glob("*.py")) + protocol + entry


def test_what_the_client_imports_is_in_the_base_dependencies() -> None:
    """Every import in the client, the shared protocol and the command's entry point (also lazy ones)."""
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    for path in _client_sources():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.partition(".")[0]
                where = f"{path.relative_to(ROOT)} imports {name}"
                if top == "service":
                    assert name == "service" or name.startswith(CLIENT_PACKAGES), where
                elif top not in stdlib | OPTIONAL:
                    assert DISTRIBUTION.get(top) in CLIENT_DEPENDENCIES, where
                assert top not in SERVER_MODULES, where


_PROJECT_SPEC = re.compile(r"""(?:^|\s)["']?\./?(\[[\w,-]+\])?["']?(?=\s|;|$)""")


@pytest.mark.parametrize(("site", "count"), [("Dockerfile", 4), ("Makefile", 2), ("scripts/gpu_check.sh", 1)])
def test_every_install_site_installs_the_server(site: str, count: int) -> None:
    """Each ``pip install`` of the project names an extra that brings the server."""
    specs = []
    for line in (ROOT / site).read_text().splitlines():
        if re.search(r"pip[_ ]install", line) and not line.lstrip().startswith("#"):
            specs += _PROJECT_SPEC.findall(line)
    assert len(specs) == count, specs
    for spec in specs:
        extras = set(spec.strip("[]").split(",")) if spec else set()
        assert "server" in extras_closure(extras), f"{site}: installs the project as {spec or 'plain .'}"
