"""The core's side of contract 1.1's stream wrappers (vtcore/runtime/wrapping.py): how a
server tells a wrapping client (it speaks first) from a vtun one (it waits), on real
sockets."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from vt_api import Registry, TransportType

from vtcore.runtime.wrapping import WrapFailed, sniff, sniffers, wrap, wrapper_for


async def _identity(sock, role, options, timeout):
    return sock


async def _refuse(sock, role, options, timeout):
    raise ConnectionError("upgrade refused: HTTP 404")


WS = TransportType("ws", "W", None, wrap=_identity, greets_with=b"GET ")  # type: ignore[arg-type]


def sniffed(first: bytes | None, candidates=(WS,), wait: float = 0.3):
    """What :func:`sniff` finds when the client sends ``first`` (None: nothing), the
    time it took, and what the socket still holds."""
    async def main():
        a, b = socket.socketpair()
        a.setblocking(False)
        with a, b:
            if first is not None:
                b.sendall(first)
            started = time.monotonic()
            found = await sniff(a, list(candidates), wait)
            took = time.monotonic() - started
            left = a.recv(64) if first else b""
            return found, took, left

    return asyncio.run(main())


def test_a_wrapping_client_is_recognised_at_once_and_its_bytes_stay() -> None:
    found, took, left = sniffed(b"GET /tunnel HTTP/1.1\r\n")
    assert found is WS and took < 0.2 and left == b"GET /tunnel HTTP/1.1\r\n"


@pytest.mark.parametrize("first", [None, b"\x00\x05HOST:", b"GE"])
def test_silence_or_other_bytes_mean_a_vtun_client(first) -> None:
    found, took, _ = sniffed(first)
    assert found is None
    assert took < (0.2 if first and not WS.greets_with.startswith(first) else 0.6)


def test_no_wrapping_host_no_wait() -> None:
    found, took, _ = sniffed(None, candidates=())
    assert found is None and took < 0.05


def test_only_hosts_protos_with_a_wrapper_and_a_greeting_are_sniffed() -> None:
    registry = Registry()
    registry.add_transport(WS)
    registry.add_transport(TransportType("plain", "P", None))  # type: ignore[arg-type]
    assert wrapper_for(registry, "ws") is WS and wrapper_for(registry, "plain") is None
    assert sniffers(registry, {"ws", "plain", "tcp"}) == [WS]
    assert sniffers(registry, {"plain"}) == []


def test_a_failed_wrap_is_one_line_and_closes_the_socket() -> None:
    refusing = TransportType("ws", "W", None, wrap=_refuse)  # type: ignore[arg-type]

    async def main():
        a, b = socket.socketpair()
        with b:
            with pytest.raises(WrapFailed, match=r"^proto ws: upgrade refused: HTTP 404$"):
                await wrap(refusing, a, "client", {}, 1.0)
            assert a.fileno() == -1

    asyncio.run(main())
