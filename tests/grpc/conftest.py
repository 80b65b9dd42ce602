"""Fixtures of the gRPC tests: a model repository with fake models, a server, a client stub."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from service.engine import Engine
from service.grpc.server import GrpcServer
from service.protocol.generated.clipserve.v1 import clipserve_pb2_grpc as pb_grpc
from tests.grpc.helpers import grpc_server, make_settings, write_model


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A model repository: ``fake`` (instant) and ``other`` (a second model)."""
    write_model(tmp_path, "fake")
    write_model(tmp_path, "other", dim=16)
    return tmp_path


@pytest.fixture
async def server(repo: Path) -> AsyncIterator[tuple[Engine, GrpcServer]]:
    """Engine (models fake, other) + gRPC server with default settings."""
    async with grpc_server(make_settings(repo, model="fake,other", max_items_per_request=64)) as pair:
        yield pair


@pytest.fixture
async def stub(server: tuple[Engine, GrpcServer]) -> AsyncIterator[pb_grpc.ClipServiceStub]:
    """A ClipService stub on a grpc.aio channel to ``server``."""
    async with grpc.aio.insecure_channel(server[1].address) as channel:
        yield pb_grpc.ClipServiceStub(channel)
