"""UDP port exchange: Debian little endian, upstream big endian (spec 3.1); the link's
``nat_hack`` peer (spec 3.3)."""

from __future__ import annotations

import select
import socket

import pytest

from vtcore.protocol.errors import ProtocolError
from vtcore.protocol.udp import PeerPort, PortExchange, pack_port, unpack_port
from vtcore.transports.base import Endpoints
from vtcore.transports.udp import UdpLink


def test_captured_bytes() -> None:
    assert pack_port(5000) == b"\x88\x13"
    assert pack_port(35639) == b"\x37\x8b"
    assert pack_port(5000, little_endian=False) == b"\x13\x88"


def test_unpack_either_order_by_tcp_port() -> None:
    assert unpack_port(b"\x37\x8b", 35639) == 35639  # Debian
    assert unpack_port(b"\x8b\x37", 35639) == 35639  # upstream
    assert unpack_port(b"\x88\x13", None) == 5000  # default little endian
    assert unpack_port(b"\x88\x13", 1234) == 5000  # NAT: no match, little endian


@pytest.mark.parametrize("data", [b"", b"\x01", b"\x01\x02\x03", b"\x00\x00"])
def test_unpack_rejects(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        unpack_port(data, None)


def test_pack_rejects_bad_port() -> None:
    with pytest.raises(ValueError):
        pack_port(0)
    with pytest.raises(ValueError):
        pack_port(70000)


def test_port_exchange() -> None:
    ex = PortExchange(35639, tcp_peer_port=5000)
    assert ex.data_to_send() == b""  # speaks only when told: the server connects first
    assert ex.announce() == b"\x37\x8b"
    with pytest.raises(RuntimeError):
        ex.announce()
    assert ex.bytes_needed == 2
    ex.receive_data(b"\x13")
    assert ex.next_event() is None and ex.bytes_needed == 1
    ex.receive_data(b"\x88")
    assert ex.next_event() == PeerPort(5000)  # big endian peer recognised
    assert ex.next_event() is None and ex.bytes_needed == 0
    with pytest.raises(ProtocolError):
        ex.receive_data(b"x")
    ex2 = PortExchange(5000)
    with pytest.raises(ProtocolError):
        ex2.receive_data(b"\x01\x02\x03")


def test_nat_hack_peer_is_the_first_well_formed_datagrams_source() -> None:
    """vtund connects to whatever sent first; vt to the first valid vtun frame's sender
    (real sockets on loopback, the strangers on other loopback addresses)."""
    socks = []
    for addr in ("127.0.0.1", "127.0.0.3", "127.0.0.4"):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((addr, 0))
        socks.append(s)
    srv, stray, peer = socks
    try:
        link = UdpLink(srv, Endpoints("127.0.0.1", 0, "127.0.0.1", 0), connected=False)
        learnt: list[tuple] = []
        link.on_peer = learnt.append
        stray.sendto(b"GET / HTTP/1.0\r\n\r\n", srv.getsockname())  # not a vtun frame
        peer.sendto(b"\x00\x03abc", srv.getsockname())
        got: list[tuple[int, bytes]] = []
        for _ in range(40):  # 2 s at most
            if got:
                break
            select.select([srv], [], [], 0.05)
            got += link.read_frames(64)
        assert got == [(0, b"abc")] and link.bad_frames == 1
        assert learnt == [peer.getsockname()] and link.ready()
        assert link.endpoints.remote_port == peer.getsockname()[1]
    finally:
        for s in socks:
            s.close()
