"""A plugin that breaks the contract is reported with its name and takes down nothing else:
a word another plugin answers is refused at registration, a ``create`` that raises fails
that one session, an ``encode``/``decode`` that raises or returns garbage ends that one
session while another on the same loop carries on.

The sessions are real: the linker on a TCP pair over loopback and a pipe device, run on
the daemons' own event loop.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time

import pytest
from vt_devices.pipe import PipeDevice

from vtcore.api import FrameModuleType, LinkSettings, PacerType, Registry, RegistryError
from vtcore.protocol.frames import StreamDecoder, frame
from vtcore.runtime import loop as loop_mod
from vtcore.runtime.session import SessionError, build_chain, build_pacers
from vtcore.runtime.tunnel import Tunnel
from vtcore.transports.tcp import TcpLink


def record(name: str, keyword: str, words: dict[str, int], create=lambda s: None):
    return FrameModuleType(name, 150, keyword, words, create)


@pytest.mark.parametrize("keyword, words, clash", [
    ("compress", {"zlib": 1}, "compress zlib"),
    ("compress", {}, "compress"),
    ("speed", {"fast": 1}, "speed"),
])
def test_a_word_another_plugin_answers_is_refused(keyword, words, clash):
    reg = Registry()
    reg.current_plugin = "zlib"
    reg.add_frame_module(record("zlib", "compress", {"zlib": 1}))
    reg.current_plugin = "shaper"
    reg.add_frame_module(record("shaper", "speed", {}))
    reg.current_plugin = "intruder"
    with pytest.raises(RegistryError, match=f"answers '{clash}', already answered by "):
        reg.add_frame_module(record("other", keyword, words))
    assert "other" not in reg.frame_modules
    reg.add_frame_module(record("zstd", "compress", {"zstd": 5}))  # a new word is fine
    assert reg.answering("compress", "zstd").name == "zstd"


def test_a_create_that_raises_fails_that_session_naming_the_plugin():
    def boom(settings: LinkSettings):
        raise RuntimeError("no zstd today")

    reg = Registry()
    reg.current_plugin = "vt-zstd"
    reg.add_frame_module(record("zstd", "compress", {"zstd": 5}, boom))
    with pytest.raises(SessionError, match=r"^plugin vt-zstd \(zstd\): create failed: "
                                           r"RuntimeError: no zstd today$"):
        build_chain(reg, LinkSettings("h", "server"))


def test_a_pacer_whose_create_raises_fails_that_session_naming_the_plugin():
    def boom(settings: LinkSettings):
        raise OSError("no clock")

    reg = Registry()
    reg.current_plugin = "vt-tbf"
    reg.add_pacer(PacerType("tbf", "speed", boom))
    with pytest.raises(SessionError, match=r"^plugin vt-tbf \(tbf\): create failed: "
                                           r"OSError: no clock$"):
        build_pacers(reg, LinkSettings("h", "server"))
    reg.current_plugin = "vt-other"
    with pytest.raises(RegistryError, match="answers 'speed', already answered by pacer"):
        reg.add_frame_module(record("speedy", "speed", {}))


class Garbage:
    """Returns ``bad`` (or raises it) from the side named by ``side``."""

    def __init__(self, side: str, bad: object) -> None:
        self.side, self.bad = side, bad

    def _out(self, frame: bytes):
        if isinstance(self.bad, Exception):
            raise self.bad
        return self.bad

    def encode(self, frame: bytes):
        return self._out(frame) if self.side == "encode" else frame

    def decode(self, frame: bytes):
        return self._out(frame) if self.side == "decode" else frame


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as srv:
        peer = socket.create_connection(srv.getsockname(), timeout=3)
        ours, _ = srv.accept()
    peer.setblocking(False)
    return ours, peer


async def recv_data(peer: socket.socket, want: bytes, timeout: float = 3.0) -> bool:
    """True once a data frame carrying ``want`` arrives on ``peer``."""
    lp = asyncio.get_running_loop()
    decoder = StreamDecoder()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = await asyncio.wait_for(lp.sock_recv(peer, 4096), deadline - time.monotonic())
        except TimeoutError:
            return False
        if not data:
            return False
        if any(not flags and p == want for flags, p in decoder.feed(data)):
            return True
    return False


@pytest.mark.parametrize("side, bad, error", [
    ("decode", "text", "decode failed: TypeError: returned str, not bytes"),
    ("decode", 42, "decode failed: TypeError: returned int, not bytes"),
    ("decode", ValueError("bad frame"), "decode failed: ValueError: bad frame"),
    ("encode", ["list"], "encode failed: TypeError: returned list, not bytes"),
    ("encode", KeyError("k"), "encode failed: KeyError: 'k'"),
])
def test_a_module_breaking_the_contract_ends_its_session_only(side, bad, error):
    opened: list[object] = []

    async def scenario() -> tuple[str, bool]:
        bad_ours, bad_peer = tcp_pair()
        good_ours, good_peer = tcp_pair()
        bad_dev, good_dev = PipeDevice("bad"), PipeDevice("good")
        opened.extend([bad_ours, bad_peer, good_ours, good_peer, bad_dev, good_dev])
        broken = Tunnel(TcpLink(bad_ours), bad_dev, [Garbage(side, bad)],
                        names=["plugin vt-garbage (garbage)"])
        healthy = Tunnel(TcpLink(good_ours), good_dev, [Garbage("none", None)])
        runs = [asyncio.ensure_future(t.run()) for t in (broken, healthy)]
        lp = asyncio.get_running_loop()
        if side == "decode":
            await lp.sock_sendall(bad_peer, frame(b"from the network"))
        else:
            os.write(bad_dev.stdio_fd(), b"from the device")
        reason = await asyncio.wait_for(runs[0], 3)
        # The other session on the same loop still carries traffic both ways.
        os.write(good_dev.stdio_fd(), b"still here")
        alive = await recv_data(good_peer, b"still here")
        await lp.sock_sendall(good_peer, frame(b"and back"))
        stdio = socket.socket(fileno=os.dup(good_dev.stdio_fd()))
        stdio.setblocking(False)
        opened.append(stdio)
        back = await asyncio.wait_for(lp.sock_recv(stdio, 64), 3)
        healthy.stop("test over")
        await runs[1]
        return reason, alive and back == b"and back"

    try:
        reason, other_alive = loop_mod.run(scenario())
    finally:
        for thing in opened:
            thing.close()
    assert reason == f"plugin vt-garbage (garbage): {error}"
    assert other_alive
