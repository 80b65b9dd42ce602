"""Start the real server (``python -m service serve``) as a subprocess on a free loopback port."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from service.measure.serving import free_port, wait_ready

__all__ = ["REPO", "ServerProcess", "free_port"]  # free_port lives in service.measure.serving; re-exported

REPO = Path(__file__).resolve().parents[2]


class ServerProcess:
    """``python -m service serve --port <free> --grpc-port 0 ...``; its output goes to ``log``.

    ``env``: the server's environment (default: this process's).
    """

    def __init__(self, log: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        command = [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                   "--grpc-port", "0", *args]
        with log.open("wb") as out:
            self.proc = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, timeout_s: float = 300) -> None:
        """Poll /readyz until 200; fail with the server's log if it exits or never gets ready."""
        try:
            wait_ready(self.proc, self.url, timeout_s)
        except RuntimeError as exc:
            raise AssertionError(f"{exc}:\n{self.log.read_text()}") from None

    def stop(self) -> None:
        """Make sure the process is gone (kill if it does not stop on its own)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
