"""What a transport hands the tunnel: a non-blocking carrier of vtun frames.

A link is created by a transport's ``open_link`` after the handshake, on the same TCP
connection (tcp) or on a fresh datagram socket (udp).  The tunnel loop drives it from
the event loop: ``read_frames`` when its descriptor is readable, ``write_frames`` for
outgoing frames (header included), ``flush`` when it is writable again.  The Protocols
(:class:`vt_api.Link`, :class:`vt_api.Framing`) are the contract's; vtun's framing is here.
"""

from __future__ import annotations

import socket
import struct

from vt_api import Endpoints, Framing, Link

from vtcore.protocol.frames import FSIZE_MASK

__all__ = ["VTUN_FRAMING", "Endpoints", "Framing", "Link", "endpoints_of"]


_vtun_pack = struct.Struct(">H").pack
VTUN_FRAMING = Framing(_vtun_pack, _vtun_pack, FSIZE_MASK)


def endpoints_of(sock: socket.socket) -> Endpoints:
    if sock.family == socket.AF_UNIX:  # the core's end of a wrapped stream
        return Endpoints("wrapped", 0, "wrapped", 0)
    local = sock.getsockname()
    remote = sock.getpeername()
    return Endpoints(local[0], local[1], remote[0], remote[1])
