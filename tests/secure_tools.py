"""Attack tools for the secure-mode tests, run as processes inside a test namespace.

``python secure_tools.py relay ...``  a TCP+UDP man in the middle between a vt client and
                                       server: passes, rewrites, flips, captures, replays
``python secure_tools.py fuzz ...``   a pure-Python secure-mode client that flips one byte
                                       of the handshake per run (one direction, given offsets)
``python secure_tools.py flood ...``  many bogus handshakes from one or more sources:
                                       ``--mode`` dribble (garbage msg1, then a byte a
                                       second), idle (connect, say nothing), silent
                                       (``HOST: x vt2``, then nothing), slow (each message
                                       in pieces, ``--interval`` apart), guess (a real
                                       secure handshake with a wrong ``--password``, or
                                       a wrong challenge answer on vtund's path)

Each prints JSON lines on stdout; every wait is bounded.  Only loopback and namespace
addresses given on the command line are ever contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import sys
import time

MESG = 50


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def pack50(text: str) -> bytes:
    raw = text.encode()
    return raw + bytes(MESG - len(raw))


WRONG_ANSWER = pack50("CHAL: <" + "a" * 32 + ">\n")
"""A well-formed answer to vtund's challenge that is wrong (for any password, but with
odds of 2^-128)."""


# ------------------------------------------------------------------------------ relay


class Relay:
    """One client at a time: client -> (listen, port) -> relay -> (target, tport).

    The vtun UDP port exchange tells each end the *other* end's TCP port: the client sends
    UDP to (listen, tport) and the server to (out_addr, client's source port), so the relay
    binds its server-side TCP and UDP sockets to the client's source port, and listens for
    UDP on (listen, tport).

    Modes (SIGUSR1 "arms" the ones that act later):
    ``pass``; ``strip-vt2`` (remove the token from the HOST line);
    ``rewrite-offer`` (replace the server's ``OK VT3`` offer by ``OK CHAL``; tells when the
    client answers that challenge);
    ``flip-tcp`` (armed: flip the last byte of the next client chunk of >= 100 bytes);
    ``flip-udp`` (armed: flip the last byte of the next client datagram);
    ``replay`` (armed: re-send every datagram seen so far, both ways).
    """

    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.armed = False
        self.c2s: list[bytes] = []
        self.s2c: list[bytes] = []
        self.client_udp: tuple | None = None
        self.udp_c: socket.socket | None = None
        self.udp_s: socket.socket | None = None

    def arm(self) -> None:
        self.armed = True
        emit(event="armed")  # the test acts only after this (a signal is asynchronous)
        if self.a.mode == "replay":
            self.replay()

    def replay(self) -> None:
        self.armed = False
        sent = [0, 0]
        for pkt in list(self.c2s):
            if self.udp_s is not None:
                self.udp_s.send(pkt)
                sent[0] += 1
        for pkt in list(self.s2c):
            if self.udp_c is not None and self.client_udp is not None:
                self.udp_c.sendto(pkt, self.client_udp)
                sent[1] += 1
        emit(event="replayed", c2s=sent[0], s2c=sent[1])

    # -- TCP

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        a = self.a
        cport = writer.get_extra_info("peername")[1]
        try:
            sreader, swriter = await asyncio.wait_for(asyncio.open_connection(
                a.target, a.tport, local_addr=(a.out_addr, cport)), 5)
        except (OSError, TimeoutError) as exc:
            emit(event="connect-failed", error=str(exc))
            writer.close()
            return
        self.open_udp(cport)
        emit(event="connected", port=cport)
        await asyncio.gather(self.pump(reader, swriter, "c2s"),
                             self.pump(sreader, writer, "s2c"), return_exceptions=True)
        emit(event="closed")

    async def pump(self, reader, writer, way: str) -> None:
        mode = self.a.mode
        try:
            if way == "c2s" and mode == "strip-vt2":
                text = (await reader.readexactly(MESG)).rstrip(b"\0").decode()
                writer.write(pack50(text.replace(" vt2", "")))
                emit(event="stripped")
            if way == "s2c" and mode == "rewrite-offer":
                writer.write(await reader.readexactly(MESG))  # the greeting
                offer = await reader.readexactly(MESG)
                writer.write(pack50("OK CHAL: <" + "a" * 32 + ">\n"))  # well-formed
                emit(event="rewrote", was=offer.rstrip(b"\0").decode(errors="replace"))
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if way == "c2s" and mode == "rewrite-offer" and data.startswith(b"CHAL: "):
                    # What the downgrade is for: a response to guess the password from.
                    emit(event="client-answered")
                if way == "c2s" and mode == "flip-tcp" and self.armed and len(data) >= 100:
                    self.armed = False
                    data = data[:-1] + bytes((data[-1] ^ 0x01,))
                    emit(event="flipped", size=len(data))
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    # -- UDP

    def open_udp(self, cport: int) -> None:
        loop = asyncio.get_running_loop()
        if self.udp_s is not None:
            loop.remove_reader(self.udp_s.fileno())
            self.udp_s.close()
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((self.a.out_addr, cport))
        s.connect((self.a.target, self.a.tport))
        s.setblocking(False)
        self.udp_s = s
        loop.add_reader(s.fileno(), self.from_server)

    def from_client(self) -> None:
        for _ in range(64):
            try:
                pkt, addr = self.udp_c.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            self.client_udp = addr
            if self.a.mode == "flip-udp" and self.armed:
                self.armed = False
                pkt = pkt[:-1] + bytes((pkt[-1] ^ 0x01,))
                emit(event="flipped", size=len(pkt))
            if self.udp_s is None:
                continue
            try:
                self.udp_s.send(pkt)
            except OSError:
                continue
            if len(self.c2s) < 10000:
                self.c2s.append(pkt)

    def from_server(self) -> None:
        for _ in range(64):
            try:
                pkt = self.udp_s.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if self.client_udp is None:
                continue  # nowhere to go yet: not on the wire, so not "captured" either
            try:
                self.udp_c.sendto(pkt, self.client_udp)
            except OSError:
                continue
            if len(self.s2c) < 10000:
                self.s2c.append(pkt)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, self.arm)
        self.udp_c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp_c.bind((self.a.listen, self.a.tport))
        self.udp_c.setblocking(False)
        loop.add_reader(self.udp_c.fileno(), self.from_client)
        server = await asyncio.start_server(self.handle, self.a.listen, self.a.tport)
        emit(event="listening")
        async with server:
            await asyncio.sleep(self.a.lifetime)


# ------------------------------------------------------------------------------ fuzz


class Flipper:
    """A socket that flips byte ``offset`` of one direction of the stream (XOR 1)."""

    def __init__(self, sock: socket.socket, way: str, offset: int) -> None:
        self.sock = sock
        self.way = way
        self.offset = offset
        self.pos = {"c2s": 0, "s2c": 0}
        self.flipped = False

    def _mutate(self, way: str, data: bytes) -> bytes:
        start = self.pos[way]
        self.pos[way] += len(data)
        i = self.offset - start
        if way == self.way and 0 <= i < len(data):
            self.flipped = True
            return data[:i] + bytes((data[i] ^ 0x01,)) + data[i + 1 :]
        return data

    def send(self, data: bytes) -> None:
        self.sock.sendall(self._mutate("c2s", data))

    def recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return self._mutate("s2c", buf)


def fuzz_one(a: argparse.Namespace, offset: int, source: str, host: str) -> dict:
    from vt_crypto.secure.mode import MODE

    from vtcore.api import HandshakeRefused
    from vtcore.protocol.errors import ProtocolError
    from vtcore.protocol.handshake import ClientHandshake

    password = a.password.encode()
    sock = socket.create_connection((a.server, a.port), timeout=a.timeout,
                                    source_address=(source, 0))
    f = Flipper(sock, a.way, offset)
    stage = "greeting"
    ch = None
    try:
        hs = ClientHandshake(host, password, host_extra=(MODE.host_token,))
        greeting = f.recv_exact(MESG)
        hs.receive_data(greeting)
        host_block = hs.data_to_send()
        f.send(host_block)
        stage = "offer"
        reply = f.recv_exact(MESG)
        if not MODE.client_accepts(reply, host, True):
            return {"result": "fallback", "stage": stage, "flipped": f.flipped}
        ch = MODE.client_handshake(reply, host, password, greeting + host_block + reply)
        stage = "secure"
        while True:
            out = ch.data_to_send()
            if out:
                f.send(out)
            if ch.next_event() is not None:
                return {"result": "established", "stage": stage, "flipped": f.flipped}
            head = f.recv_exact(2)
            n = int.from_bytes(head, "big")
            body = f.recv_exact(n) if 0 < n <= 4096 else b""
            ch.receive_data(head + body)
    except (HandshakeRefused, ProtocolError, ValueError) as exc:
        if ch is not None:
            out = ch.data_to_send()
            if out:
                try:
                    sock.sendall(out)
                except OSError:
                    pass
        return {"result": "refused", "stage": stage, "error": str(exc), "flipped": f.flipped}
    except TimeoutError:
        return {"result": "timeout", "stage": stage, "flipped": f.flipped}
    except (EOFError, OSError) as exc:
        return {"result": "closed", "stage": stage, "error": str(exc), "flipped": f.flipped}
    finally:
        sock.close()


def fuzz(a: argparse.Namespace) -> None:
    offsets = [int(x) for x in a.offsets.split(",") if x]
    sources = a.sources.split(",")
    for i, off in enumerate(offsets):
        # Sources and host names in turn: neither the per-source limits nor a host's
        # failure budget may step in (each flipped run is a failed guess for its host).
        hosts = a.host.split(",")
        res = fuzz_one(a, off, sources[i % len(sources)], hosts[i % len(hosts)])
        res["offset"] = off
        emit(**res)
        if off >= a.settle_from:
            time.sleep(0.3)  # the server took the session: let it end before the next run


# ------------------------------------------------------------------------------ flood


async def _read_block(loop, sock: socket.socket, n: int = MESG, timeout: float = 5) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, n - len(buf)), timeout)
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


async def _hold(loop, sock: socket.socket, until: float, dribble: bool) -> None:
    """Keep the connection until ``until`` or until the server closes it."""
    while loop.time() < until:
        if dribble:
            await asyncio.sleep(1)
            await loop.sock_sendall(sock, b"\x00")
            continue
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 4096), until - loop.time())
        except TimeoutError:
            return
        if not data:
            raise EOFError


async def _slow(a: argparse.Namespace, loop, sock: socket.socket) -> bytes:
    """HOST, then a (wrong) challenge answer, each in ``--pieces`` pieces ``--interval``
    apart: every message within the per-message time-out, the whole handshake not.
    Returns the server's verdict (its block, or b"" when it closed) as soon as it comes."""
    async def send_slowly(block: bytes) -> bytes | None:
        step = -(-len(block) // a.pieces)
        for i in range(0, len(block), step):
            await loop.sock_sendall(sock, block[i : i + step])
            if i + step >= len(block):
                return None
            try:  # a verdict while we dribble comes at once, not at the next piece
                return await asyncio.wait_for(loop.sock_recv(sock, MESG), a.interval)
            except TimeoutError:
                continue
        return None

    early = await send_slowly(pack50(f"HOST: {a.host}\n"))
    if early is not None:
        return early
    await _read_block(loop, sock, timeout=a.duration)  # OK CHAL
    early = await send_slowly(WRONG_ANSWER)
    if early is not None:
        return early
    return await asyncio.wait_for(loop.sock_recv(sock, MESG), a.duration)


async def _guess(a: argparse.Namespace, loop, sock: socket.socket, greeting: bytes,
                 host_block: bytes, reply: bytes) -> str:
    """One online password guess: msg1 with ``--password``; the server's msg2 fails."""
    from vt_crypto.secure.mode import MODE

    from vtcore.api import HandshakeRefused

    ch = MODE.client_handshake(reply, a.host, a.password.encode(), greeting + host_block + reply)
    await loop.sock_sendall(sock, ch.data_to_send())
    head = await _read_block(loop, sock, 2)
    body = await _read_block(loop, sock, int.from_bytes(head, "big"))
    try:
        ch.receive_data(head + body)
    except HandshakeRefused:
        await loop.sock_sendall(sock, ch.data_to_send())
        return "guessed"
    return "other"


WHY: dict[str, dict[str, int]] = {}
"""Per mode: the exceptions that made connections count as ``failed``."""


async def flood_one(a: argparse.Namespace, i: int, stats: dict, until: float) -> None:
    loop = asyncio.get_running_loop()
    sources = a.source.split(",")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    started = loop.time()
    counted = False  # an outcome is in ``stats``: a later close counts as "closed"
    try:
        sock.bind((sources[i % len(sources)], 0))
        await asyncio.wait_for(loop.sock_connect(sock, (a.server, a.port)),
                               min(15.0, a.duration))
        if a.mode == "idle":
            stats["idle"] += 1
            counted = True
            await _hold(loop, sock, until, dribble=False)
            return
        # A burst of connects can sit in the server's accept queue for a while on a busy
        # machine: the same bound as the connect's, not the per-read default.
        wait = min(15.0, a.duration)
        greeting = await _read_block(loop, sock, timeout=wait)
        if a.mode == "slow":
            last = await _slow(a, loop, sock)
            text = last.rstrip(b"\0").decode(errors="replace").strip() or "closed"
            emit(event="slow", elapsed=round(loop.time() - started, 2), last=text)
            stats["other"] += 1
            counted = True
            return
        host_block = pack50(f"HOST: {a.host} vt2\n")
        await loop.sock_sendall(sock, host_block)
        reply = await _read_block(loop, sock, timeout=wait)
        kind = "offer" if reply.startswith(b"OK VT") else "err" if reply.startswith(b"ERR") \
            else "other"
        if kind == "offer" and a.mode == "guess":
            kind = await _guess(a, loop, sock, greeting, host_block, reply)
        elif reply.startswith(b"OK CHAL") and a.mode == "guess":
            # vtund's path: a wrong answer to the challenge is one guess.
            await loop.sock_sendall(sock, WRONG_ANSWER)
            verdict = await _read_block(loop, sock)
            kind = "guessed" if verdict.startswith(b"ERR") else "other"
        stats[kind] += 1
        counted = True
        if kind != "offer":
            return
        if a.mode == "dribble" and i % 2:
            # Garbage msg1 of the right shape: costs the server its PAKE.
            await loop.sock_sendall(sock, b"\x00\x41\x01" + os.urandom(64))
        # dribble: one byte a second until the server gives up on us; silent: nothing.
        await _hold(loop, sock, until, dribble=a.mode == "dribble")
    except (OSError, EOFError, TimeoutError) as exc:
        stats["closed" if counted else "failed"] += 1
        if not counted:  # say why, so that a failed run can be told apart
            why = WHY.setdefault(a.mode, {})
            why[type(exc).__name__] = why.get(type(exc).__name__, 0) + 1
        if a.mode == "slow" and not counted:
            emit(event="slow", elapsed=round(loop.time() - started, 2), last="closed")
    finally:
        sock.close()


async def flood(a: argparse.Namespace) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, a.count + 64)), hard))
    stats = {"offer": 0, "err": 0, "other": 0, "failed": 0, "idle": 0, "guessed": 0,
             "closed": 0}
    loop = asyncio.get_running_loop()
    until = loop.time() + a.duration
    tasks = []
    for i in range(a.count):
        tasks.append(asyncio.ensure_future(flood_one(a, i, stats, until)))
        if a.spacing:
            await asyncio.sleep(a.spacing)
    while sum(stats.values()) - stats["closed"] < a.count and loop.time() < until:
        await asyncio.sleep(0.05)
    emit(event="flooded", **stats, why=WHY.get(a.mode, {}))
    await asyncio.wait(tasks, timeout=a.duration + 5)
    emit(event="done", **stats)


# ------------------------------------------------------------------------------ test helpers

PASSWD = "Vt-test-pw1"
TOOL = os.path.abspath(__file__)


def server_conf(host: str = "t1", *, proto: str = "tcp", type_: str = "tun",
                device: str = "tsrv", encrypt: str | None = "aead", extra: str = "",
                passwd: str = PASSWD, timeout: int = 10, workers: int = 0) -> str:
    """A vt/vtund server config with one host (``workers``: vt's, as ``nobody``)."""
    enc = f"  encrypt {encrypt};\n" if encrypt else ""
    split = f" workers {workers}; user nobody;" if workers else ""
    return (f"options {{ timeout {timeout};{split} }}\n{host} {{\n  passwd {passwd};\n"
            f"  type {type_};\n  proto {proto};\n  device {device};\n{enc}{extra}}}\n")


def client_conf(host: str = "t1", *, device: str = "tcli", encrypt: str | None = "aead",
                passwd: str = PASSWD, extra: str = "", timeout: int = 10) -> str:
    """A vt/vtund client config: the server dictates the rest."""
    enc = f"  encrypt {encrypt};\n" if encrypt else ""
    return (f"options {{ timeout {timeout}; }}\n{host} {{\n  passwd {passwd};\n"
            f"  device {device};\n{enc}{extra}}}\n")


def rx_packets(ns, dev: str) -> int:
    """Packets the tunnel program wrote into ``dev`` (the interface's RX counter)."""
    out = ns.run("ip", "-s", "-j", "link", "show", "dev", dev).stdout
    return int(json.loads(out)[0]["stats64"]["rx"]["packets"])


def log_lines(text: str, needle: str) -> list[str]:
    return [ln for ln in text.splitlines() if needle in ln]


def log_field(line: str, key: str) -> str | None:
    """The value of ``key=value`` in a console log line: values are not quoted, so a
    value runs up to the next `` word=`` (keys are sorted, one line per event)."""
    m = re.search(rf"(?:^|\s){key}=(.*?)(?=\s+\w+=|\s*$)", line)
    if not m:
        return None
    v = m.group(1)
    return v[1:-1] if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"" else v


def add_devices(p, type_: str, mtu: int | None = None) -> tuple[str, str]:
    """tsrv in A, tcli in B (tun point-to-point or tap on a /24); returns their addresses."""
    for ns in (p.a, p.b):
        # Only the test's packets on the tunnel: no IPv6 autoconfiguration chatter.
        ns.run("sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")
    return p.add_tunnel_devices(mode="tap" if type_ == "ether" else "tun", mtu=mtu)


def ingress_loss(ns, dev: str, percent: int) -> None:
    """Drop ``percent``% of the packets arriving on ``dev`` (nftables ``numgen random``).

    Only on input: a drop on output is reported to the sending socket (EPERM), which is
    a local firewall refusing, not loss on the wire."""
    table = f"vtsecloss_{dev}"
    ns.run("nft", "delete", "table", "inet", table, check=False)
    if percent:
        ns.run("nft", "-f", "-", input=(
            f"table inet {table} {{\n  chain in {{ type filter hook input priority -300;"
            f" policy accept;\n    iifname \"{dev}\" numgen random mod 100 < {percent} drop\n"
            "  }\n}\n"))


def no_crash(*peers) -> None:
    for peer in peers:
        text = peer.log()
        assert "Traceback" not in text and "session crashed" not in text, text


# ------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("relay")
    r.add_argument("--listen", required=True)
    r.add_argument("--out-addr", required=True)
    r.add_argument("--target", required=True)
    r.add_argument("--tport", type=int, default=5000)
    r.add_argument("--mode", default="pass")
    r.add_argument("--lifetime", type=float, default=120)
    z = sub.add_parser("fuzz")
    z.add_argument("--server", required=True)
    z.add_argument("--port", type=int, default=5000)
    z.add_argument("--host", required=True)
    z.add_argument("--password", required=True)
    z.add_argument("--way", choices=("c2s", "s2c"), required=True)
    z.add_argument("--offsets", required=True)
    z.add_argument("--sources", required=True)
    z.add_argument("--timeout", type=float, default=1.5)
    z.add_argument("--settle-from", type=int, default=1 << 30)
    f = sub.add_parser("flood")
    f.add_argument("--server", required=True)
    f.add_argument("--port", type=int, default=5000)
    f.add_argument("--host", default="x")
    f.add_argument("--source", required=True, help="address, or several comma-separated")
    f.add_argument("--count", type=int, default=200)
    f.add_argument("--duration", type=float, default=8)
    f.add_argument("--mode", default="dribble",
                   choices=("dribble", "idle", "silent", "slow", "guess"))
    f.add_argument("--password", default="Not-the-pw9")
    f.add_argument("--pieces", type=int, default=3)
    f.add_argument("--interval", type=float, default=1.0)
    f.add_argument("--spacing", type=float, default=0.0, help="seconds between connections")
    a = p.parse_args(argv)
    if a.cmd == "relay":
        asyncio.run(Relay(a).run())
    elif a.cmd == "fuzz":
        fuzz(a)
    else:
        asyncio.run(flood(a))
    return 0


if __name__ == "__main__":
    sys.exit(main())
