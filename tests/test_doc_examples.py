"""Every shell and Python example in README.md and docs/*.md runs against one live demo server.

Examples are the fenced blocks tagged ``bash``, ``sh``, ``shell``, ``console`` or ``python``, and the
4-space indented blocks whose first line is a command (``clipserve ...``, ``.venv/bin/...``, ``pip ...``).
A block that cannot run here carries an HTML comment on the line before it (blank lines between are
allowed), naming why, which this test gives as the skip reason::

    <!-- example: skip (needs the internet) -->

Every other block runs, one test per block (id ``file:line``), in a temporary folder that holds the
files the examples name (``cat.jpg``, ``dog.png``, ``photos/``, ``captions.txt``...), with
``localhost:8000`` / ``127.0.0.1:8000`` and ``:50051`` rewritten to the test server's ports and
``$CLIPSERVE_URL`` set to it. Shell blocks run under ``bash`` with ``set -e`` (each command must
succeed) and ``curl`` answering non-zero on an HTTP error (``--fail-with-body``), ``.venv/bin`` first on
``PATH``; Python blocks run with this interpreter. A block fails when it exits non-zero.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.api.server_process import REPO, ServerProcess, free_port

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SKIP = re.compile(r"<!--\s*example:\s*skip\s*\((?P<why>.+)\)\s*-->")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w-]*)\s*$")
SHELL = {"bash", "sh", "shell", "console"}
PYTHON = {"python", "py"}
COMMAND = re.compile(r"^(clipserve|\.venv/bin/|pip |python|grpcurl |curl |make |bash |docker |kubectl |helm )")
BLOCK_TIMEOUT_S = 120

SHELL_PRELUDE = """set -e
curl() { command curl --fail-with-body "$@"; }
"""


@dataclass(frozen=True)
class Block:
    """One example: where it is, its language (``shell`` or ``python``), its code and why it is skipped."""

    file: str
    line: int
    lang: str
    code: str
    skip: str | None

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}"


def _skip_reason(lines: list[str], start: int) -> str | None:
    """The reason of the skip marker on the last non-blank line before line ``start`` (0-based), if any."""
    i = start - 1
    while i >= 0 and not lines[i].strip():
        i -= 1
    match = SKIP.search(lines[i]) if i >= 0 else None
    return match.group("why").strip() if match else None


def extract(path: Path, name: str | None = None) -> list[Block]:
    """The shell and Python examples of one Markdown file, in order; ``name`` (default: the path in the repo)."""
    name = name or path.relative_to(REPO).as_posix()
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if fence:
            indent, lang = len(fence.group("indent")), fence.group("lang").lower()
            end = i + 1
            while end < len(lines) and lines[end].strip() != "```":
                end += 1
            body = [line[indent:] if line[:indent].strip() == "" else line.lstrip() for line in lines[i + 1 : end]]
            kind = "shell" if lang in SHELL else "python" if lang in PYTHON else None
            if kind is not None:
                blocks.append(Block(name, i + 1, kind, "\n".join(body) + "\n", _skip_reason(lines, i)))
            i = end + 1
            continue
        starts_block = lines[i].startswith("    ") and (i == 0 or not lines[i - 1].strip())
        if starts_block and COMMAND.match(lines[i].strip()):
            end = i
            while end < len(lines) and (lines[end].startswith("    ") or not lines[end].strip()):
                end += 1
            body = [line[4:] for line in lines[i:end]]
            blocks.append(Block(name, i + 1, "shell", "\n".join(body).strip("\n") + "\n", _skip_reason(lines, i)))
            i = end
            continue
        i += 1
    return blocks


BLOCKS = [block for doc in DOCS for block in extract(doc)]


def rewrite(code: str, rest_port: int, grpc_port: int) -> str:
    """Point the example at the test server."""
    code = re.sub(r"\b(localhost|127\.0\.0\.1):8000\b", f"127.0.0.1:{rest_port}", code)
    return re.sub(r":50051\b", f":{grpc_port}", code)


@dataclass
class Demo:
    """The live server and the folder the examples run in."""

    rest_port: int
    grpc_port: int
    cwd: Path
    env: dict[str, str]
    log: Path


def _image(seed: int, fmt: str) -> bytes:
    """A small photo-like picture (a smooth gradient with a coloured disc) in ``fmt``."""
    from PIL import Image, ImageDraw

    image = Image.linear_gradient("L").resize((96, 96)).convert("RGB")
    draw = ImageDraw.Draw(image)
    draw.ellipse((20 + seed * 7, 18, 70 + seed * 5, 80), fill=(200 - seed * 40, 60 + seed * 50, 90))
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def _workdir(root: Path) -> Path:
    """The files the examples name: cat.jpg, dog.jpg, cat.png, dog.png, photos/, captions.txt."""
    cwd = root / "examples"
    (cwd / "photos" / "sub").mkdir(parents=True)
    for seed, name in enumerate(["cat", "dog"]):
        (cwd / f"{name}.jpg").write_bytes(_image(seed, "JPEG"))
        (cwd / f"{name}.png").write_bytes(_image(seed, "PNG"))
    (cwd / "photos" / "a.jpg").write_bytes(_image(2, "JPEG"))
    (cwd / "photos" / "sub" / "b.png").write_bytes(_image(3, "PNG"))
    (cwd / "captions.txt").write_text("a photo of a cat\n\na photo of a dog\n", encoding="utf-8")
    return cwd


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """One real server for the module: the demo model, REST and gRPC on free ports."""
    root = tmp_path_factory.mktemp("doc-examples")
    grpc_port = free_port()
    server = ServerProcess(root / "server.log", "--model", "clipserve-demo", "--grpc-port", str(grpc_port))
    try:
        server.wait_ready(timeout_s=240)
        env = dict(os.environ)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env["CLIPSERVE_URL"] = server.url
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        env.pop("CLIPSERVE_API_KEY", None)
        yield Demo(server.port, grpc_port, _workdir(root), env, server.log)
    finally:
        server.stop()


SAMPLE = """# Title

<!-- example: skip (needs the internet) -->
```bash
curl -s https://example.com
```

```json
{"not": "an example"}
```

Some text:

    clipserve client embed photos/ --out emb.npy
    clipserve client classify photos/ --label-set cifar10

prints (not a command):

    image   #1
    a.jpg   cat (0.9)

1. A list item with a fence inside:
   ```python
   import grpc
   ```
"""


def test_extract_reads_fences_indented_commands_and_markers(tmp_path: Path) -> None:
    doc = tmp_path / "sample.md"
    doc.write_text(SAMPLE, encoding="utf-8")
    blocks = extract(doc, "sample.md")
    assert [(b.id, b.lang, b.skip) for b in blocks] == [
        ("sample.md:4", "shell", "needs the internet"),
        ("sample.md:14", "shell", None),
        ("sample.md:23", "python", None),
    ]
    assert blocks[1].code.splitlines() == [
        "clipserve client embed photos/ --out emb.npy", "clipserve client classify photos/ --label-set cifar10"]
    assert blocks[2].code == "import grpc\n"
    assert rewrite("curl localhost:8000/x; grpc://127.0.0.1:50051 127.0.0.1:8000", 1234, 5678) == (
        "curl 127.0.0.1:1234/x; grpc://127.0.0.1:5678 127.0.0.1:1234"
    )


def test_the_docs_have_examples() -> None:
    """The extraction finds the documented examples, and every skip names its reason."""
    assert len(BLOCKS) >= 20, [b.id for b in BLOCKS]
    assert sum(b.skip is None for b in BLOCKS) >= 12
    for doc in DOCS:
        lines = doc.read_text(encoding="utf-8").splitlines()
        markers = [i + 1 for i, line in enumerate(lines) if "example: skip" in line]
        attached = {b.line for b in BLOCKS if b.file == doc.relative_to(REPO).as_posix() and b.skip}
        assert len(markers) == len(attached), f"{doc.name}: a skip marker with no example after it: {markers}"


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_doc_example(block: Block, request: pytest.FixtureRequest) -> None:
    if block.skip is not None:
        pytest.skip(f"{block.id}: {block.skip}")
    demo: Demo = request.getfixturevalue("demo")
    code = rewrite(block.code, demo.rest_port, demo.grpc_port)
    command = ["bash", "-c", SHELL_PRELUDE + code] if block.lang == "shell" else [sys.executable, "-c", code]
    try:
        done = subprocess.run(command, cwd=demo.cwd, env=demo.env, capture_output=True, text=True,
                              timeout=BLOCK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{block.id}: still running after {BLOCK_TIMEOUT_S} s:\n{code}")
    assert done.returncode == 0, (
        f"{block.id} ({block.lang}) exited {done.returncode}; if it cannot run here, mark it with "
        f"<!-- example: skip (why) --> on the line before it.\n--- code ---\n{code}\n"
        f"--- stdout ---\n{done.stdout[-3000:]}\n--- stderr ---\n{done.stderr[-3000:]}\n"
        f"--- server log (end) ---\n{demo.log.read_text(errors='replace')[-2000:]}"
    )
