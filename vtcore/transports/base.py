"""What a transport hands the tunnel: a non-blocking carrier of vtun frames.

A link is created by a transport's ``open_link`` after the handshake, on the same TCP
connection (tcp) or on a fresh datagram socket (udp).  The tunnel loop drives it from
the event loop: ``read_frames`` when its descriptor is readable, ``write_frames`` for
outgoing frames (header included), ``flush`` when it is writable again.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Endpoints:
    """Addresses substituted into up/down commands (``%A %P %a %p``)."""

    local_addr: str
    local_port: int
    remote_addr: str
    remote_port: int


class Link(Protocol):
    endpoints: Endpoints
    bad_frames: int
    """Malformed frames received and skipped."""
    dropped_out: int
    """Frames the kernel refused to send (udp ENOBUFS and the like)."""

    def fileno(self) -> int: ...

    def read_frames(self, limit: int) -> list[tuple[int, bytes]]:
        """Frames available now as ``(flags, payload)``; empty when none.

        Raises ``EOFError`` when the peer closed the connection."""
        ...

    def write_frames(self, frames: list[bytes]) -> None:
        """Queue encoded frames (header included) and send what the kernel takes."""
        ...

    def backlog(self) -> int:
        """Bytes queued but not yet accepted by the kernel."""
        ...

    def flush(self) -> None:
        """Send queued bytes; called when the descriptor is writable."""
        ...

    def ready(self) -> bool:
        """False while outgoing frames must be held back (udp ``nat_hack``)."""
        ...

    def close(self) -> None: ...


def endpoints_of(sock: socket.socket) -> Endpoints:
    local = sock.getsockname()
    remote = sock.getpeername()
    return Endpoints(local[0], local[1], remote[0], remote[1])
