"""A vtun client that speaks frames by hand, run inside a test namespace.

It logs in as a vtund client would (``vtcore.protocol``'s ClientHandshake, the UDP port
exchange when the server says ``proto udp``), builds the session's frame chain from the
server's ``OK FLAGS`` (the same plugins ``vt run`` loads, so compression and ciphers
match), proves the tunnel works with an ICMP echo through it, then sends what a broken
or hostile peer would: frames with undefined flags, ``BAD_FRAME`` flags, datagrams whose
length lies, and damaged payloads (:func:`vtcore.testing.hostile_frames`).  Then it
checks the tunnel again, prints one JSON line, and holds the session open until a line
arrives on stdin (or ``--hold`` passes) so the test can look at ``vt status``.

    python rawpeer.py --server 172.20.0.1 --host bt1 --password PW --src 10.1.2.2 \
        --dst 10.1.2.1 [--unknown N] [--bad N] [--fuzz N] [--close]

Only the server address given on the command line is contacted; every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import socket
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import structlog

from vtcore import testing
from vtcore.plugins import load_plugins
from vtcore.protocol.events import Accepted, Answer, Challenged
from vtcore.protocol.frames import (
    BAD_FRAME,
    CONN_CLOSE,
    ECHO_REP,
    ECHO_REQ,
    FRAME_EOF,
    MAX_FRAME,
    StreamDecoder,
    decode_datagram,
    frame,
)
from vtcore.protocol.handshake import ClientHandshake
from vtcore.protocol.udp import pack_port, unpack_port
from vtcore.runtime.session import build_chain, client_settings
from vtcore.transports.base import VTUN_FRAMING

sys.path.append(str(Path(__file__).resolve().parents[2] / "bench"))
from vtclients import is_echo_reply  # noqa: E402  (bench/: the scale test's client)

UNKNOWN_FLAGS = ECHO_REQ | ECHO_REP
"""A flag combination vtun does not define: vtund (and vt) skip it over tcp."""


class RawPeer:
    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.sock = socket.create_connection((a.server, a.port), timeout=a.timeout)
        self.udp: socket.socket | None = None
        self.decoder = StreamDecoder()
        self.pending: list[tuple[int, bytes]] = []
        self.closed_by_server = False

    # ------------------------------------------------------------------ login

    def login(self) -> None:
        a = self.a
        hs = ClientHandshake(a.host, a.password.encode())
        deadline = time.monotonic() + a.timeout
        ev = None
        while (ev is None or isinstance(ev, Challenged)) and time.monotonic() < deadline:
            if isinstance(ev, Challenged):
                self.sock.sendall(hs.send(Answer()))
            data = self.sock.recv(hs.bytes_needed)
            if not data:
                raise ConnectionError("server closed during the handshake")
            hs.receive_data(data)
            self.sock.sendall(hs.data_to_send())
            ev = hs.next_event()
        if not isinstance(ev, Accepted):
            raise ConnectionError(f"not accepted: {ev!r}")
        self.flags = ev.flags
        profile = SimpleNamespace(name=a.host, extras={},
                                  password_bytes=lambda: a.password.encode())
        settings = client_settings(profile, ev.flags)
        registry = load_plugins().registry
        chain = [module for _plugin, module in build_chain(registry, settings)]
        self.forger = [m.encode for _plugin, m in build_chain(registry, settings)]
        """A second chain for the damaged frames: the real one's state must stay the
        session's (a chained cipher's encoder moves with every frame it makes)."""
        self.encoders = [m.encode for m in chain]
        self.decoders = [m.decode for m in reversed(chain)]
        self.pending = self.decoder.feed(hs.trailing_data())
        if ev.flags.proto == "udp":
            self._udp_ports()

    def _udp_ports(self) -> None:
        """vtun's port exchange (spec section 3): client writes first, then UDP only."""
        local, remote = self.sock.getsockname(), self.sock.getpeername()
        udp = socket.socket(self.sock.family, socket.SOCK_DGRAM)
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        udp.bind(local)
        self.sock.sendall(pack_port(local[1]))
        raw = b""
        while len(raw) < 2:
            chunk = self.sock.recv(2 - len(raw))
            if not chunk:
                raise ConnectionError("server closed during the port exchange")
            raw += chunk
        udp.connect((remote[0], unpack_port(raw, remote[1])))
        self.sock.close()
        self.udp = udp

    # ------------------------------------------------------------------ frames

    def send_raw(self, data: bytes) -> None:
        """One datagram (udp) or bytes into the stream (tcp), exactly as given."""
        if self.udp is not None:
            try:
                self.udp.send(data)
            except ConnectionRefusedError:
                pass
        else:
            self.sock.sendall(data)

    def encode(self, packet: bytes) -> bytes | None:
        return _through(self.encoders, packet)

    def receive(self, wait: float) -> list[tuple[int, bytes]]:
        if self.pending:
            out, self.pending = self.pending, []
            return out
        fd = self.udp if self.udp is not None else self.sock
        if not select.select([fd], [], [], wait)[0]:
            return []
        if self.udp is not None:
            try:
                got = decode_datagram(self.udp.recv(65535))
            except ConnectionRefusedError:
                return []
            return [got] if got is not None else []
        data = self.sock.recv(65536)
        if not data:
            self.closed_by_server = True
            return []
        return self.decoder.feed(data)

    def decode(self, payload: bytes) -> bytes | None:
        return _through(self.decoders, payload)

    def echo(self, ident: int, wait: float) -> bool:
        """An ICMP echo through the tunnel; True when the reply comes back in time."""
        a = self.a
        request = testing.icmp_echo(a.src, a.dst, ident)
        deadline = time.monotonic() + wait
        next_send = 0.0
        while time.monotonic() < deadline and not self.closed_by_server:
            if time.monotonic() >= next_send:
                # Encoded anew each time: a chained cipher's frame is not to be replayed,
                # and the next one carries the fresh IV a resync asked for.
                pkt = self.encode(request)
                if pkt:
                    self.send_raw(frame(pkt))
                next_send = time.monotonic() + 0.5
            for flags, payload in self.receive(0.1):
                if flags == ECHO_REQ:
                    self.send_raw(VTUN_FRAMING.control(ECHO_REP))
                elif flags in (CONN_CLOSE, FRAME_EOF):
                    self.closed_by_server = True
                elif flags == 0:
                    p = self.decode(payload)
                    if p is not None and is_echo_reply(p, a.dst, ident):
                        return True
        return False

    def hostile(self) -> dict[str, int]:
        """Send the faults asked for; returns how many of each went out (fewer when the
        server ends the session on one, as a broken zlib stream does)."""
        sent = {"unknown": 0, "bad": 0, "lying": 0, "damaged": 0}
        try:
            self._hostile(sent)
        except OSError:
            self.closed_by_server = True
        return sent

    def _hostile(self, sent: dict[str, int]) -> None:
        a = self.a
        for _ in range(a.unknown):
            self.send_raw(UNKNOWN_FLAGS.to_bytes(2, "big"))
            sent["unknown"] += 1
        for _ in range(a.bad):
            # tcp: a BAD_FRAME header (counted, skipped); udp: a datagram whose header
            # says one byte more than it carries (counted, dropped).
            if self.udp is not None:
                self.send_raw(b"\x00\x05abcd")
            else:
                self.send_raw(BAD_FRAME.to_bytes(2, "big"))
            sent["bad"] += 1
        if a.fuzz:
            good = [_through(self.forger, p) for p in testing.sample_packets(32, seed=a.seed)]
            rng = random.Random(a.seed)
            for f in testing.hostile_frames([g for g in good if g], a.fuzz, seed=a.seed):
                if self.udp is not None and rng.random() < 0.3:
                    self.send_raw(f)  # the whole datagram, header and all, as damaged
                    sent["lying"] += 1
                elif 0 < len(f) <= MAX_FRAME:
                    self.send_raw(frame(f))
                    sent["damaged"] += 1
                if self.udp is not None and sent["damaged"] % 64 == 0:
                    time.sleep(0.002)  # no faster than the receiver's buffer drains

    def close(self) -> None:
        try:
            self.send_raw(VTUN_FRAMING.control(CONN_CLOSE))
        except OSError:
            pass
        for s in (self.udp, self.sock):
            if s is not None:
                s.close()


def _through(steps, data: bytes) -> bytes | None:
    """``data`` through a chain's encoders (or decoders); None if one drops it."""
    for step in steps:
        data = step(data)
        if data is None:
            return None
    return bytes(data)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", required=True)
    ap.add_argument("--port", type=int, default=5000)
    ap.add_argument("--host", required=True)
    ap.add_argument("--password", default=os.environ.get("VT_TEST_PW", ""))
    ap.add_argument("--src", required=True, help="our address inside the tunnel")
    ap.add_argument("--dst", required=True, help="the server's address inside the tunnel")
    ap.add_argument("--unknown", type=int, default=0)
    ap.add_argument("--bad", type=int, default=0)
    ap.add_argument("--fuzz", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--hold", type=float, default=0.0,
                    help="hold the session open until a stdin line, at most this long")
    a = ap.parse_args(argv)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    peer = RawPeer(a)
    report: dict[str, object] = {}
    try:
        peer.login()
        report["proto"] = peer.flags.proto
        report["echo_before"] = peer.echo(0x5100, a.timeout)
        report["sent"] = peer.hostile()
        report["echo_after"] = peer.echo(0x5101, a.timeout)
        report["closed_by_server"] = peer.closed_by_server
    except (OSError, ConnectionError, ValueError) as exc:
        report["error"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(report), flush=True)
    if a.hold > 0 and "error" not in report:
        if select.select([sys.stdin], [], [], a.hold)[0]:
            sys.stdin.readline()
    peer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
