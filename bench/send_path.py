"""Micro-benchmark of one session's device -> network path, in process (not a test):
``python bench/send_path.py [aes|none]``.

A QueueDevice hands 32-packet batches (1400 bytes) to a real Tunnel whose chain is the
installed aes128cfb module (vtun wire, ``aes``) or empty (``none``); a TcpLink over a
socketpair frames and sends them and the other end is drained.  Prints packets per
second, best of 7 passes of 32,000 packets.  To compare two revisions run it under each
tree's virtualenv, alternately (the API it uses is the same since contract 1.0).
"""

from __future__ import annotations

import socket
import sys
import time

from vt_api import LinkSettings

from vtcore.plugins import load_plugins
from vtcore.runtime.session import build_chain
from vtcore.runtime.tunnel import Tunnel
from vtcore.testing import QueueDevice
from vtcore.transports.tcp import TcpLink

AES128CFB = 11
BATCH = 32
BATCHES = 1000
PASSES = 7


def main() -> None:
    cipher = sys.argv[1] if len(sys.argv) > 1 else "aes"
    settings = LinkSettings(host="h", role="server", transport="tcp", tunnel_type="tun",
                            encrypt=None if cipher == "none" else AES128CFB, password=b"pw")
    chain = [m for _, m in build_chain(load_plugins().registry, settings)]
    ours, peer = socket.socketpair()
    peer.setblocking(False)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    device = QueueDevice()
    tunnel = Tunnel(TcpLink(ours), device, chain)
    packet = bytes(range(256)) * 5 + bytes(120)
    best = float("inf")
    for _ in range(PASSES):
        start = time.perf_counter()
        for _ in range(BATCHES):
            for _ in range(BATCH):
                device.inject(packet)
            tunnel._on_device()
            try:
                while peer.recv(1 << 20):
                    pass
            except BlockingIOError:
                pass
        best = min(best, time.perf_counter() - start)
    print(f"{BATCHES * BATCH / best:.0f} packets/s")


if __name__ == "__main__":
    main()
