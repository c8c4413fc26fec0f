"""Stream wrappers (``TransportType.wrap``, contract 1.1): a transport that carries the
whole connection, vtun's handshake included, inside another protocol (``proto ws``).

The client wraps right after its TCP connect when its host's ``proto`` names such a
transport.  The server cannot know before the handshake which host a client wants, so it
looks at what the client sends first: a wrapping client speaks first (``greets_with``),
a vtun client waits for the server's greeting.  It waits only when its config has a host
with a wrapping ``proto``, and only :data:`SNIFF_WAIT` (the wrapping client's first bytes
follow its connect at once), so plain tcp and vtund clients keep being served as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterable, Mapping

from vt_api import Endpoints, Registry, Role, TransportType

from vtcore.transports.base import endpoints_of

SNIFF_WAIT = 0.5
"""Seconds the server waits for a wrapping client's first bytes before greeting."""


class WrapFailed(Exception):
    """The wrapper refused or lost the connection; the message is one line."""


def wrapper_for(registry: Registry, proto: str) -> TransportType | None:
    """The transport answering ``proto`` if it wraps the stream, else None."""
    transport = registry.transports.get(proto)
    return transport if transport is not None and transport.wrap is not None else None


def sniffers(registry: Registry, protos: Iterable[str]) -> list[TransportType]:
    """The wrapping transports a server with hosts using ``protos`` must recognise."""
    found = {t.name: t for t in (wrapper_for(registry, p) for p in protos) if t is not None}
    return [t for t in found.values() if t.greets_with]


async def wrap(transport: TransportType, sock: socket.socket, role: Role,
               options: Mapping[str, object], timeout: float) -> tuple[socket.socket, Endpoints]:
    """The wrapped stream and the real connection's endpoints (for ``%a``/``%p`` ...)."""
    assert transport.wrap is not None
    endpoints = endpoints_of(sock)
    try:
        inner = await asyncio.wait_for(transport.wrap(sock, role, options, timeout), timeout)
    except (OSError, EOFError, TimeoutError, ValueError) as exc:
        with contextlib.suppress(OSError):
            sock.close()
        reason = "timed out" if isinstance(exc, TimeoutError) and not str(exc) else str(exc)
        raise WrapFailed(f"proto {transport.name}: {reason}") from None
    return inner, endpoints


def _settle(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


async def sniff(sock: socket.socket, candidates: list[TransportType],
                wait: float = SNIFF_WAIT) -> TransportType | None:
    """The wrapping transport whose greeting the client sent first, if any (peeked: the
    bytes stay for the wrapper).  Only a whole greeting counts; silence, a short read or
    other bytes mean a plain vtun client."""
    if not candidates:
        return None
    loop = asyncio.get_running_loop()
    longest = max(len(t.greets_with) for t in candidates)
    deadline = loop.time() + wait
    while True:
        ready = loop.create_future()
        loop.add_reader(sock.fileno(), _settle, ready)
        try:
            await asyncio.wait_for(ready, max(0.0, deadline - loop.time()))
        except TimeoutError:
            return None
        finally:
            loop.remove_reader(sock.fileno())
        try:
            head = sock.recv(longest, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            continue
        except OSError:
            return None
        for transport in candidates:
            if head.startswith(transport.greets_with):
                return transport
        if len(head) >= longest or not head or loop.time() >= deadline:
            return None
        await asyncio.sleep(0.01)  # part of a greeting: wait for the rest (bounded above)
