"""What a transport hands the tunnel: a non-blocking carrier of frames.

A link is created by a transport's ``open_link`` after the handshake, on the same TCP
connection (tcp) or on a fresh datagram socket (udp).  The tunnel loop drives it from
the event loop: ``read_frames`` when its descriptor is readable, ``send`` for outgoing
payloads (the link frames them), ``send_control`` for control frames, ``flush`` when it
is writable again.  The Protocol (:class:`vt_api.Link`) is the contract's; vtun's
framing is here, and :func:`as_link` adapts a link written for contract 1.0/1.1.
"""

from __future__ import annotations

import socket
import struct
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from vt_api import Endpoints, Framing, LegacyLink, Link

from vtcore.protocol.frames import FSIZE_MASK

__all__ = [
    "VTUN_FRAMING", "Endpoints", "Framing", "HeaderFraming", "Link", "as_link", "endpoints_of",
]


_vtun_pack = struct.Struct(">H").pack
VTUN_FRAMING = Framing(_vtun_pack, _vtun_pack, FSIZE_MASK)


class HeaderFraming(ABC):
    """``send``/``send_control`` of a link that puts a header before each payload (vtun's,
    vt-native's, or none): the link's ``_write`` takes ``[header, payload, ...]``."""

    _header: Callable[[int], bytes]
    _control: Callable[[int], bytes]

    def send(self, payloads: list[bytes]) -> None:
        parts: list[bytes] = [b""] * (2 * len(payloads))
        parts[0::2] = list(map(self._header, map(len, payloads)))
        parts[1::2] = payloads
        self._write(parts)

    def send_control(self, flag: int) -> None:
        self._write([self._control(flag), b""])

    @abstractmethod
    def _write(self, parts: list[bytes]) -> None:
        """Send (or queue) ``[header, payload, ...]``: the transport's own part."""


def endpoints_of(sock: socket.socket) -> Endpoints:
    if sock.family == socket.AF_UNIX:  # the core's end of a wrapped stream
        return Endpoints("wrapped", 0, "wrapped", 0)
    local = sock.getsockname()
    remote = sock.getpeername()
    return Endpoints(local[0], local[1], remote[0], remote[1])


class _FramedLink:
    """A contract 1.0/1.1 link (``framing`` + ``write_frames``) as a :class:`Link`."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._data = inner.framing.data_fn()
        self._control = inner.framing.control
        self.max_payload = inner.framing.max_payload

    def __getattr__(self, name: str) -> Any:  # everything else is the inner link's
        return getattr(self.inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("inner", "_data", "_control", "max_payload"):
            object.__setattr__(self, name, value)
        else:  # on_peer, on_unreachable, endpoints ...: the inner link's
            setattr(self.inner, name, value)

    def send(self, payloads: list[bytes]) -> None:
        data = self._data
        parts: list[bytes] = []
        for p in payloads:
            parts += data(p)
        self.inner.write_frames(parts)

    def send_control(self, flag: int) -> None:
        self.inner.write_frames([self._control(flag), b""])


def as_link(link: Any) -> Link:
    """``link`` itself, or a legacy (contract 1.0/1.1) one adapted to ``send``."""
    if hasattr(link, "send") or not isinstance(link, LegacyLink):
        return link
    return _FramedLink(link)  # type: ignore[return-value]
