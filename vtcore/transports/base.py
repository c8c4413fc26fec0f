"""What a transport hands the tunnel: a non-blocking carrier of vtun frames.

A link is created by a transport's ``open_link`` after the handshake, on the same TCP
connection (tcp) or on a fresh datagram socket (udp).  The tunnel loop drives it from
the event loop: ``read_frames`` when its descriptor is readable, ``write_frames`` for
outgoing frames (header included), ``flush`` when it is writable again.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from vtcore.protocol.frames import FSIZE_MASK


@dataclass(frozen=True)
class Endpoints:
    """Addresses substituted into up/down commands (``%A %P %a %p``)."""

    local_addr: str
    local_port: int
    remote_addr: str
    remote_port: int


@dataclass(frozen=True)
class Framing:
    """How a link frames: vtun's 2-byte header, vt-native's 4 bytes, or sealed frames."""

    header: Callable[[int], bytes]
    """Header of a data frame with that many payload bytes."""
    control: Callable[[int], bytes]
    """A whole control frame for a vtun flag (CONN_CLOSE, ECHO_REQ, ECHO_REP)."""
    max_payload: int
    data: Callable[[bytes], tuple[bytes, bytes]] | None = None
    """Payload -> (head, body) to send; defaults to ``(header(len(p)), p)``.  A link
    that transforms frames (secure mode seals them) sets its own."""

    def data_fn(self) -> Callable[[bytes], tuple[bytes, bytes]]:
        if self.data is not None:
            return self.data
        header = self.header
        return lambda p: (header(len(p)), p)


_vtun_pack = struct.Struct(">H").pack
VTUN_FRAMING = Framing(_vtun_pack, _vtun_pack, FSIZE_MASK)


class Link(Protocol):
    framing: Framing
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

    def write_frames(self, parts: list[bytes]) -> None:
        """Queue frames given as ``[header, payload, header, payload, ...]`` (a control
        frame is ``[frame, b""]``) and send what the kernel takes now."""
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
