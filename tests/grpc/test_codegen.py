"""The generated gRPC code is current: regenerating it from proto/ gives the same bytes."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.protocol import codegen


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (dev extra) is needed to regenerate")
    fresh = {p.relative_to(tmp_path) for p in codegen.generate(tmp_path)}
    committed = {
        p.relative_to(codegen.GENERATED)
        for p in codegen.GENERATED.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert fresh == committed, "regenerate with: python -m service.protocol.codegen"
    stale = [str(p) for p in sorted(fresh) if (tmp_path / p).read_bytes() != (codegen.GENERATED / p).read_bytes()]
    assert not stale, f"stale generated files {stale}: regenerate with python -m service.protocol.codegen"


def test_generated_package_imports_under_service() -> None:
    from service.protocol.generated.clipserve.v1 import clipserve_pb2, clipserve_pb2_grpc

    assert clipserve_pb2.DESCRIPTOR.package == "clipserve.v1"
    assert clipserve_pb2_grpc.ClipServiceStub.__module__ == "service.protocol.generated.clipserve.v1.clipserve_pb2_grpc"
