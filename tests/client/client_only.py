"""Use the client the way a client-only install would; run in a fresh interpreter by test_install.py.

    python tests/client/client_only.py REST_URL GRPC_URL WORKDIR {installed,absent}

``absent`` first makes the server's packages unimportable (as in ``pip install clipserve``);
``installed`` leaves them importable, to show that nothing imports them anyway. The script embeds
over REST and gRPC (blocking and asyncio, chunked), streams over gRPC, runs ``clipserve client
embed`` and, with ``absent``, ``clipserve serve``. Its last line of output is a JSON report,
including the modules it loaded that a client must not.
"""

from __future__ import annotations

import asyncio
import importlib.abc
import io
import json
import sys
from collections.abc import Sequence
from contextlib import redirect_stderr
from pathlib import Path
from typing import Any

# Top-level modules of the packages only the server needs (pyproject's `server` and `torch` extras).
SERVER_MODULES = frozenset({
    "fastapi", "starlette", "uvicorn", "httptools", "uvloop", "pydantic", "pydantic_settings", "multipart",
    "python_multipart", "PIL", "ftfy", "regex", "prometheus_client", "grpc_health", "grpc_reflection",
    "onnxruntime", "safetensors", "torch", "torchvision", "open_clip", "onnx", "onnxscript",
})
# The parts of the package a client may load: the rest (service.engine, service.rest, service.runtime,
# service.grpc, service.config, ...) is the server's.
CLIENT_PACKAGES = ("service.client", "service.protocol", "service.cli")


class Absent(importlib.abc.MetaPathFinder):
    """Makes the server's packages unimportable, as where they are not installed."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.partition(".")[0] in SERVER_MODULES:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


# grpcio's own __init__ imports these when they are installed (as grpc.health, grpc.reflection).
GRPC_OPTIONAL = frozenset({"grpc_health", "grpc_reflection"})


def forbidden_modules() -> list[str]:
    """Loaded modules that a client must not load."""
    server = [m for m in sys.modules if m.partition(".")[0] in SERVER_MODULES - GRPC_OPTIONAL]
    ours = [m for m in sys.modules if m.startswith("service.") and not m.startswith(CLIENT_PACKAGES)]
    return sorted(server + ours)


def use_the_client(rest_url: str, grpc_url: str, workdir: Path) -> dict[str, Any]:
    """Every way in: both clients on both protocols, the stream, and the command line."""
    from service.cli import main as cli
    from service.client import AsyncClipClient, ClipClient
    from service.client.grpc import GrpcTransport

    texts = ["a dog", "a cat", "a car"]
    report: dict[str, Any] = {}
    for url in (rest_url, grpc_url):
        with ClipClient(url, chunk_size=2) as client:
            report[f"blocking {url}"] = list(client.embed_texts(texts).shape)

        async def aio(url: str = url) -> list[int]:
            async with AsyncClipClient(url, chunk_size=2) as client:
                return list((await client.embed_texts(texts)).shape)

        report[f"asyncio {url}"] = asyncio.run(aio())
    stream = GrpcTransport(grpc_url.removeprefix("grpc://"))
    try:
        pairs = ((f"t{i}", text) for i, text in enumerate(texts))
        report["stream"] = sorted(item_id for item_id, _ in stream.embed_stream(pairs))
    finally:
        stream.close()
    (workdir / "texts.txt").write_text("\n".join(texts), encoding="utf-8")
    report["clipserve client"] = cli(["client", "embed", "--texts", str(workdir / "texts.txt"),
                                      "--out", str(workdir / "emb.npy"), "--url", grpc_url])
    return report


def main(argv: Sequence[str]) -> None:
    rest_url, grpc_url, workdir, mode = argv
    if mode == "absent":
        sys.meta_path.insert(0, Absent())
    report = use_the_client(rest_url, grpc_url, Path(workdir))
    report["forbidden"] = forbidden_modules()
    if mode == "absent":
        from service.cli import main as cli

        with redirect_stderr(io.StringIO()) as err:
            report["clipserve serve"] = cli(["serve"])
        report["clipserve serve stderr"] = err.getvalue()
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])
