"""The linker on a real tun device: what the kernel answers during a device write leaves
on the link in the same wake-up (vtcore.runtime.tunnel, the read after the write).

A ping's echo is made while the request is written to the tun; reading the device right
after the write sends it on without another round of the event loop, which is one of the
four hops of an idle ping through the tunnel.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time

import pytest
from vt_devices.tun import open_tun_device
from vtdev_helpers import parse_echo_reply

from vtcore.api import DeviceRequest
from vtcore.protocol.frames import StreamDecoder, frame
from vtcore.runtime import loop as loop_mod
from vtcore.runtime.tunnel import Tunnel
from vtcore.testing import icmp_echo
from vtcore.transports.tcp import TcpLink

KERNEL_IP, PEER_IP = "10.78.0.1", "10.78.0.2"


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """A connected TCP pair on loopback (the link needs a real TCP socket)."""
    with socket.create_server(("127.0.0.1", 0)) as srv:
        peer = socket.create_connection(srv.getsockname(), timeout=3)
        ours, _ = srv.accept()
    return ours, peer


@pytest.mark.netns
def test_the_kernels_answer_leaves_within_the_link_wakeup(netns) -> None:
    # Nothing else of the kernel's on the device (IPv6 would send solicitations).
    subprocess.run(["ip", "netns", "exec", netns.name, "sysctl", "-qw",
                    "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"],
                   check=True, timeout=10)
    with netns.entered():
        dev = open_tun_device(DeviceRequest("tun", "vtr0"))
    netns.ip("addr", "add", f"{KERNEL_IP}/30", "dev", "vtr0")
    netns.ip("link", "set", "dev", "vtr0", "up")
    ours, peer = tcp_pair()
    tunnel = Tunnel(TcpLink(ours), dev, [])
    sent_in_link_wakeup: list[int] = []
    on_link = tunnel._on_link

    def watched_on_link() -> None:
        before = tunnel.counters.frames_out
        on_link()
        sent_in_link_wakeup.append(tunnel.counters.frames_out - before)

    tunnel._on_link = watched_on_link  # what run() registers as the link's reader
    payload = b"vt-reply" * 8
    request = icmp_echo(PEER_IP, KERNEL_IP, 0x5151, 3, payload)

    async def exchange() -> tuple[str, str, int, int, bytes] | None:
        lp = asyncio.get_running_loop()
        session = asyncio.ensure_future(tunnel.run())
        peer.setblocking(False)
        await lp.sock_sendall(peer, frame(request))
        decoder = StreamDecoder()
        deadline = time.monotonic() + 3
        try:
            while time.monotonic() < deadline:
                data = await asyncio.wait_for(lp.sock_recv(peer, 4096), deadline - time.monotonic())
                for flags, p in decoder.feed(data):
                    if not flags and (r := parse_echo_reply(p)) and r[2] == 0x5151:
                        return r
            return None
        finally:
            tunnel.stop("test over")
            await session

    try:
        with dev:
            reply = loop_mod.run(exchange())
    finally:
        ours.close()
        peer.close()
    assert reply == (KERNEL_IP, PEER_IP, 0x5151, 3, payload)
    # The request came in one link wake-up, and the echo went out in that same one.
    assert sent_in_link_wakeup and sent_in_link_wakeup[0] == 1
    assert tunnel.counters.byte_in == len(request)
