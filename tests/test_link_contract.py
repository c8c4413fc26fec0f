"""The link owns its framing (issue 14 item 1): the tunnel hands it payloads and control
flags and never builds a header; a link written for contract 1.0/1.1 (``framing`` +
``write_frames``) still carries a tunnel through the core's adapter.  Real UDP sockets on
loopback, a real Tunnel, an in-memory device."""

from __future__ import annotations

import asyncio
import socket

import pytest
from vt_api import CONN_CLOSE, ECHO_REQ, Framing, LegacyLink

from vtcore.protocol.frames import decode_datagram
from vtcore.runtime.tunnel import Tunnel
from vtcore.testing import QueueDevice, udp_pair
from vtcore.transports.base import VTUN_FRAMING, Endpoints, as_link
from vtcore.transports.udp import UdpLink

ENDS = Endpoints("127.0.0.1", 0, "127.0.0.1", 0)


class OldLink:
    """A third party's datagram link as contract 1.1 had it: the tunnel framed for it."""

    stream = False

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.framing = Framing(VTUN_FRAMING.header, VTUN_FRAMING.control, 1400)
        self.endpoints = ENDS
        self.bad_frames = self.dropped_out = 0
        self.writes: list[list[bytes]] = []

    def fileno(self) -> int:
        return self.sock.fileno()

    def read_frames(self, limit: int) -> list[tuple[int, bytes]]:
        try:
            frame = decode_datagram(self.sock.recv(65535), 2148)
        except BlockingIOError:
            return []
        return [frame] if frame is not None else []

    def write_frames(self, parts: list[bytes]) -> None:
        self.writes.append(parts)
        for i in range(0, len(parts), 2):
            self.sock.send(parts[i] + parts[i + 1])

    def backlog(self) -> int:
        return 0

    def flush(self) -> None: ...

    def ready(self) -> bool:
        return True

    def close(self) -> None:
        self.sock.close()


def test_the_tunnel_sends_payloads_the_link_frames_them() -> None:
    a, b = udp_pair()
    link = UdpLink(a, ENDS, connected=True)
    try:
        link.send([b"one", b"two" * 10])
        link.send_control(ECHO_REQ)
        got = [decode_datagram(b.recv(100), 2148) for _ in range(3)]
        assert got == [(0, b"one"), (0, b"two" * 10), (ECHO_REQ, b"")]
    finally:
        link.close()
        b.close()


def test_a_contract_1_1_link_still_carries_a_tunnel() -> None:
    a, b = udp_pair()
    old = OldLink(a)
    assert isinstance(old, LegacyLink) and not hasattr(old, "send")
    link = as_link(old)
    assert link.max_payload == 1400 and link.fileno() == a.fileno()
    peer = UdpLink(b, ENDS, connected=True)

    async def main() -> tuple[list[bytes], list]:
        device = QueueDevice()
        tunnel = Tunnel(link, device, [])
        task = asyncio.ensure_future(tunnel.run())
        try:
            device.inject(b"x" * 100)
            device.inject(b"y" * 1500)  # over the link's max_payload: dropped, counted
            peer.send([b"from the peer"])
            await asyncio.sleep(0.3)
            frames = peer.read_frames(8)
            tunnel.stop("done")  # sends CONN_CLOSE through the adapter
            await asyncio.wait_for(task, 2)
            await asyncio.sleep(0.05)
            return device.written, frames + peer.read_frames(8)
        finally:
            if not task.done():
                task.cancel()

    try:
        written, frames = asyncio.run(main())
        assert written == [b"from the peer"]
        assert [f for f in frames if f[0] == 0] == [(0, b"x" * 100)]
        assert frames[-1] == (CONN_CLOSE, b"")  # control frames go through it too
        assert [b"\x00\x64", b"x" * 100] in old.writes  # the adapter framed for it
    finally:
        old.close()
        peer.close()


class ViewsQueueDevice(QueueDevice):
    """A third party's device declaring the contract 1.4 extra ``ViewsDevice``."""

    takes_views = True


def test_views_are_asked_only_of_a_declared_link_for_a_declared_device() -> None:
    """Contract 1.4: ``ViewsDevice.takes_views`` and ``ViewsLink.views``, both declared in
    vt_api (they were found with getattr/hasattr before): the tunnel turns views on only
    when both ends declare them and no frame module reads the payloads."""
    from vt_api import ViewsDevice, ViewsLink

    from vtcore.runtime.tunnel import Tunnel

    class Module:  # any frame module: it reads the payloads, so no views
        def encode(self, p: bytes) -> bytes:
            return p

        def decode(self, p: bytes) -> bytes:
            return p

    cases = [(ViewsQueueDevice, [], True), (ViewsQueueDevice, [Module()], False),
             (QueueDevice, [], False)]
    for device_type, chain, expect in cases:
        a, b = udp_pair()
        link = UdpLink(a, ENDS, connected=True)
        device = device_type()
        try:
            assert isinstance(link, ViewsLink) and not link.views
            assert isinstance(device, ViewsDevice) == (device_type is ViewsQueueDevice)
            Tunnel(link, device, chain)
            assert link.views is expect, (device_type, chain)
        finally:
            link.close()
            device.close()
            b.close()
    a, b = udp_pair()
    try:  # a link without the extra is never asked
        assert not isinstance(as_link(OldLink(a)), ViewsLink)
    finally:
        a.close()
        b.close()


class TooBigQueueDevice(QueueDevice):
    """A third party's device declaring the contract 1.4 extra ``TooBigDevice``."""

    def too_big(self, packet: bytes, mtu: int) -> bool:
        return False


def test_the_path_mtu_is_followed_only_where_a_drop_costs_one_packet() -> None:
    """Contract 1.4 ``PathMtuLink``: the tunnel asks the link to keep within the path MTU
    (DF) only with no frame module in the chain (a stream compressor must not lose a frame
    it encoded) and a ``TooBigDevice`` to tell the sender; and a link to vtund refuses."""
    from vt_api import PathMtuLink, TooBigDevice

    class Module:
        def encode(self, p: bytes) -> bytes:
            return p

        def decode(self, p: bytes) -> bytes:
            return p

    cases = [(TooBigQueueDevice, [], True, True), (TooBigQueueDevice, [Module()], True, False),
             (QueueDevice, [], True, False), (TooBigQueueDevice, [], False, False)]
    for device_type, chain, vt_peer, expect in cases:
        a, b = udp_pair()
        link = UdpLink(a, ENDS, connected=True, vt_peer=vt_peer)
        device = device_type()
        try:
            assert isinstance(link, PathMtuLink) and not link.df
            assert isinstance(device, TooBigDevice) == (device_type is TooBigQueueDevice)
            Tunnel(link, device, chain)
            assert link.df is expect, (device_type, chain, vt_peer)
            assert (link.path_mtu is not None) is expect  # loopback: 65536
        finally:
            link.close()
            device.close()
            b.close()


class FragmentQueueDevice(QueueDevice):
    """A third party's device declaring the contract 1.5 extra ``FragmentDevice``: it
    cuts anything over ``mtu`` into halves that fit (its own format, not IP)."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[int, int]] = []

    def fragment(self, packet: bytes, mtu: int) -> list[bytes]:
        self.asked.append((len(packet), mtu))
        if packet.startswith(b"keep"):
            return []
        half = len(packet) // 2
        return [packet[:half], packet[half:]]


@pytest.mark.parametrize("with_module", [False, True], ids=["no-module", "module"])
def test_a_fragment_device_cuts_what_the_link_cannot_carry(with_module: bool) -> None:
    """Contract 1.5 ``FragmentDevice``: a packet over the link's ``max_payload`` goes as
    the pieces the device makes of it (counted in ``fragmented``); one it declines is
    dropped as before; with a module in the chain (its frames are not packets) it is
    never asked."""
    from vt_api import FragmentDevice

    class Module:
        def encode(self, p: bytes) -> bytes:
            return p

        def decode(self, p: bytes) -> bytes:
            return p

    a, b = udp_pair()
    old = OldLink(a)
    link = as_link(old)
    peer = UdpLink(b, ENDS, connected=True)
    device = FragmentQueueDevice()
    assert isinstance(device, FragmentDevice)

    async def main() -> tuple[list, object]:
        tunnel = Tunnel(link, device, [Module()] if with_module else [])
        task = asyncio.ensure_future(tunnel.run())
        try:
            device.inject(b"x" * 100)
            device.inject(b"y" * 2000)  # over 1400: two halves
            device.inject(b"keep" * 500)  # declined: dropped, counted
            await asyncio.sleep(0.3)
            frames = peer.read_frames(8)
            tunnel.stop("done")
            await asyncio.wait_for(task, 2)
            return frames, tunnel.counters
        finally:
            if not task.done():
                task.cancel()

    try:
        frames, counters = asyncio.run(main())
        data = [p for f, p in frames if f == 0]
        if with_module:
            assert data == [b"x" * 100] and device.asked == []
            assert (counters.fragmented, counters.dropped_encode) == (0, 2)
        else:
            assert data == [b"x" * 100, b"y" * 1000, b"y" * 1000]
            assert device.asked == [(2000, 1400), (2000, 1400)]
            assert (counters.fragmented, counters.dropped_encode) == (1, 1)
    finally:
        old.close()
        peer.close()
        device.close()
