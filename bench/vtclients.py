"""Many vtun client sessions from one process, for the scale benchmark.

Run inside the client namespace by ``bench/run.py`` (not on its own)::

    VT_BENCH_PW=... python bench/vtclients.py SERVER PORT N --prefix s --local 172.20.0.1 \
        --peer-base 172.21

Sessions start ``--rate`` per second (vtund listens with a backlog of 10: a burst of
hundreds of simultaneous connects mostly measures SYN-ACK retransmission), then all stay
open together.  Session ``i`` logs in as profile ``<prefix><i>`` over TCP (``vtcore.protocol``'s
ClientHandshake), then sends one ICMP echo request from ``<peer-base>.<i // 250>.<i % 250 + 1>``
to ``--local`` inside a tunnel frame and waits for the kernel's echo reply to come back
through the server's device.  It prints one JSON line (handshake seconds per session,
sessions passing traffic), keeps every session open until a line arrives on stdin, then
closes them and exits.  Every wait is bounded by ``--timeout``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import struct
import sys
import time

from vtcore import testing
from vtcore.protocol import ProtocolError
from vtcore.protocol.events import Accepted, Answer, Challenged, Denied
from vtcore.protocol.frames import ECHO_REP, ECHO_REQ, StreamDecoder, frame
from vtcore.protocol.handshake import ClientHandshake
from vtcore.transports.base import VTUN_FRAMING

ECHO_REPLY_FRAME = VTUN_FRAMING.control(ECHO_REP)


def icmp_echo(src: str, dst: str, ident: int, seq: int = 1, size: int = 56) -> bytes:
    """An IPv4 ICMP echo request of ``size`` payload bytes, checksums filled in."""
    return testing.icmp_echo(src, dst, ident, seq, bytes(i % 256 for i in range(size)))


def is_echo_reply(pkt: bytes, src: str, ident: int) -> bool:
    """True for an IPv4 ICMP echo reply from ``src`` with our identifier."""
    if len(pkt) < 28 or pkt[0] >> 4 != 4 or pkt[9] != 1:
        return False
    ihl = (pkt[0] & 0x0F) * 4
    icmp = pkt[ihl:]
    return (
        pkt[12:16] == socket.inet_aton(src)
        and len(icmp) >= 8
        and icmp[0] == 0
        and struct.unpack("!H", icmp[4:6])[0] == ident & 0xFFFF
    )


class Session:
    """One client session: handshake, then one echo through the tunnel, then held open."""

    def __init__(self, i: int, args: argparse.Namespace) -> None:
        self.i = i
        self.args = args
        self.host = f"{args.prefix}{i}"
        self.addr = f"{args.peer_base}.{i // 250}.{i % 250 + 1}"
        self.handshake_s: float | None = None
        self.echo_ok = False
        self.error: str | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def login(self, start_at: float) -> None:
        a = self.args
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        t0 = time.monotonic()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(a.server, a.port), a.timeout
            )
            self.writer = writer
            hs = ClientHandshake(self.host, a.password, sslauth=True)
            ev = None
            while ev is None or isinstance(ev, Challenged):
                if isinstance(ev, Challenged):
                    writer.write(hs.send(Answer()))
                data = await asyncio.wait_for(reader.read(hs.bytes_needed), a.timeout)
                if not data:
                    raise ConnectionError("server closed during handshake")
                hs.receive_data(data)
                writer.write(hs.data_to_send())
                await writer.drain()
                ev = hs.next_event()
            if not isinstance(ev, Accepted):
                raise ConnectionError("denied" if isinstance(ev, Denied) else "no verdict")
            self.handshake_s = time.monotonic() - t0
            self._reader = reader
            self._decoder = StreamDecoder()
            self._early = self._decoder.feed(hs.trailing_data())
        except (OSError, TimeoutError, ConnectionError, ProtocolError) as e:
            self.error = f"{type(e).__name__}: {e}"

    async def echo(self) -> None:
        """Send an ICMP echo through the tunnel until its reply comes back (bounded)."""
        if self.error or self.writer is None:
            return
        ident = 0x4000 + self.i
        pkt = frame(icmp_echo(self.addr, self.args.local, ident))
        deadline = time.monotonic() + self.args.timeout
        frames = list(self._early)
        try:
            self.writer.write(pkt)
            next_send = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                for flags, payload in frames:
                    if flags == ECHO_REQ:
                        self.writer.write(ECHO_REPLY_FRAME)
                    elif flags == 0 and is_echo_reply(payload, self.args.local, ident):
                        self.echo_ok = True
                        return
                if time.monotonic() > next_send:  # the device may have dropped the first
                    self.writer.write(pkt)
                    next_send = time.monotonic() + 1.0
                try:
                    data = await asyncio.wait_for(self._reader.read(65536), 0.5)
                except TimeoutError:
                    frames = []
                    continue
                if not data:
                    raise ConnectionError("server closed the tunnel")
                frames = self._decoder.feed(data)
            self.error = "no echo reply"
        except (OSError, ConnectionError) as e:
            self.error = f"{type(e).__name__}: {e}"

    async def drain_forever(self) -> None:
        """Keep reading (and answering echo requests) so the server never blocks on us."""
        if self.writer is None or self.error:
            return
        try:
            while True:
                data = await self._reader.read(65536)
                if not data:
                    return
                for flags, _ in self._decoder.feed(data):
                    if flags == ECHO_REQ:
                        self.writer.write(ECHO_REPLY_FRAME)
        except (OSError, asyncio.CancelledError):
            return

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def main_async(args: argparse.Namespace) -> int:
    sessions = [Session(i, args) for i in range(args.n)]
    t0 = time.monotonic()
    rate = args.rate if args.rate > 0 else float("inf")
    await asyncio.gather(*(s.login(t0 + s.i / rate) for s in sessions))
    login_wall = time.monotonic() - t0
    await asyncio.gather(*(s.echo() for s in sessions))
    ready_wall = time.monotonic() - t0  # first connect to every session's echo answered
    errors: dict[str, int] = {}
    for s in sessions:
        if s.error:
            errors[s.error[:80]] = errors.get(s.error[:80], 0) + 1
    report = {
        "n": args.n,
        "handshake_s": [s.handshake_s for s in sessions if s.handshake_s is not None],
        "logged_in": sum(s.handshake_s is not None for s in sessions),
        "passing": sum(s.echo_ok for s in sessions),
        "login_wall_s": login_wall,
        "ready_wall_s": ready_wall,
        "rate": args.rate,
        "errors": errors,
    }
    print(json.dumps(report), flush=True)
    drains = [asyncio.ensure_future(s.drain_forever()) for s in sessions]
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), args.hold)
    except TimeoutError:
        pass
    for s in sessions:
        s.close()
    for d in drains:
        d.cancel()
    await asyncio.gather(*drains, return_exceptions=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("server")
    ap.add_argument("port", type=int)
    ap.add_argument("n", type=int)
    ap.add_argument("--prefix", default="s")
    ap.add_argument("--local", required=True, help="server-side inner address")
    ap.add_argument("--peer-base", required=True, help="first two octets of client addresses")
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--rate", type=float, default=100.0,
                    help="new connections per second (0: all at once)")
    ap.add_argument("--hold", type=float, default=120.0, help="max seconds to hold sessions")
    args = ap.parse_args()
    args.password = os.environ.get("VT_BENCH_PW", "").encode()
    if not args.password:
        ap.error("set VT_BENCH_PW to the profiles' password")
    if not 1 <= args.n <= 60000:
        ap.error("n must be 1..60000")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
