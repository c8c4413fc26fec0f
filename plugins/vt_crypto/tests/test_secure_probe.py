"""Secure mode over UDP: only an authenticated frame answers a dead-peer probe.

The peer's process is gone; someone who can send from its address (on the path, or
spoofing) sends replays of its earlier datagrams, a frame sealed under another session's
keys, a plain vtun echo reply and noise.  None of it may keep the session alive: the
probe ends it in ~3 s.  A fresh frame sealed with the session's keys answers at once.
Real sockets on loopback.
"""

from __future__ import annotations

import asyncio
import socket
import time

from secure_helpers import handshake
from vt_crypto.secure.mode import MODE
from vt_crypto.secure.seal import FRAME_ECHO_REP

from vtcore.protocol.frames import ECHO_REP
from vtcore.protocol.keepalive import PROBE_TIMEOUT, KeepAlive
from vtcore.runtime.tunnel import Tunnel
from vtcore.testing import QueueDevice, udp_pair
from vtcore.transports.base import Endpoints
from vtcore.transports.udp import UdpLink

ENDS = Endpoints("127.0.0.1", 0, "127.0.0.1", 0)


def test_only_an_authenticated_frame_answers_a_probe() -> None:
    async def main():
        a, b = udp_pair()
        keys = handshake().events
        client = MODE.wrap_link(keys["client"], UdpLink(a, ENDS, connected=True, raw=True),
                                "client")
        server = MODE.wrap_link(keys["server"], UdpLink(b, ENDS, connected=True, raw=True),
                                "server")
        t = Tunnel(client, QueueDevice(), [], keepalive=KeepAlive(30, 4, time.monotonic()))
        task = asyncio.ensure_future(t.run())
        spoofer = None
        try:
            # What the real server sent earlier: read once by the client, kept to replay.
            sent = [server.seal_control(ECHO_REP), server.seal_data(b"E" * 84)]
            for frame in sent:
                b.send(frame)
            await asyncio.sleep(0.2)
            assert t.device.written == [b"E" * 84]

            # The real peer answers a probe with a fresh sealed frame: alive.
            answer = t.probe()
            b.send(server.seal_control(ECHO_REP))
            assert await asyncio.wait_for(answer, 2) is True

            # The server's process dies; someone sends from its address from now on.
            addr = b.getsockname()
            b.close()
            spoofer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            spoofer.bind(addr)
            spoofer.connect(a.getsockname())
            stranger = handshake(seed=b"another session").events["server"]
            forged = [*sent, stranger.keys.sealer("server").seal(FRAME_ECHO_REP, b""),
                      b"\x40\x00", bytes(40)]
            rejected = client.bad_frames
            start = time.monotonic()
            answer = t.probe()
            for _ in range(int((PROBE_TIMEOUT + 2) / 0.1)):
                if answer.done():
                    break
                for frame in forged:
                    spoofer.send(frame)
                await asyncio.sleep(0.1)
            assert await asyncio.wait_for(answer, 1) is False
            took = time.monotonic() - start
            reason = await asyncio.wait_for(task, 1)
        finally:
            t.stop("test over")
            client.close()
            t.device.close()
            if spoofer is not None:
                spoofer.close()
        assert reason == "network timeout (peer did not answer a probe)"
        assert PROBE_TIMEOUT - 0.5 <= took <= PROBE_TIMEOUT + 1.5, took
        assert client.bad_frames - rejected >= 5 * len(forged), "the forgeries arrived"
        assert t.device.written == [b"E" * 84], "no replayed packet reached the device"

    asyncio.run(main())
