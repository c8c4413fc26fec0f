"""The tunnel's dead-peer probe over real UDP sockets on loopback (no namespaces).

An ICMP port-unreachable (the peer's process is gone) starts a probe; a peer that does not
answer within ~3 s ends the session, one that answers keeps it, however many ICMP errors
(forgeable) come.  The sans-I/O timing is in ``test_protocol_keepalive.py``.
"""

from __future__ import annotations

import asyncio
import socket
import time

from vtcore.protocol.keepalive import PROBE_TIMEOUT, KeepAlive
from vtcore.runtime.tunnel import Tunnel
from vtcore.testing import QueueDevice, udp_pair
from vtcore.transports.base import Endpoints
from vtcore.transports.udp import UdpLink

ENDS = Endpoints("127.0.0.1", 0, "127.0.0.1", 0)


def tunnel(sock: socket.socket, **kw) -> Tunnel:
    ka = KeepAlive(30, 4, time.monotonic(), **kw)
    return Tunnel(UdpLink(sock, ENDS, connected=True), QueueDevice(), [], keepalive=ka)


async def _ended(t: Tunnel, task: asyncio.Task, timeout: float) -> tuple[str, float]:
    start = time.monotonic()
    reason = await asyncio.wait_for(task, timeout)
    return reason, time.monotonic() - start


def test_port_unreachable_starts_a_probe_and_a_gone_peer_ends_the_session() -> None:
    async def main():
        a, b = udp_pair()
        b.close()  # the peer's process died: its port answers ICMP port-unreachable
        t = tunnel(a)
        task = asyncio.ensure_future(t.run())  # its first ECHO_REQ draws the ICMP error
        try:
            # Before: the error was ignored and only the keep-alive (~3 min) ended it.
            reason, took = await _ended(t, task, PROBE_TIMEOUT + 5)
        finally:
            t.link.close()
            t.device.close()
        assert reason == "network timeout (peer did not answer a probe)"
        assert PROBE_TIMEOUT - 0.5 <= took <= PROBE_TIMEOUT + 2, took
        assert t.peer_lost
        assert t.counters.probes == 1
        assert t.counters.echo_sent >= 5  # every 0.5 s while probing

    asyncio.run(main())


def test_icmp_errors_alone_never_end_a_session_whose_peer_answers() -> None:
    async def main():
        a, b = udp_pair()
        ta, tb = tunnel(a), tunnel(b)
        tasks = [asyncio.ensure_future(t.run()) for t in (ta, tb)]
        try:
            await asyncio.sleep(0.1)
            # Forged errors every 0.1 s for twice the probe's time-out, as the kernel
            # would report them on the link.
            for _ in range(int(2 * PROBE_TIMEOUT / 0.1)):
                ta.link.on_unreachable()
                await asyncio.sleep(0.1)
            assert not any(t.done() for t in tasks), [t.result() for t in tasks if t.done()]
            assert ta.counters.probes >= 2, ta.counters
            assert tb.counters.echo_received >= ta.counters.probes
            assert await asyncio.wait_for(ta.probe(), 2) is True
        finally:
            for t in (ta, tb):
                t.stop("test over")
            await asyncio.gather(*tasks)
            for t in (ta, tb):
                t.link.close()
                t.device.close()

    asyncio.run(main())


def test_probe_answers_false_when_the_session_ends_without_an_answer() -> None:
    async def main():
        a, b = udp_pair()
        ta = tunnel(a)
        task = asyncio.ensure_future(ta.run())
        try:
            await asyncio.sleep(0.1)
            # b is silent (open, so no ICMP either): only the probe's time-out decides.
            start = time.monotonic()
            assert await asyncio.wait_for(ta.probe(), PROBE_TIMEOUT + 3) is False
            assert PROBE_TIMEOUT - 0.5 <= time.monotonic() - start <= PROBE_TIMEOUT + 2
            assert task.done() and ta.peer_lost
            assert await ta.probe() is False  # the session is over: at once
        finally:
            ta.stop("test over")
            await task
            ta.link.close()
            ta.device.close()
            b.close()

    asyncio.run(main())


def test_data_sent_into_silence_starts_a_probe() -> None:
    """No ICMP error (a firewall drops, the host is gone): sending with nothing heard
    back for 2 s starts the probe, so the session ends after ~5 s, not ~3 min."""

    async def main():
        a, b = udp_pair()
        ta = tunnel(a, watch_sending=True)
        task = asyncio.ensure_future(ta.run())
        try:
            await asyncio.sleep(0.05)
            start = time.monotonic()
            for _ in range(100):
                if task.done():
                    break
                ta.device.inject(b"E" * 84)  # a packet the device hands the tunnel
                await asyncio.sleep(0.1)
            reason = await asyncio.wait_for(task, 2)
            took = time.monotonic() - start
        finally:
            ta.link.close()
            ta.device.close()
            b.close()
        assert reason == "network timeout (peer did not answer a probe)"
        assert 4 <= took <= 7, took

    asyncio.run(main())
