"""Clients that vanish take their work with them: the server's CPU falls idle soon after they go."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import time
from pathlib import Path

from PIL import Image

from tests.api.helpers import write_model
from tests.api.server_process import ServerProcess

CLIENTS = 24
IMAGES_PER_REQUEST = 24
TICKS = os.sysconf("SC_CLK_TCK")


def flat_png(shade: int, side: int = 3000) -> bytes:
    """A large one-colour PNG: a few kB to send, tens of ms of CPU to decode and resize."""
    out = io.BytesIO()
    Image.new("RGB", (side, side), (shade, 255 - shade, shade // 2)).save(out, "PNG")
    return out.getvalue()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def cpu_share(pid: int, window_s: float = 1.0) -> float:
    """The share of one core the process used over the next ``window_s``."""
    before = cpu_seconds(pid)
    time.sleep(window_s)  # the measuring window itself
    return (cpu_seconds(pid) - before) / window_s


def send_embed(port: int, body: bytes) -> socket.socket:
    """Open a connection and send one /embed request; the answer is never read."""
    sock = socket.create_connection(("127.0.0.1", port))
    head = (f"POST /embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    sock.sendall(head + body)
    return sock


def test_cpu_falls_idle_within_seconds_after_clients_vanish(tmp_path: Path) -> None:
    write_model(tmp_path, "fake")
    server = ServerProcess(tmp_path / "server.log", "--model", "fake", "--model-dir", str(tmp_path),
                           "--preprocess-threads", "2", "--no-warmup", "--log-json")
    try:
        server.wait_ready()
        images = [base64.b64encode(flat_png(40 * i)).decode() for i in range(4)]
        body = json.dumps({"inputs": [{"image": images[i % 4]} for i in range(IMAGES_PER_REQUEST)]}).encode()
        sockets = [send_embed(server.port, body) for _ in range(CLIENTS)]  # tens of seconds of decoding
        busy = max(cpu_share(server.proc.pid) for _ in range(3))
        for sock in sockets:
            sock.close()  # the clients vanish
        shares, deadline = [], time.monotonic() + 15
        while time.monotonic() < deadline and (not shares or shares[-1] > 0.1):
            shares.append(cpu_share(server.proc.pid))
        assert busy > 0.5, f"the server was not busy decoding ({busy:.0%} of a core)"
        assert shares[-1] <= 0.1, f"CPU after the clients left, per second: {[f'{s:.0%}' for s in shares]}"
        assert server.proc.poll() is None  # and it is still serving
        log = [json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")]
        statuses = [e["status"] for e in log if e.get("logger") == "clipserve.access" and e.get("route") == "embed"]
        assert len(statuses) == CLIENTS and set(statuses) <= {200, 499}, statuses  # each answered or cancelled
        assert statuses.count(499) >= CLIENTS // 2, statuses  # most were still waiting when their clients left
    finally:
        server.stop()
