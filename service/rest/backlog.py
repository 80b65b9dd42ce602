"""The listening sockets' accept queues: connections the kernel holds that the server has not taken yet.

When the event loop itself is the bottleneck (small requests, many of them), work waits here, where
no counter of the server sees it, until clients time out. Linux reports the queue of a listening
socket in ``TCP_INFO`` (``tcpi_unacked`` is the accept queue's length for a socket in LISTEN).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Sequence

_TCP_INFO_HEAD = struct.Struct("=8B5I")  # eight one-byte fields, then rto, ato, snd_mss, rcv_mss, unacked


def accept_queue(sock: socket.socket) -> int | None:
    """Connections waiting to be accepted on a listening TCP socket; None where the OS does not say."""
    if not hasattr(socket, "TCP_INFO"):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_HEAD.size)
    except OSError:
        return None
    if len(info) < _TCP_INFO_HEAD.size:
        return None
    return int(_TCP_INFO_HEAD.unpack_from(info)[12])


def accept_queue_probe(sockets: Sequence[socket.socket]) -> Callable[[], int]:
    """A function giving the longest accept queue of ``sockets`` now (0 where none can be read)."""
    def longest() -> int:
        return max((accept_queue(sock) or 0 for sock in sockets), default=0)

    return longest
