"""UDP batching on the link (issue 19): ``UDP_GRO`` on receive, with real sockets on loopback.

A sender hands the kernel a run of equal-sized datagrams with ``UDP_SEGMENT``; loopback
delivers the run whole to a socket that asked for ``UDP_GRO``, so one ``recvmsg`` brings
them all, with the segment size in a control message.  The link must still hand on every
datagram alone, in order, and drop (and count) a bad one without losing its neighbours.
"""

from __future__ import annotations

import random
import select
import socket
import struct

import pytest
from netns import _skip_or_fail

from vtcore.protocol.frames import MAX_FRAME, decode_datagram
from vtcore.transports.base import Endpoints
from vtcore.transports.udp import SOL_UDP, UDP_GRO, UDP_SEGMENT, UdpLink

ENDS = Endpoints("127.0.0.1", 0, "127.0.0.1", 0)


class CountingSocket(socket.socket):
    """A real UDP socket that counts its receive calls."""

    calls = 0

    def recvmsg(self, *args):  # type: ignore[override]
        self.calls += 1
        return super().recvmsg(*args)

    def recv(self, *args):  # type: ignore[override]
        self.calls += 1
        return super().recv(*args)


def _pair() -> tuple[socket.socket, CountingSocket]:
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx = CountingSocket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (tx, rx):
        s.bind(("127.0.0.1", 0))
    tx.connect(rx.getsockname())
    rx.connect(tx.getsockname())
    return tx, rx


def _vtun(payload: bytes) -> bytes:
    return struct.pack("!H", len(payload)) + payload


def _send_run(tx: socket.socket, datagrams: list[bytes]) -> None:
    """One ``sendmsg`` with ``UDP_SEGMENT``: every datagram the size of the first but the
    last, cut by the kernel."""
    size = len(datagrams[0])
    tx.sendmsg([b"".join(datagrams)], [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))])


def _read_all(link: UdpLink, want: int, limit: int = 64) -> list[tuple[int, bytes]]:
    got: list[tuple[int, bytes]] = []
    for _ in range(40):  # 2 s at most
        if len(got) + link.bad_frames >= want:
            break
        select.select([link.fileno()], [], [], 0.05)
        got += link.read_frames(limit)
    return got


def _gso_ok(tx: socket.socket) -> None:
    try:
        tx.setsockopt(SOL_UDP, UDP_SEGMENT, 0)
    except OSError:
        _skip_or_fail("no UDP GSO in this kernel")  # under CI (VT_REQUIRE_NETNS=1): a failure


def test_a_gro_run_is_read_in_one_call_and_split_in_order() -> None:
    tx, rx = _pair()
    try:
        _gso_ok(tx)
        link = UdpLink(rx, ENDS, connected=True)
        assert link.gro, "UDP_GRO refused on Linux >= 5.0"
        payloads = [bytes([i]) * 1200 for i in range(40)]
        _send_run(tx, [_vtun(p) for p in payloads])
        got = _read_all(link, 40)
        assert got == [(0, p) for p in payloads]
        assert link.bad_frames == 0
        assert rx.calls <= 3, rx.calls  # one receive (and an EAGAIN), not forty
    finally:
        tx.close()
        rx.close()


@pytest.mark.parametrize("views", [False, True], ids=["copies", "views"])
def test_a_raw_links_gro_run_is_split_into_its_sealed_datagrams(views: bool) -> None:
    """A raw (secure-mode) link hands each datagram of a GRO run on whole, in order; with
    ``views`` (set by the sealing link that wraps it) as memoryviews of the one receive."""
    tx, rx = _pair()
    try:
        _gso_ok(tx)
        link = UdpLink(rx, ENDS, connected=True, raw=True)
        link.views = views
        datagrams = [bytes([i]) * 1300 for i in range(30)] + [b"short"]
        _send_run(tx, datagrams)
        got = _read_all(link, 31)
        assert [(f, bytes(d)) for f, d in got] == [(0, d) for d in datagrams]
        assert all(isinstance(d, memoryview if views else bytes) for _, d in got)
    finally:
        tx.close()
        rx.close()


def test_a_bad_datagram_in_a_run_is_counted_and_its_neighbours_kept() -> None:
    tx, rx = _pair()
    try:
        _gso_ok(tx)
        link = UdpLink(rx, ENDS, connected=True)
        payloads = [bytes([i]) * 1000 for i in range(10)]
        datagrams = [_vtun(p) for p in payloads]
        datagrams[4] = b"\x0f\xff" + payloads[4]  # its header claims 4095 bytes: malformed
        _send_run(tx, datagrams)
        got = _read_all(link, 10)
        assert got == [(0, p) for i, p in enumerate(payloads) if i != 4]
        assert link.bad_frames == 1
    finally:
        tx.close()
        rx.close()


def test_raw_datagrams_of_a_run_stay_apart() -> None:
    """Secure mode's link: each datagram is one sealed frame, handed on unopened."""
    tx, rx = _pair()
    try:
        _gso_ok(tx)
        link = UdpLink(rx, ENDS, connected=True, raw=True)
        datagrams = [bytes([i]) * 900 for i in range(7)] + [b"short"]
        _send_run(tx, datagrams)
        assert _read_all(link, 8) == [(0, d) for d in datagrams]
    finally:
        tx.close()
        rx.close()


def test_limit_bounds_the_receive_calls_even_when_all_is_bad() -> None:
    """A flood of malformed datagrams costs at most ``limit`` receive calls per wake-up."""
    tx, rx = _pair()
    try:
        link = UdpLink(rx, ENDS, connected=True)
        for _ in range(20):
            tx.send(b"\x00\x09bad")
        select.select([rx], [], [], 0.5)
        assert link.read_frames(5) == []
        assert rx.calls == 5 and link.bad_frames == 5
    finally:
        tx.close()
        rx.close()


def test_sealed_frames_of_a_run_are_opened_one_by_one() -> None:
    """SealedLink over a GRO link: a forged datagram inside a run is rejected alone, and
    a replayed run is rejected datagram by datagram (the replay window sees each)."""
    import time

    pytest.importorskip("vt_crypto")
    from vt_crypto.secure.keys import SessionKeys
    from vt_crypto.secure.mode import SealedLink
    from vt_crypto.secure.rekey import SessionCrypto

    keys = SessionKeys("aes256gcm", c2s=bytes(range(32)), s2c=bytes(range(1, 33)),
                       session_id=bytes(16))
    tx, rx = _pair()
    try:
        _gso_ok(tx)
        now = time.monotonic()
        sender = SessionCrypto(keys, "client", now, window=2048)
        receiver = SessionCrypto(keys, "server", now, window=2048)
        link = SealedLink(UdpLink(rx, ENDS, connected=True, raw=True), receiver, False)
        payloads = [bytes([i]) * 1000 for i in range(12)]
        sealed = [sender.sealer.seal(0, p, now) for p in payloads]
        forged = bytearray(sealed[5])
        forged[-1] ^= 1
        _send_run(tx, [*sealed[:5], bytes(forged), *sealed[6:]])
        got = _read_all(link, 12)  # type: ignore[arg-type]
        assert got == [(0, p) for i, p in enumerate(payloads) if i != 5]
        assert link.rejected == 1
        # The same run again: replays, but for the one whose forgery was refused.
        _send_run(tx, sealed)
        select.select([rx], [], [], 0.5)
        assert link.read_frames(64) == [(0, payloads[5])]
        assert link.rejected == 1 + 11
    finally:
        tx.close()
        rx.close()


class _Batches:
    """A stand-in for a GRO socket: each ``recvmsg`` hands over one prepared batch."""

    def __init__(self, batches: list[tuple[bytes, int]]) -> None:
        self.batches = batches

    def recvmsg(self, size: int, anc: int):  # noqa: ARG002
        if not self.batches:
            raise BlockingIOError
        data, seg = self.batches.pop(0)
        cmsg = [(SOL_UDP, UDP_GRO, struct.pack("=i", seg))] if seg else []
        return data, cmsg, 0, None


def _random_batch(rng: random.Random) -> tuple[list[bytes], int]:
    """Datagrams as one GRO receive brings them: all ``size`` bytes but the last (which
    may be shorter); most are data frames, some are control frames, malformed, or
    claim another length."""
    size = rng.choice([3, 40, 1402, 2150, 2152])  # 2152: over max_frame
    count = rng.randrange(1, 64)
    out = []
    for i in range(count):
        n = size if i < count - 1 or rng.random() < 0.5 else rng.randrange(2, size + 1)
        kind = rng.random()
        if kind < 0.9 or n < 4:
            d = _vtun(rng.randbytes(n - 2)) if n > 2 else b"\x00\x00"
        elif kind < 0.94:
            d = struct.pack("!H", 0x2000) + rng.randbytes(n - 2)  # ECHO_REQ with padding
        elif kind < 0.97:
            d = struct.pack("!H", n - 3) + rng.randbytes(n - 2)  # wrong length
        else:
            d = struct.pack("!H", 0x8000 | (n - 2)) + rng.randbytes(n - 2)  # BAD_FRAME
        out.append(d)
    return out, size


@pytest.mark.parametrize("views", [False, True])
def test_a_gro_receive_gives_what_decoding_each_datagram_alone_gives(views: bool) -> None:
    """The run's full-size data frames are taken a byte column at a time
    (``transports.udp._data_run``); 300 random receives with control frames, malformed
    datagrams, a shorter last one and frames over ``max_frame`` anywhere in them: the
    same frames, in the same order, and the same count of bad ones as decoding each
    (``views``: the run's data frames as memoryviews of the receive buffer)."""
    rng = random.Random(19)
    tx, rx = _pair()
    try:
        for _ in range(300):
            datagrams, size = _random_batch(rng)
            want = [decode_datagram(d, MAX_FRAME) for d in datagrams]
            link = UdpLink(rx, ENDS, connected=True)
            link.gro = True
            link.views = views
            link.sock = _Batches([(b"".join(datagrams), size if len(datagrams) > 1 else 0)])
            got = link.read_frames(64)
            assert got == [f for f in want if f is not None]
            assert link.bad_frames == want.count(None)
    finally:
        tx.close()
        rx.close()


def test_a_send_groups_equal_sizes_into_runs_with_a_shorter_last() -> None:
    """What ``_write`` hands the kernel: every datagram once, in order; each
    ``UDP_SEGMENT`` call of at most 64 datagrams and 65000 bytes, all its size but the
    last, which may be shorter; one call for a stretch that fits."""
    sent: list[tuple[list[bytes], int]] = []

    class Recorder:
        def sendmsg(self, parts, cmsg=()):
            seg = struct.unpack("=H", cmsg[0][2])[0] if cmsg else 0
            sent.append((list(parts), seg))

    tx, rx = _pair()
    try:
        link = UdpLink(tx, ENDS, connected=True)
        link.gso = True
        link.sock = Recorder()  # type: ignore[assignment]
        rng = random.Random(7)
        for _ in range(200):
            sent.clear()
            sizes = [rng.choice([1000, 1348, 1348, 1348, 40]) for _ in range(rng.randrange(1, 150))]
            if rng.random() < 0.5:
                sizes = [1348] * rng.randrange(1, 130) + [rng.randrange(1, 1348)]
            payloads = [bytes([i % 256]) * n for i, n in enumerate(sizes)]
            link.send(payloads)
            datagrams = []
            for parts, seg in sent:
                group = [parts[i] + parts[i + 1] for i in range(0, len(parts), 2)]
                if seg:
                    assert len(group) <= 64 and sum(map(len, group)) <= 65000
                    assert all(len(d) == seg for d in group[:-1]) and len(group[-1]) <= seg
                else:
                    assert len(group) == 1
                datagrams += group
            assert datagrams == [_vtun(p) for p in payloads]
        sent.clear()
        link.send([bytes(1348)] * 40 + [b"ping"])
        assert [len(parts) // 2 for parts, _ in sent] == [41]
    finally:
        tx.close()
        rx.close()


# ------------------------------------------------------------------ negotiation (feature g)


def _host(text: str):
    from vtcore.config import parse_config

    return parse_config(f"h {{ passwd pw; {text} }}").hosts["h"]


@pytest.mark.parametrize(("profile", "tokens", "granted"), [
    ("type tun; proto udp;", ("vt2", "gso"), "mg"),
    ("type ether; proto udp;", ("vt2", "gso"), "mg"),
    ("type tun; proto udp;", ("vt2",), "m"),  # a vt client from before: never told
    ("type tun; proto udp;", ("gso",), ""),  # not a vt client
    ("type tty; proto udp;", ("vt2", "gso"), "m"),
    ("type tun; proto udp; speed 256:256;", ("vt2", "gso"), "m"),  # shaped: packet-sized
    ("type tun; proto udp; vtmode no;", ("vt2", "gso"), ""),
    ("type tun; proto tcp;", ("vt2", "gso"), "no"),
])
def test_the_server_grants_segments_only_to_a_client_that_offered_them(
        profile: str, tokens: tuple[str, ...], granted: str) -> None:
    from vtcore.runtime.native import server_features

    assert server_features(_host(profile), tokens) == granted
    # Marked segments: only where both tun backends take them, the client says so.
    runs = "r" if "g" in granted else ""
    assert server_features(_host(profile), (*tokens, "runs"), runs=True) == granted + runs
    assert server_features(_host(profile), (*tokens, "runs")) == granted
    assert server_features(_host(profile), tokens, runs=True) == granted


def test_runs_reach_the_typed_settings_only_with_segments() -> None:
    from vtcore.plugins import load_plugins
    from vtcore.runtime.native import feature_settings, takes_runs

    assert feature_settings("mgr")["runs"] and feature_settings("mgr")["segments"]
    assert not feature_settings("mg")["runs"]
    assert not feature_settings("mr")["runs"]  # never without g
    assert takes_runs(load_plugins().registry)  # vt-devices' tun backend (contract 1.4)


def test_segments_reach_the_typed_settings_and_an_old_reader_ignores_the_letter() -> None:
    from vtcore.protocol.flags import parse_flags
    from vtcore.runtime.session import client_settings, server_settings

    host = _host("type tun; proto udp;")
    s = server_settings(host, "mg")
    assert s.segments and s.native and not s.offload and not s.native_framing
    c = client_settings(host, parse_flags("<UuFmg>", allow_extra=True))
    assert c.segments and c.native
    assert not server_settings(host, "m").segments
    # How a client from before reads "<UuFmg>": letter by letter, 'g' unknown and ignored;
    # which is why the server sends it only to a client that offered 'gso'.
    assert parse_flags("<UuFmg>", allow_extra=True).extra == "mg"


def test_the_client_offers_gso_last_and_only_where_the_host_line_has_room() -> None:
    from vt_api.wire import MAX_TEXT

    from vtcore.runtime.native import host_tokens

    assert host_tokens("t1", ("vt2",), [], None) == ("vt2", "gso")
    assert host_tokens("t1", ("vt2",), [], None, runs=True) == ("vt2", "gso", "runs")
    assert host_tokens("h" * 30, ("vt2",), [], None, runs=True) == ("vt2", "gso")  # no room
    assert host_tokens("t1", ("vt2",), ["zstd"], "zstd") == ("vt2", "c=zstd", "gso")
    assert host_tokens("t1", (), ["zstd"], "zstd") == ()  # vtmode no: the vtund line
    for n in range(1, 45):
        name = "h" * n
        tokens = host_tokens(name, ("vt2",), ["zstd"], "zstd")
        if "gso" in tokens:  # never what makes the line too long
            assert len(f"HOST: {' '.join((name, *tokens))}\n") <= MAX_TEXT, n
        if n <= 30:  # 48 - len("HOST:  vt2 c=zstd \n") characters
            assert "c=zstd" in tokens  # the offer keeps its room, as before gso
    assert "gso" not in host_tokens("h" * 35, ("vt2",), [], None)


# ------------------------------------------------------------------ runs only to a vt peer


class SendCounting(socket.socket):
    """A real UDP socket that counts its sendmsg calls and those with UDP_SEGMENT."""

    calls = 0
    runs = 0

    def sendmsg(self, buffers, ancdata=(), *args):  # type: ignore[override]
        self.calls += 1
        self.runs += any(level == SOL_UDP and kind == UDP_SEGMENT for level, kind, _ in ancdata)
        return super().sendmsg(buffers, ancdata, *args)


def _send_pair() -> tuple[SendCounting, socket.socket]:
    tx = SendCounting(socket.AF_INET, socket.SOCK_DGRAM)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (tx, rx):
        s.bind(("127.0.0.1", 0))
    tx.connect(rx.getsockname())
    return tx, rx


@pytest.mark.parametrize("gso", [True, False])
def test_a_link_without_runs_sends_datagram_by_datagram(gso: bool) -> None:
    """vtund reads one datagram at a time from a default-sized buffer: a run of 40 that
    arrives whole overflows it at the tail (where a short packet, a ping, sits)."""
    tx, rx = _send_pair()
    try:
        _gso_ok(tx)
        link = UdpLink(tx, ENDS, connected=True, gso=gso)
        link.send([bytes([i]) * 1200 for i in range(39)] + [b"ping"])
        if gso:
            assert (tx.calls, tx.runs) == (1, 1)
        else:
            assert (tx.calls, tx.runs) == (40, 0)
        rx.settimeout(1)
        got = [rx.recv(2000) for _ in range(40)]
        assert got[-1] == b"\x00\x04ping" and all(len(d) == 1202 for d in got[:-1])
    finally:
        tx.close()
        rx.close()


@pytest.mark.parametrize(("native", "secure", "runs"), [
    (True, None, True),  # vt <-> vt
    (False, "cpace aes256gcm", True),  # secure mode: vt <-> vt as well
    (False, None, False),  # a vtun peer (vtund, or vt with vtmode no)
])
def test_open_udp_link_sends_runs_only_to_a_vt_peer(native: bool, secure: str | None,
                                                     runs: bool) -> None:
    import asyncio

    from vt_api import LinkSettings

    from vtcore.transports.udp import open_udp_link

    async def both() -> list[UdpLink]:
        lsn = socket.create_server(("127.0.0.1", 0))
        cli = socket.create_connection(lsn.getsockname())
        srv, _ = lsn.accept()
        lsn.close()
        made = [LinkSettings("h", role, transport="udp", tunnel_type="tun", native=native,
                             secure=secure) for role in ("server", "client")]
        return list(await asyncio.gather(open_udp_link(srv, made[0], 5),
                                         open_udp_link(cli, made[1], 5)))

    links = asyncio.run(both())
    try:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            _gso_ok(probe)
        finally:
            probe.close()
        assert [link.gso for link in links] == [runs, runs]
    finally:
        for link in links:
            link.close()
