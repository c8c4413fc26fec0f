"""The handshake phase's I/O: one driver for every sans-I/O handshake machine, and
small socket helpers.  Every read is bounded in size (``bytes_needed``) and time."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Protocol


class Handshaking(Protocol):
    """What :func:`drive` pumps: vtun's :class:`~vtcore.protocol.handshake.ServerHandshake`
    and ``ClientHandshake``, the UDP :class:`~vtcore.protocol.udp.PortExchange`, and a
    secure mode's machine inside :class:`~vtcore.protocol.framed.FramedHandshake`."""

    @property
    def bytes_needed(self) -> int:
        """At most this many bytes may be read now; 0: a local decision is due."""
        ...

    def receive_data(self, data: bytes) -> None: ...

    def data_to_send(self) -> bytes: ...

    def next_event(self) -> object | None: ...


async def send_all(sock: socket.socket, data: bytes, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    await asyncio.wait_for(loop.sock_sendall(sock, data), timeout)


async def drive(sock: socket.socket, conn: Handshaking, timeout: float,
                deadline: float | None = None) -> object:
    """Pump ``conn`` over ``sock`` until its next event, and return it.

    What the machine has to say is sent first; then at most ``bytes_needed`` bytes are
    read at a time, so nothing after the handshake is taken from the socket.  The peer
    gets ``timeout`` seconds to answer each time this side has spoken (and for the first
    read), and everything must be done by ``deadline`` (loop time).  A machine with a
    ``take_work()`` hands out its slow steps (a PAKE) to run off the event loop.  When the
    machine raises on bad input, what it queued for the peer (an abort message) is sent
    on a best-effort basis first.  Raises TimeoutError, EOFError (the peer closed) and
    whatever the machine raises.
    """
    loop = asyncio.get_running_loop()
    answer_by = loop.time() + timeout

    def left() -> float:
        remaining = (answer_by if deadline is None else min(answer_by, deadline)) - loop.time()
        if remaining <= 0:
            raise TimeoutError
        return remaining

    while True:
        out = conn.data_to_send()
        if out:
            await send_all(sock, out, left())
            answer_by = loop.time() + timeout
        event = conn.next_event()
        if event is not None:
            return event
        need = conn.bytes_needed
        if need <= 0:
            raise RuntimeError(f"{conn!r} waits for a local decision, not for the peer")
        data = await asyncio.wait_for(loop.sock_recv(sock, need), left())
        if not data:
            raise EOFError("connection closed during the handshake")
        take_work = getattr(conn, "take_work", None)
        try:
            conn.receive_data(data)
            work = take_work() if take_work is not None else None
            if work is not None:
                await asyncio.to_thread(work)
        except Exception:
            out = conn.data_to_send()
            if out:
                with contextlib.suppress(OSError, TimeoutError):
                    await send_all(sock, out, 1.0)
            raise


def peer_name(addr) -> str:
    """``ip:port`` (``[ip]:port`` for IPv6) for logs."""
    if isinstance(addr, tuple) and len(addr) >= 2:
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(addr or "stdin")
