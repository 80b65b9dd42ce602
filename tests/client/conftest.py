"""Fixtures of the client tests: real servers (REST + gRPC on one engine) on loopback, in a thread."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.grpc.helpers import LiveServer, make_settings, write_model


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The app with the instant fake model: REST and gRPC sharing one engine."""
    repo = tmp_path_factory.mktemp("client-repo")
    write_model(repo, "fake")
    server = LiveServer(make_settings(repo, max_items_per_request=256)).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def busy_live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server that overloads easily: 250 ms per one-item batch, room for one waiting item."""
    repo = tmp_path_factory.mktemp("busy-repo")
    write_model(repo, "slow", options="delay_ms=250")
    server = LiveServer(make_settings(repo, model="slow", max_batch_size=1, queue_size=1)).start()
    yield server
    server.stop()


@pytest.fixture(params=["rest", "grpc"])
def url(request: pytest.FixtureRequest, live: LiveServer) -> str:
    """The live server's URL for each protocol."""
    return live.rest_url if request.param == "rest" else live.grpc_url
