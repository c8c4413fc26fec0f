"""The one handshake driver (vtcore.runtime.netio.drive) over real socket pairs: vtun's
two roles, the UDP port exchange and a secure mode's framed machine all go through it;
it never reads a byte past the handshake, bounds each wait, and runs a PAKE step off the
event loop while the guess counting stays on it (issue 14 item 5)."""

from __future__ import annotations

import ast
import asyncio
import socket
import threading
import time
from pathlib import Path

import pytest
from vt_api import HandshakeRefused

from vtcore.protocol.events import (
    Accept,
    Accepted,
    Answer,
    Challenge,
    ChallengeAnswered,
    Challenged,
    HostAnnounced,
)
from vtcore.protocol.framed import FramedHandshake
from vtcore.protocol.handshake import ClientHandshake, ServerHandshake
from vtcore.protocol.udp import PeerPort, PortExchange
from vtcore.runtime.netio import drive, send_all

ROOT = Path(__file__).resolve().parent.parent
TUNNEL = b"\x00\x05hello"
"""A frame the server sends right behind its ``OK FLAGS``."""


def pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def test_both_roles_meet_through_the_driver_and_nothing_of_the_tunnel_is_read() -> None:
    async def server(sock: socket.socket) -> None:
        hs = ServerHandshake()
        assert isinstance(await drive(sock, hs, 2.0), HostAnnounced)
        await send_all(sock, hs.send(Challenge(bytes(range(16)))), 2.0)
        event = await drive(sock, hs, 2.0)
        assert isinstance(event, ChallengeAnswered) and hs.check(b"pw")
        await send_all(sock, hs.send(Accept("<Tu>")) + TUNNEL, 2.0)

    async def client(sock: socket.socket) -> tuple[object, bytes, bytes]:
        hs = ClientHandshake("t1", b"pw")
        event = await drive(sock, hs, 2.0)
        assert isinstance(event, Challenged)
        await send_all(sock, hs.send(Answer()), 2.0)
        accepted = await drive(sock, hs, 2.0)
        await asyncio.sleep(0.05)  # the tunnel frame is there by now
        rest = await asyncio.get_running_loop().sock_recv(sock, 100)
        return accepted, hs.trailing_data(), rest

    async def main():
        a, b = pair()
        try:
            return (await asyncio.gather(server(a), client(b)))[1]
        finally:
            a.close()
            b.close()

    accepted, trailing, rest = asyncio.run(main())
    assert isinstance(accepted, Accepted) and accepted.raw == "<Tu>"
    assert trailing == b""  # the driver read exactly the verdict ...
    assert rest == TUNNEL  # ... and left the tunnel in the socket


def test_a_silent_peer_times_out_and_a_closing_one_ends_it() -> None:
    async def silent() -> float:
        a, b = pair()
        start = time.monotonic()
        try:
            with pytest.raises(TimeoutError):
                await drive(a, ClientHandshake("t1", b"pw"), 0.3)
            return time.monotonic() - start
        finally:
            a.close()
            b.close()

    async def closing() -> None:
        a, b = pair()
        try:
            b.close()
            with pytest.raises(EOFError):
                await drive(a, ClientHandshake("t1", b"pw"), 5.0)
        finally:
            a.close()

    assert 0.25 < asyncio.run(silent()) < 2
    asyncio.run(closing())


def test_the_deadline_bounds_the_whole_handshake_whatever_the_timeout() -> None:
    async def main() -> float:
        a, b = pair()
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            with pytest.raises(TimeoutError):
                await drive(a, ServerHandshake(), 30.0, deadline=start + 0.3)
            assert b.recv(50).startswith(b"VTUN")  # the greeting went out first
            return loop.time() - start
        finally:
            a.close()
            b.close()

    assert asyncio.run(main()) < 2


def test_a_machine_waiting_for_a_decision_is_a_bug_not_a_wait() -> None:
    async def main() -> None:
        a, b = pair()
        try:
            hs = ServerHandshake()
            hs.receive_data(b"HOST: t1\n".ljust(50, b"\0"))
            hs.next_event()
            with pytest.raises(RuntimeError, match="local decision"):
                await drive(a, hs, 1.0)
        finally:
            a.close()
            b.close()

    asyncio.run(main())


def test_the_port_exchange_goes_through_the_driver_server_announcing_last() -> None:
    async def main():
        a, b = pair()
        try:
            client = PortExchange(40001, tcp_peer_port=5000)
            server = PortExchange(5000, tcp_peer_port=40001)
            await send_all(b, client.announce(), 1.0)
            got = await drive(a, server, 1.0)
            # Until told, the server has said nothing: the client's wait times out.
            with pytest.raises(TimeoutError):
                await drive(b, client, 0.2)
            await send_all(a, server.announce(), 1.0)
            return got, await drive(b, client, 1.0)
        finally:
            a.close()
            b.close()

    assert asyncio.run(main()) == (PeerPort(40001), PeerPort(5000))


class _Ext:
    """A secure-mode stand-in: records which thread saw each message."""

    def __init__(self) -> None:
        self.seen: list[tuple[bytes, int]] = []
        self._out = b""
        self._done = False

    def receive_data(self, data: bytes) -> None:
        self.seen.append((data, threading.get_ident()))
        if len(data) > 2:
            self._done = True

    def data_to_send(self) -> bytes:
        out, self._out = self._out, b""
        return out

    def next_event(self) -> object | None:
        return "established" if self._done else None

    def timed_out(self) -> None: ...

    def connection_lost(self) -> None: ...


def test_a_pake_step_runs_off_the_loop_and_the_guess_is_counted_on_it() -> None:
    async def main():
        a, b = pair()
        ext = _Ext()
        guesses: list[int] = []
        try:
            b.send(b"\x00\x04body")
            event = await drive(a, FramedHandshake(ext, lambda: guesses.append(
                threading.get_ident())), 1.0)
            return event, ext.seen, guesses
        finally:
            a.close()
            b.close()

    loop_thread = threading.get_ident()  # asyncio.run runs the loop in this thread
    event, seen, guesses = asyncio.run(main())
    assert event == "established"
    assert seen[0] == (b"\x00\x04", loop_thread)  # the length, at once, on the loop
    assert seen[1][0] == b"body" and seen[1][1] != loop_thread  # the body off the loop
    assert guesses == [loop_thread]  # the server's budget is only touched on the loop


def test_framing_refuses_a_bad_length_before_any_body() -> None:
    framed = FramedHandshake(_Ext())
    with pytest.raises(HandshakeRefused, match="malformed"):
        framed.receive_data(b"\x00\x00")
    framed = FramedHandshake(_Ext())
    with pytest.raises(HandshakeRefused, match="malformed"):
        framed.receive_data(b"\xff\xff")


def test_no_plugin_imports_the_core() -> None:
    """The bundled plugins and vt-devices live on vt-api alone, as a third party's must."""
    offenders = []
    sources = [*ROOT.glob("plugins/*/vt_*/**/*.py"), *ROOT.glob("devices/vt_devices/**/*.py")]
    assert len(sources) > 20
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names
                          if n == "vtcore" or n.startswith("vtcore.")]
    assert offenders == []
