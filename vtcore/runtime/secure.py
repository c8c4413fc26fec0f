"""Driving a secure-mode handshake (a :class:`vtcore.api.SecureMode`) over a socket.

The extension's state machine is sans-I/O; this reads one length-prefixed message at a
time (never a byte of the tunnel), bounds each read in size and time, and runs the
expensive steps (the PAKE) off the event loop so other sessions keep flowing.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from vtcore.api import HandshakeRefused, SansIOHandshake
from vtcore.runtime.netio import send_all

MAX_MESSAGE = 4096
"""Largest secure-handshake message accepted (the extension's own limit is lower)."""


async def _read_exact(sock: socket.socket, n: int, deadline: float) -> bytes:
    loop = asyncio.get_running_loop()
    buf = b""
    while len(buf) < n:
        left = deadline - loop.time()
        if left <= 0:
            raise TimeoutError
        chunk = await asyncio.wait_for(loop.sock_recv(sock, n - len(buf)), left)
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def _refusal(call, default: str) -> HandshakeRefused:
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

    Each message is read whole within ``timeout``, and all of them by ``deadline`` (loop
    time; the server's one deadline for the whole handshake): its 2-byte length goes to
    ``hs`` first, so a bad length is refused at once, before the body is waited for.
    ``on_message`` is called for each whole message read, before ``hs`` sees its body
    (the server counts a password guess from there; it may raise HandshakeRefused).
    """
    loop = asyncio.get_running_loop()

    def until() -> float:
        end = loop.time() + timeout
        return end if deadline is None else min(end, deadline)

    try:
        while True:
            out = hs.data_to_send()
            if out:
                await send_all(sock, out, max(0.0, until() - loop.time()))
            event = hs.next_event()
            if event is not None:
                return event
            read_by = until()
            head = await _read_exact(sock, 2, read_by)
            try:
                hs.receive_data(head)
                n = int.from_bytes(head, "big")
                if n == 0 or n > MAX_MESSAGE:
                    raise HandshakeRefused("malformed secure handshake message")
                body = await _read_exact(sock, n, read_by)
                if on_message is not None:
                    on_message()
                await asyncio.to_thread(hs.receive_data, body)
            except HandshakeRefused:
                # Tell the peer (an abort message, if the extension queued one).
                out = hs.data_to_send()
                if out:
                    try:
                        await send_all(sock, out, 1.0)
                    except (OSError, TimeoutError):
                        pass
                raise
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
