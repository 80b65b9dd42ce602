"""The serving process: the engine first, then REST and gRPC as peers over it, and the drain on SIGTERM.

``serve(settings)`` loads and warms the models (``Engine.start``), then starts the REST server
(uvicorn, unless ``port`` is 0) and the gRPC server (grpc.aio, unless ``grpc_port`` is 0) on the
same event loop; readiness (``/readyz``, grpc.health.v1) is the engine's.

Shutdown on SIGTERM (or Ctrl+C): readiness turns false at once and new calls get 503 / UNAVAILABLE,
while calls already in flight on either front end finish; then both servers stop, the engine
releases its models, and ``serve`` returns, so the process exits 0. The whole shutdown takes at most
``drain_timeout_s`` (one budget for the drain and each stop after it). A second signal stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import math
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Generator
from typing import Any

import uvicorn

from service.config import SettingError, Settings
from service.engine import Engine
from service.grpc.server import GrpcServer, start_grpc
from service.memory import limit_arenas, trim_when_idle
from service.metrics import Metrics
from service.rest.app import create_app
from service.rest.backlog import accept_queue_probe

log = logging.getLogger(__name__)
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class RestServer(uvicorn.Server):
    """uvicorn's server without its own signal handling (``serve`` owns the process's signals).

    Once listening, it gives the app a probe of its sockets' accept queues (``app.state.accept_queue``),
    which REST admission reads to shed load the event loop cannot take.
    """

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's start-up, then the accept-queue probe for the app."""
        try:
            await super().startup(sockets)
        except SystemExit as exc:  # uvicorn logs the bind error, then exits: say which setting
            raise SettingError("port", "REST cannot listen there (the error above)") from exc
        listening = [sock for server in self.servers for sock in server.sockets]
        self.config.app.state.accept_queue = accept_queue_probe(listening)  # type: ignore[union-attr]

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """No-op: uvicorn would install handlers and re-raise the signal after shutdown (exit status)."""
        yield


def rest_http_protocol(header_timeout_s: float) -> type[asyncio.Protocol] | str:
    """uvicorn's httptools protocol with ``header_timeout_s`` for the request headers; ``"auto"``
    (uvicorn's pick, h11: no header timeout) if httptools is not installed."""
    if importlib.util.find_spec("httptools") is None:
        return "auto"
    from service.rest.http_protocol import header_timeout_protocol  # imports httptools

    return header_timeout_protocol(header_timeout_s)


def rest_config(settings: Settings, engine: Engine, metrics: Metrics) -> uvicorn.Config:
    """uvicorn's configuration for the REST app on ``settings.host:settings.port``."""
    return uvicorn.Config(
        create_app(settings, engine=engine, metrics=metrics), host=settings.host, port=settings.port,
        log_config=None, access_log=False, lifespan="on",
        timeout_graceful_shutdown=max(1, int(settings.drain_timeout_s)),
        # uvloop and httptools (dependencies): ~25% less CPU per request. httptools is what http="auto"
        # picked; rest_http_protocol is its protocol plus a timeout for the headers (slowloris).
        loop="auto", http=rest_http_protocol(settings.header_timeout_s),
        # Connections past max_connections get uvicorn's own 503: a guard for file descriptors and
        # memory; load is shed earlier by admission (429 + Retry-After, service.rest.admission).
        limit_concurrency=settings.max_connections or None, backlog=settings.backlog,
        timeout_keep_alive=max(1, round(settings.keep_alive_timeout_s)),
    )


class Shutdown:
    """The process's stop requests: the first signal asks for a drain, a second one for a stop now."""

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.forced = asyncio.Event()
        self._requested_at: float | None = None

    def __call__(self) -> None:
        if self.requested.is_set():
            self.forced.set()
            return
        self._requested_at = time.monotonic()
        self.requested.set()

    def grace_left(self, budget_s: float) -> float:
        """What is left of ``budget_s`` since the stop was requested (0 once forced): one budget for
        the drain and every stop after it, so the whole shutdown fits the orchestrator's grace period."""
        if self.forced.is_set():
            return 0.0
        start = self._requested_at if self._requested_at is not None else time.monotonic()
        return max(0.0, start + budget_s - time.monotonic())

    @contextlib.contextmanager
    def on_signals(self, loop: asyncio.AbstractEventLoop) -> Generator[None, None, None]:
        """Route SIGTERM and SIGINT here while the block runs (main thread only: signals go there)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        for sig in SIGNALS:
            loop.add_signal_handler(sig, self)
        try:
            yield
        finally:
            for sig in SIGNALS:
                loop.remove_signal_handler(sig)


async def serve(settings: Settings, shutdown: Shutdown | None = None, engine: Engine | None = None) -> None:
    """Serve until a stop is requested (a signal, or ``shutdown`` called), then drain and stop.

    ``engine`` (not started) defaults to a new one on ``settings``.
    """
    check_ports(settings)
    shutdown = shutdown or Shutdown()
    engine = engine or Engine(settings, Metrics())
    metrics = engine.metrics
    limit_arenas(settings.malloc_arena_max)
    trimmer = asyncio.create_task(trim_when_idle(lambda: engine.in_flight))
    with shutdown.on_signals(asyncio.get_running_loop()):
        try:
            await _until(engine.start(), shutdown.requested)
            if not shutdown.requested.is_set():
                await _serve_front_ends(engine, metrics, settings, shutdown)
        finally:
            trimmer.cancel()
            await engine.stop(shutdown.grace_left(settings.drain_timeout_s))


def check_ports(settings: Settings) -> None:
    """Fail before the models load when a port cannot be listened on: a SettingError naming it."""
    for setting, port in (("port", settings.port), ("grpc_port", settings.grpc_port)):
        if port:
            _check_port(settings.host, port, setting)


def _check_port(host: str, port: int, setting: str) -> None:
    """Bind ``host:port`` as the servers will (SO_REUSEADDR), then let it go."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise SettingError("host", f"cannot resolve the address: {exc.strerror}") from exc
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            reason = (exc.strerror or str(exc)).lower()
            raise SettingError(setting, f"cannot listen on {host}:{port}: {reason}") from exc


async def _serve_front_ends(engine: Engine, metrics: Metrics, settings: Settings, shutdown: Shutdown) -> None:
    """Start gRPC and REST (each unless its port is 0), wait for a stop request, drain, stop both."""
    grpc_server = await start_grpc(engine, settings)
    rest = RestServer(rest_config(settings, engine, metrics)) if settings.port else None
    rest_task = asyncio.create_task(rest.serve()) if rest is not None else None
    try:
        await _wait_for_stop(rest_task, shutdown)
        await _drain(engine, settings, shutdown)
    finally:
        await _stop_front_ends(rest, rest_task, grpc_server, settings, shutdown)


async def _drain(engine: Engine, settings: Settings, shutdown: Shutdown) -> None:
    """Not ready, no new calls; wait for those in flight (bounded, cut short by a second signal)."""
    engine.begin_drain()
    log.info("draining: not ready; waiting up to %.1fs for %d call(s)", settings.drain_timeout_s, engine.in_flight)
    idle = asyncio.ensure_future(engine.wait_idle(settings.drain_timeout_s))
    forced = asyncio.ensure_future(shutdown.forced.wait())
    await asyncio.wait([idle, forced], return_when=asyncio.FIRST_COMPLETED)
    forced.cancel()
    if not idle.done() or not idle.result():
        idle.cancel()
        log.warning("drain ended with %d call(s) still in flight", engine.in_flight)


async def _stop_front_ends(
    rest: RestServer | None, rest_task: asyncio.Task[None] | None, grpc_server: GrpcServer | None,
    settings: Settings, shutdown: Shutdown,
) -> None:
    if rest is not None and rest_task is not None:
        grace = shutdown.grace_left(settings.drain_timeout_s)
        rest.config.timeout_graceful_shutdown = max(1, math.ceil(grace))
        rest.should_exit = True
        rest.force_exit = grace == 0
        await rest_task
    if grpc_server is not None:
        await grpc_server.stop(shutdown.grace_left(settings.drain_timeout_s))
    log.info("front ends stopped")


async def _wait_for_stop(rest_task: asyncio.Task[None] | None, shutdown: Shutdown) -> None:
    """Wait for a stop request; raise if the REST server ends first (it ends only on a failure)."""
    stop = asyncio.ensure_future(shutdown.requested.wait())
    done, _ = await asyncio.wait({stop} | ({rest_task} if rest_task else set()), return_when=asyncio.FIRST_COMPLETED)
    stop.cancel()
    if rest_task in done:
        rest_task.result()
        raise RuntimeError("the REST server stopped on its own")


async def _until(work: Awaitable[Any], stop: asyncio.Event) -> None:
    """Run ``work`` (a coroutine) until it ends or ``stop`` is set, whichever comes first."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(stop.wait())
    await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return
    task.result()
