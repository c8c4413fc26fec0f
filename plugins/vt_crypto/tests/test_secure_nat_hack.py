"""Secure mode over UDP with ``nat_hack``: only a datagram that authenticates names the peer.

A ``nat_hack`` server connects its UDP socket to wherever the first datagram came from.
vtund takes any datagram; with secure mode that would let a forged one, from anywhere,
steal the session before the real client's first frame arrives.  Real sockets on
loopback; the forger sends from another loopback address.
"""

from __future__ import annotations

import select
import socket

from secure_helpers import handshake
from vt_crypto.secure.mode import MODE

from vtcore.protocol.frames import ECHO_REQ
from vtcore.transports.base import Endpoints
from vtcore.transports.udp import UdpLink


def _udp(addr: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, 0))
    return s


def _read(link, want: int) -> list[tuple[int, bytes]]:
    """Frames from ``link`` until ``want`` arrived or 2 s passed."""
    got: list[tuple[int, bytes]] = []
    for _ in range(40):
        if len(got) >= want:
            break
        select.select([link.fileno()], [], [], 0.05)
        got += link.read_frames(64)
    return got


def _links(srv: socket.socket, cli: socket.socket):
    pair = handshake()
    ends = Endpoints("127.0.0.1", 0, "127.0.0.1", 0)
    server = MODE.wrap_link(pair.events["server"],
                            UdpLink(srv, ends, connected=False, raw=True), "server")
    cli.connect(srv.getsockname())
    client = MODE.wrap_link(pair.events["client"],
                            UdpLink(cli, ends, connected=True, raw=True), "client")
    return server, client


def test_forged_first_datagrams_do_not_name_the_peer() -> None:
    srv, cli, forger = _udp("127.0.0.1"), _udp("127.0.0.1"), _udp("127.0.0.2")
    try:
        server, client = _links(srv, cli)
        # A frame sealed under another session's keys, and noise, from elsewhere first.
        other_srv, other_cli = _udp("127.0.0.1"), _udp("127.0.0.1")
        try:
            _, stranger = _links(other_srv, other_cli)
            forged = stranger.seal_data(b"not yours")
        finally:
            other_srv.close()
            other_cli.close()
        for junk in (forged, b"\x00" * 40, b"x"):
            forger.sendto(junk, srv.getsockname())
        assert not server.ready()
        client.send([b"hello"])
        assert _read(server, 1) == [(0, b"hello")]  # opened once, so not taken for a replay
        assert server.ready() and server.inner.peer_addr == cli.getsockname()
        assert server.bad_frames == 3
        # The server now answers the real client, and no longer hears the forger.
        server.send_control(ECHO_REQ)
        assert _read(client, 1) == [(ECHO_REQ, b"")]
        forger.sendto(forged, srv.getsockname())
        client.send([b"again"])
        assert _read(server, 1) == [(0, b"again")]
    finally:
        for s in (srv, cli, forger):
            s.close()

