"""The package's architecture, checked by reading the source with ``ast`` (nothing is imported).

* Layers: a room (``service/<room>``) imports only rooms in lower layers (peers in one layer do
  not import each other), ``client`` stands beside the server sharing only ``protocol``, and only
  ``cli`` imports ``measure`` or ``client``. Every import counts: module level, inside functions,
  under ``TYPE_CHECKING``, and module names given as strings (``cli`` loads its subcommands with
  ``importlib.import_module``).
* No import cycles among the modules of ``service/``: only imports that run when a module is
  imported count (module and class level, not functions, not ``TYPE_CHECKING``).
* No module over ``MAX_LINES`` lines, generated code aside.
* ``service.protocol`` needs only numpy, grpcio and protobuf; ``service.client`` none of the
  server's dependencies.

docs/architecture.md describes the layers; change both together.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "service"
GENERATED = PACKAGE / "protocol" / "generated"
MAX_LINES = 400

# Lowest first. A room may import rooms of lower layers only; rooms of one layer are peers.
LAYERS: list[set[str]] = [
    {"protocol"},  # shared by server and client: error kinds, headers, ModelInfo, wire, generated gRPC
    {"auth"},  # the API key set and its constant-time check (config reads the key file through it)
    {"errors", "config", "logs", "metrics", "memory"},
    {"clip"},  # model code
    {"runtime", "export"},  # backends; the ONNX export library
    {"batching"},
    {"engine"},
    {"rest", "grpc", "measure"},  # the front ends; the accuracy and serving benchmark libraries
    {"server"},
    {"cli"},
    {"__main__"},  # python -m service
]
# Beside the layers: the client shares only the protocol with the server.
CLIENT_MAY_IMPORT = {"client", "protocol", ""}
# Rooms that only the command line uses.
ONLY_CLI_IMPORTS = {"measure": {"cli"}, "client": {"cli"}}
# Peer imports allowed, (importing module, imported room): the cache exports missing ONNX models.
PEER_EXCEPTIONS = {("service.runtime.onnx_cache", "export")}

# Modules that import each other from inside functions (no cycle at import time, but one unit in
# two files). Being merged; delete the entry when it is gone.
KNOWN_LAZY_CYCLES: set[frozenset[str]] = set()

# Third-party packages (top-level names); the standard library is always allowed.
PROTOCOL_THIRD_PARTY = {"numpy", "grpc", "google"}  # google.protobuf
PROTOCOL_DEV_ONLY = {"service.protocol.codegen": {"grpc_tools"}}
SERVER_ONLY = {
    "torch", "torchvision", "open_clip", "onnx", "onnxruntime", "onnxscript", "transformers", "safetensors",
    "fastapi", "starlette", "uvicorn", "pydantic", "pydantic_settings", "prometheus_client", "PIL",
}


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported name, absolute (a module of service/ or anything else)
    line: int
    runs_on_import: bool  # module or class level and not under TYPE_CHECKING
    by_string: bool = False


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def source_files() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_package(module: str) -> bool:
    return source_files()[module].name == "__init__.py"


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def resolve(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package(module) else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def walk(module: str, node: ast.AST, runs: bool) -> Iterator[Import]:
    for child in ast.iter_child_nodes(node):
        child_runs = runs
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            child_runs = False
        if isinstance(child, ast.Import):
            for alias in child.names:
                yield Import(module, alias.name, child.lineno, runs)
        elif isinstance(child, ast.ImportFrom):
            base = resolve(module, child)
            for alias in child.names:
                sub = f"{base}.{alias.name}"  # `from pkg import submodule` imports the submodule
                yield Import(module, sub if sub in source_files() else base, child.lineno, runs)
        elif isinstance(child, ast.If) and is_type_checking(child.test):
            for stmt in child.body:
                yield from walk(module, ast.Module(body=[stmt], type_ignores=[]), False)
            for stmt in child.orelse:
                yield from walk(module, ast.Module(body=[stmt], type_ignores=[]), runs)
            continue
        elif (
            isinstance(child, ast.Constant)
            and isinstance(child.value, str)
            and child.value in source_files()
            and child.value != module
        ):
            yield Import(module, child.value, child.lineno, False, by_string=True)
        yield from walk(module, child, child_runs)


@cache
def all_imports() -> tuple[Import, ...]:
    found: list[Import] = []
    for module, path in source_files().items():
        tree = ast.parse(path.read_text(), filename=str(path))
        found.extend(walk(module, tree, True))
    return tuple(found)


def internal(imp: Import) -> bool:
    return imp.target == "service" or imp.target.startswith("service.")


def room(module: str) -> str:
    """``service.engine.core`` -> ``engine``; ``service.errors`` -> ``errors``; ``service`` -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer(room_name: str) -> int:
    for index, rooms in enumerate(LAYERS):
        if room_name in rooms:
            return index
    raise KeyError(room_name)


def layer_violation(imp: Import) -> str | None:
    """Why ``imp`` breaks the layering, or None."""
    src, dst = room(imp.source), room(imp.target)
    if src == dst:
        return None
    if src == "":
        return "the `service` package itself holds only __version__ and imports nothing"
    if dst == "":
        return None  # `from service import __version__`
    if src == "client":
        return None if dst in CLIENT_MAY_IMPORT else "the client shares only service.protocol with the server"
    if dst in ONLY_CLI_IMPORTS and src not in ONLY_CLI_IMPORTS[dst]:
        return f"only {sorted(ONLY_CLI_IMPORTS[dst])} may import {dst}"
    if dst == "client":
        return None
    placed = set().union(*LAYERS)
    if src not in placed or dst not in placed:
        return f"{src if src not in placed else dst} is in no layer (add it to LAYERS, or fix the import)"
    if layer(src) > layer(dst):
        return None
    if layer(src) == layer(dst):
        if (imp.source, dst) in PEER_EXCEPTIONS:
            return None
        return f"{src} and {dst} are peers"
    return f"{src} is below {dst}"


def describe(imp: Import) -> str:
    path = source_files()[imp.source].relative_to(ROOT)
    how = " (by name)" if imp.by_string else ""
    return f"{path}:{imp.line} imports {imp.target}{how}"


def module_graph(lazy: bool = False) -> dict[str, set[str]]:
    """Edges that run on import (with ``lazy``, also those in functions and under TYPE_CHECKING).
    Importing ``a.b.c`` also runs the packages ``a.b`` and ``a`` unless the importer is inside them
    (then they are already being imported)."""
    modules = source_files()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for imp in all_imports():
        if not internal(imp) or imp.by_string or not (imp.runs_on_import or lazy):
            continue
        target = imp.target
        while target and target not in modules:  # `from service.x import name`: the module service.x
            target = target.rpartition(".")[0]
        parts = target.split(".")
        for depth in range(1, len(parts) + 1):
            ancestor = ".".join(parts[:depth])
            inside = ancestor == imp.source or imp.source.startswith(ancestor + ".")
            if ancestor in modules and not inside:  # a folder without __init__.py runs nothing
                graph[imp.source].add(ancestor)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components with more than one module, or a self-import."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1 or node in graph[node]:
                        found.append(sorted(component))
    return found


def top_level(name: str) -> str:
    return name.split(".")[0]


# --- the parser itself -----------------------------------------------------------------------------


def test_the_parser_sees_the_known_imports() -> None:
    edges = {(i.source, i.target) for i in all_imports()}
    assert ("service.server", "service.rest.app") in edges
    assert ("service.engine.served_model", "service.batching.batcher") in edges
    assert ("service.grpc.servicer", "service.grpc.convert") in edges  # `from service.grpc import convert`
    assert ("service.runtime.onnx_cache", "service.export") in edges  # inside a function
    assert ("service.engine.zeroshot", "service.engine.served_model") in edges  # under TYPE_CHECKING
    assert ("service.cli", "service.client.cli") in edges  # importlib.import_module by name
    assert len(source_files()) > 60 and len(all_imports()) > 300


def test_the_parser_tells_what_runs_on_import() -> None:
    by_edge = {(i.source, i.target): i.runs_on_import for i in all_imports()}
    assert by_edge[("service.engine.core", "service.engine.zeroshot")] is True
    assert by_edge[("service.engine.zeroshot", "service.engine.served_model")] is False  # TYPE_CHECKING
    assert by_edge[("service.runtime.onnx_cache", "service.export")] is False  # in a function
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "d"}, "e": set()}
    assert sorted(strongly_connected(graph)) == [["a", "b", "c"], ["d"]]


def test_every_room_has_a_layer() -> None:
    rooms = {room(m) for m in source_files()} - {"", "client"}
    placed = set().union(*LAYERS)
    assert rooms <= placed, f"add {sorted(rooms - placed)} to LAYERS (and docs/architecture.md)"
    assert placed <= rooms, f"rooms in LAYERS that no longer exist: {sorted(placed - rooms)}"


def test_the_rules_reject_what_they_should() -> None:
    def why(source: str, target: str) -> str | None:
        return layer_violation(Import(source, target, 1, True))

    assert why("service.engine.core", "service.rest.app") == "engine is below rest"
    assert why("service.rest.app", "service.grpc.server") == "rest and grpc are peers"
    assert why("service.export.onnx", "service.runtime.base") == "export and runtime are peers"
    assert why("service.client.rest", "service.errors") is not None
    assert why("service.server", "service.measure.serving") is not None
    assert why("service.runtime.onnx_cache", "service.export") is None
    assert why("service.cli.bench", "service.measure.serving") is None
    assert why("service.rest.app", "service") is None
    assert why("service.rest.app", "service.api.routes") is not None  # a room that does not exist


# --- the architecture ------------------------------------------------------------------------------


def test_layers_point_down() -> None:
    bad = [f"{describe(i)}: {why}" for i in all_imports() if internal(i) and (why := layer_violation(i))]
    assert not bad, "layering broken:\n" + "\n".join(bad)


def test_no_import_cycles() -> None:
    cycles = strongly_connected(module_graph())
    assert not cycles, "import cycles (module-level imports): " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_cycles_through_lazy_imports() -> None:
    cycles = {frozenset(c) for c in strongly_connected(module_graph(lazy=True))} - KNOWN_LAZY_CYCLES
    assert not cycles, "modules that import each other (some inside functions): " + "; ".join(
        " <-> ".join(sorted(c)) for c in cycles
    )


@pytest.mark.parametrize(
    "folder",
    sorted(
        str(d.relative_to(PACKAGE))
        for d in PACKAGE.rglob("*")
        if d.is_dir() and d.name != "__pycache__" and any(d.glob("*.py"))
    ),
)
def test_folders_are_packages(folder: str) -> None:
    assert (PACKAGE / folder / "__init__.py").is_file(), f"service/{folder}/ has modules but no __init__.py"


def test_modules_are_small() -> None:
    big = {
        str(path.relative_to(ROOT)): n
        for path in source_files().values()
        if GENERATED not in path.parents and (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not big, f"modules over {MAX_LINES} lines: {big}"


def test_protocol_needs_only_numpy_grpc_and_protobuf() -> None:
    stdlib = set(sys.stdlib_module_names)
    bad = [
        describe(i)
        for i in all_imports()
        if room(i.source) == "protocol"
        and not internal(i)
        and (name := top_level(i.target)) not in stdlib | {"__future__"} | PROTOCOL_THIRD_PARTY
        and name not in PROTOCOL_DEV_ONLY.get(i.source, set())
    ]
    assert not bad, "service.protocol is shared with the client:\n" + "\n".join(bad)


def test_client_needs_none_of_the_server_dependencies() -> None:
    bad = [
        describe(i)
        for i in all_imports()
        if room(i.source) in {"client", "protocol"} and top_level(i.target) in SERVER_ONLY
    ]
    assert not bad, "the client installs without the server's dependencies:\n" + "\n".join(bad)

