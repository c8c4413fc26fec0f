"""Driving a secure-mode handshake (a :class:`vt_api.SecureMode`'s machine) over a socket:
the one handshake driver (:func:`~vtcore.runtime.netio.drive`) on the extension's machine
framed by :class:`~vtcore.protocol.framed.FramedHandshake`, its slow steps off the event
loop so other sessions keep flowing.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from vt_api import HandshakeRefused, SansIOHandshake

from vtcore.protocol.framed import FramedHandshake
from vtcore.runtime.netio import drive


def _refusal(call: Callable[[], None], default: str) -> HandshakeRefused:
    """The extension's own message for a time-out or a lost peer (its ``timed_out`` /
    ``connection_lost`` may raise it or just record it)."""
    try:
        call()
    except HandshakeRefused as exc:
        return HandshakeRefused(str(exc))
    return HandshakeRefused(default)


async def drive_secure(sock: socket.socket, hs: SansIOHandshake, timeout: float, *,
                       deadline: float | None = None,
                       on_message: Callable[[], None] | None = None):
    """Pump ``hs`` until established; return its event.  Raises HandshakeRefused.

    Each message within ``timeout``, all of them by ``deadline`` (loop time; the server's
    one deadline for the whole handshake).  ``on_message``: see :class:`FramedHandshake`
    (it may raise HandshakeRefused).
    """
    try:
        return await drive(sock, FramedHandshake(hs, on_message), timeout, deadline)
    except TimeoutError:
        raise _refusal(hs.timed_out, "secure handshake timed out") from None
    except (EOFError, OSError):
        raise _refusal(hs.connection_lost, "connection closed during secure handshake") from None


def safe_log_fields(established) -> dict[str, str]:
    """What an established secure session may show in a log line (the extension's own
    ``log_fields()``: suite, session id), minus what the caller's logger already binds."""
    fields = getattr(established, "log_fields", None)
    safe = fields() if callable(fields) else {}
    return {k: v for k, v in safe.items() if k not in ("host", "role")}
