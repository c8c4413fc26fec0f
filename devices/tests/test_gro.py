"""vt_devices.gro: TCP segments joined into GSO super-packets, and a real kernel taking them.

The unit tests build TCP/IP packets with valid checksums and check what :func:`coalesce`
joins, what it leaves alone, and the ``virtio_net_hdr`` it writes.  The netns test plays a
TCP peer by hand through a tun device in gro mode: the kernel accepts the joined packet
and a real socket reads the bytes in order.
"""

from __future__ import annotations

import random
import select
import socket
import struct
import time

import pytest
from vt_devices.gro import (
    F_NEEDS_CSUM,
    GSO_TCPV4,
    GSO_TCPV6,
    MAX_IP_PAYLOAD,
    PLAIN,
    VNET_HDR,
    VNET_HDR_LEN,
    coalesce,
)

from vtcore.testing import inet_checksum as csum

SRC4, DST4 = bytes([10, 9, 0, 2]), bytes([10, 9, 0, 1])
SRC6 = bytes.fromhex("fd000000000000000000000000000002")
DST6 = bytes.fromhex("fd000000000000000000000000000001")
MAC = bytes.fromhex("020000000001" "020000000002")
ACK, PSH, SYN, FIN = 0x10, 0x08, 0x02, 0x01


def tcp4(seq: int, payload: bytes, *, flags: int = ACK, ack: int = 1000, sport: int = 40000,
         dport: int = 5001, ttl: int = 64, opts: bytes = b"", ident: int = 1) -> bytes:
    doff = (20 + len(opts)) // 4
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack, doff << 4, flags,
                      65000, 0, 0) + opts
    pseudo = SRC4 + DST4 + struct.pack("!BBH", 0, 6, len(tcp) + len(payload))
    c = csum(pseudo + tcp + payload)
    tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
    total = 20 + len(tcp) + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, ident, 0x4000, ttl, 6, 0, SRC4, DST4)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return ip + tcp + payload


def tcp6(seq: int, payload: bytes, *, flags: int = ACK, ack: int = 1000) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", 40000, 5001, seq, ack, 5 << 4, flags, 65000, 0, 0)
    pseudo = SRC6 + DST6 + struct.pack("!IxxxB", len(tcp) + len(payload), 6)
    c = csum(pseudo + tcp + payload)
    tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
    ip = struct.pack("!IHBB16s16s", 6 << 28, len(tcp) + len(payload), 6, 64, SRC6, DST6)
    return ip + tcp + payload


def finish_checksum(buf: bytes) -> bytes:
    """What the kernel does with NEEDS_CSUM: checksum from csum_start, store at +offset."""
    flags, _, _, _, start, offset = VNET_HDR.unpack(buf[:VNET_HDR_LEN])
    pkt = bytearray(buf[VNET_HDR_LEN:])
    assert flags & F_NEEDS_CSUM
    # The field holds the pseudo-header sum: the complement of the sum from start on is
    # the full checksum.
    pkt[start + offset:start + offset + 2] = struct.pack("!H", csum(bytes(pkt[start:])))
    return bytes(pkt)


def segments(n: int, size: int = 1400, seq: int = 1, **kw: object) -> list[bytes]:
    rng = random.Random(n * 7 + size)
    return [tcp4(seq + i * size, rng.randbytes(size), **kw) for i in range(n)]  # type: ignore[arg-type]


def payload_of(pkt: bytes, l3: int = 0) -> bytes:
    if pkt[l3] >> 4 == 6:
        return pkt[l3 + 40 + (pkt[l3 + 52] >> 4) * 4:]
    return pkt[l3 + 20 + (pkt[l3 + 32] >> 4) * 4:]


# ------------------------------------------------------------------------------ joining


def test_one_flow_becomes_one_super_packet_with_a_valid_checksum() -> None:
    segs = segments(10)
    out = coalesce(segs)
    assert len(out) == 1
    buf, count, nbytes = out[0]
    assert count == 10 and nbytes == sum(map(len, segs))
    flags, gso, hdr_len, gso_size, start, offset = VNET_HDR.unpack(buf[:VNET_HDR_LEN])
    assert (flags, gso, hdr_len, gso_size, start, offset) == (F_NEEDS_CSUM, GSO_TCPV4, 40,
                                                                 1400, 20, 16)
    pkt = finish_checksum(buf)
    assert struct.unpack("!H", pkt[2:4])[0] == len(pkt) == 40 + 14000
    assert csum(pkt[:20]) == 0  # IPv4 header checksum
    pseudo = SRC4 + DST4 + struct.pack("!BBH", 0, 6, len(pkt) - 20)
    assert csum(pseudo + pkt[20:]) == 0  # TCP checksum over the joined segment
    assert payload_of(pkt) == b"".join(payload_of(s) for s in segs)
    assert pkt[24:28] == segs[0][24:28]  # first sequence number


def test_single_packet_is_written_as_is() -> None:
    seg = segments(1)[0]
    assert coalesce([seg]) == [(PLAIN + seg, 1, len(seg))]


def test_gap_in_sequence_starts_a_new_run() -> None:
    segs = segments(6)
    out = coalesce(segs[:3] + segs[4:])
    assert [c for _, c, _ in out] == [3, 2]


def test_different_ack_or_options_do_not_join() -> None:
    a = tcp4(1, bytes(1000), ack=5)
    b = tcp4(1001, bytes(1000), ack=6)
    c = tcp4(2001, bytes(1000), ack=6, opts=b"\x01\x01\x08\x0a" + bytes(8))
    assert [n for _, n, _ in coalesce([a, b, c])] == [1, 1, 1]


def test_psh_ends_a_run_and_is_kept_on_the_joined_packet() -> None:
    segs = segments(3) + [tcp4(1 + 3 * 1400, bytes(1400), flags=ACK | PSH)]
    segs += [tcp4(1 + 4 * 1400, bytes(1400))]
    out = coalesce(segs)
    assert [n for _, n, _ in out] == [4, 1]
    assert out[0][0][VNET_HDR_LEN + 33] == ACK | PSH


def test_shorter_segment_ends_the_run() -> None:
    segs = segments(3) + [tcp4(4201, bytes(100)), tcp4(4301, bytes(1400))]
    out = coalesce(segs)
    assert [n for _, n, _ in out] == [4, 1]
    assert VNET_HDR.unpack(out[0][0][:VNET_HDR_LEN])[3] == 1400


def test_longer_segment_does_not_join() -> None:
    segs = [tcp4(1, bytes(1000)), tcp4(1001, bytes(1400))]
    assert [n for _, n, _ in coalesce(segs)] == [1, 1]


def test_joined_packets_stay_within_the_ip_length_limit() -> None:
    segs = segments(120)
    out = coalesce(segs)
    assert sum(n for _, n, _ in out) == 120
    assert all(len(b) - VNET_HDR_LEN <= MAX_IP_PAYLOAD for b, _, _ in out)
    assert len(out) == 3


def test_control_and_other_packets_keep_their_place() -> None:
    segs = segments(4)
    fin = tcp4(1 + 4 * 1400, b"", flags=ACK | FIN)
    syn = tcp4(0, b"", flags=SYN, sport=40001)
    icmp = bytes.fromhex("4500001c0001000040010000") + SRC4 + DST4 + bytes(8)
    out = coalesce([syn, *segs[:2], icmp, *segs[2:], fin])
    kinds = [(n, b[VNET_HDR_LEN:]) for b, n, _ in out]
    assert kinds[0] == (1, syn)
    assert kinds[1][0] == 2
    assert kinds[2] == (1, icmp)
    assert kinds[3][0] == 2
    assert kinds[4] == (1, fin)


def test_interleaved_flows_are_joined_separately_in_order() -> None:
    a = segments(5, sport=40000)
    b = segments(5, sport=40001)
    mixed = [p for pair in zip(a, b, strict=True) for p in pair]
    out = coalesce(mixed)
    assert [n for _, n, _ in out] == [5, 5]
    got = {finish_checksum(buf)[20:22]: payload_of(finish_checksum(buf)) for buf, _, _ in out}
    assert got[struct.pack("!H", 40000)] == b"".join(payload_of(s) for s in a)
    assert got[struct.pack("!H", 40001)] == b"".join(payload_of(s) for s in b)


def test_ipv6_flow() -> None:
    segs = [tcp6(1 + i * 1300, bytes([i]) * 1300) for i in range(5)]
    out = coalesce(segs)
    assert len(out) == 1
    buf, count, _ = out[0]
    flags, gso, hdr_len, gso_size, start, offset = VNET_HDR.unpack(buf[:VNET_HDR_LEN])
    assert (gso, hdr_len, gso_size, start, count) == (GSO_TCPV6, 60, 1300, 40, 5)
    pkt = finish_checksum(buf)
    assert struct.unpack("!H", pkt[4:6])[0] == len(pkt) - 40
    pseudo = SRC6 + DST6 + struct.pack("!IxxxB", len(pkt) - 40, 6)
    assert csum(pseudo + pkt[40:]) == 0


def test_tap_frames_keep_their_ethernet_header() -> None:
    frames = [MAC + b"\x08\x00" + s for s in segments(4)]
    out = coalesce(frames, tap=True)
    assert len(out) == 1
    buf, count, _ = out[0]
    _, gso, hdr_len, _, start, _ = VNET_HDR.unpack(buf[:VNET_HDR_LEN])
    assert (gso, hdr_len, start, count) == (GSO_TCPV4, 54, 34, 4)
    assert buf[VNET_HDR_LEN:VNET_HDR_LEN + 14] == MAC + b"\x08\x00"
    other_mac = bytes(6) + MAC[6:] + b"\x08\x00"
    assert [n for _, n, _ in coalesce([frames[0], other_mac + segments(2)[1]], tap=True)] == [1, 1]
    arp = MAC + b"\x08\x06" + bytes(28)
    assert coalesce([arp], tap=True) == [(PLAIN + arp, 1, len(arp))]


def test_ip_options_fragments_and_garbage_pass_untouched() -> None:
    seg = segments(2)
    frag = bytearray(seg[1])
    frag[6] |= 0x20  # more fragments
    rng = random.Random(3)
    junk = [rng.randbytes(rng.randrange(0, 80)) for _ in range(300)]
    for p in [bytes(frag), *junk]:
        out = coalesce([seg[0], p])
        assert sum(n for _, n, _ in out) == 2
        assert out[-1] == (PLAIN + p, 1, len(p))


def test_fast_ipv4_parser_agrees_with_the_general_one() -> None:
    """The tun/IPv4 shortcut decides exactly as the general parser, on damaged input too."""
    from vt_devices import gro

    rng = random.Random(1)
    base_segs = segments(8)
    pairs: list[tuple] = []
    for _ in range(5000):
        if rng.random() < 0.5:
            p = bytearray(rng.choice(base_segs))
        else:
            p = bytearray(tcp4(rng.randrange(1 << 32), rng.randbytes(rng.randrange(0, 50)),
                               flags=rng.choice([ACK, ACK | PSH, ACK | FIN, SYN, 0x30]),
                               opts=rng.choice([b"", b"\x01\x01\x08\x0a" + bytes(8)])))
        for _ in range(rng.randrange(0, 3)):
            p[rng.randrange(len(p))] = rng.randrange(256)
        if p[0] == 0x45:
            fast, general = gro._parse_tun4(bytes(p)), gro._parse(bytes(p), False)
            # The same decision and fields; the signature a tuple of the same bytes.
            assert (fast is None) == (general is None)
            if fast is not None and general is not None:
                assert fast[0] == general[0] and fast[2:] == general[2:]
                pairs.append((fast[1], general[1]))
    # Two packets share a fast signature exactly when they share a general one.
    for (f1, g1), (f2, g2) in zip(pairs, pairs[1:] + pairs[:1], strict=True):
        assert (f1 == f2) == (g1 == g2)


# ------------------------------------------------------------------------------ real kernel


def _drain_for(dev, want_flags: int, timeout: float = 3.0) -> bytes:
    """The next TCP packet from the kernel with ``want_flags`` set."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        select.select([dev.fileno()], [], [], 0.2)
        for p in dev.read_packets(16):
            if len(p) >= 40 and p[0] == 0x45 and p[9] == 6 and p[33] & want_flags == want_flags:
                return p
    raise AssertionError("no such packet from the kernel")


@pytest.mark.netns
def test_kernel_takes_a_joined_packet(netns) -> None:
    """A hand-played TCP peer through a gro-mode tun: the joined segments reach a socket."""
    from types import SimpleNamespace

    from vt_devices.tun import open_tun_device

    with netns.entered():
        dev = open_tun_device(SimpleNamespace(name="vgro0", offload=False, gro=True))
        try:
            assert dev.gro and not dev.offload
            netns.ip("addr", "add", "10.9.0.1", "peer", "10.9.0.2", "dev", "vgro0")
            netns.ip("link", "set", "vgro0", "up")
            srv = socket.socket()
            srv.bind(("10.9.0.1", 5001))
            srv.listen(1)
            srv.settimeout(5)
            isn = 7_000_000
            assert dev.write_packets([tcp4(isn, b"", flags=SYN, ack=0)]) == (0, 0)
            synack = _drain_for(dev, SYN | ACK)
            their_seq = struct.unpack("!I", synack[24:28])[0]
            ack = their_seq + 1
            dev.write_packet(tcp4(isn + 1, b"", ack=ack))
            conn, _ = srv.accept()
            conn.settimeout(5)
            rng = random.Random(11)
            data = [rng.randbytes(1200) for _ in range(20)]
            segs = [tcp4(isn + 1 + i * 1200, d, ack=ack) for i, d in enumerate(data)]
            assert dev.write_packets(segs) == (0, 0)
            assert dev.joined == 20
            got = b""
            while len(got) < 24000:
                chunk = conn.recv(65536)
                assert chunk
                got += chunk
            assert got == b"".join(data)
            conn.close()
            srv.close()
        finally:
            dev.close()


def _bulk_batch(rng: random.Random) -> list[bytes]:
    """What a receiving tunnel sees of bulk TCP: stretches of equal-length segments of
    one or two flows, and now and then a gap (a lost datagram), a retransmission, a
    PSH, a shorter segment, an ACK or window change, a pure ACK of the other direction,
    a ping, or a segment of the other flow inside a stretch."""
    mss = rng.choice([1000, 1348])
    opts = b"\x01\x01\x08\x0a" + rng.randbytes(8)
    seqs = {40000: rng.randrange(2**32), 40001: rng.choice([2**32 - 5 * mss, 77])}
    out: list[bytes] = []
    for _ in range(rng.randrange(1, 90)):
        sport = 40000 if rng.random() < 0.85 else 40001
        kind = rng.random()
        flags, ack, size, ident = ACK, 1000, mss, rng.randrange(65536)
        if kind < 0.04:
            seqs[sport] += mss  # a gap
        elif kind < 0.06:
            seqs[sport] -= mss  # a retransmission
        elif kind < 0.09:
            flags |= PSH
        elif kind < 0.11:
            size = rng.randrange(1, mss)
        elif kind < 0.13:
            ack = 2000
        elif kind < 0.15:
            out.append(tcp4(5, b"", sport=5001, dport=sport))  # a pure ACK back
            continue
        elif kind < 0.16:
            out.append(bytes.fromhex("450000540000400040010000") + SRC4 + DST4 + bytes(64))
            continue
        out.append(tcp4(seqs[sport], rng.randbytes(size), flags=flags, ack=ack, sport=sport,
                        opts=opts, ident=ident))
        seqs[sport] = (seqs[sport] + size) & 0xFFFFFFFF
    return out


@pytest.mark.parametrize("partial", [False, True])
def test_stretches_taken_at_once_give_what_taking_each_gives(monkeypatch, partial: bool) -> None:
    """The fast path (a stretch of equal-length segments checked and taken in one go)
    writes exactly what the packet-by-packet path writes, on 400 random bulk batches
    with gaps, retransmissions, PSH, short segments, ACK changes, interleaved flows and
    sequence numbers wrapping."""
    import vt_devices.gro as gro

    rng = random.Random(19)
    batches = [_bulk_batch(rng) for _ in range(400)]
    taken: list[int] = []
    take = gro._take_stretch

    def counted(*args):
        taken.append(take(*args))
        return taken[-1]

    monkeypatch.setattr(gro, "_take_stretch", counted)
    fast = [coalesce(b, partial=partial) for b in batches]
    assert sum(taken) > sum(map(len, batches)) // 4  # many packets went the fast way
    monkeypatch.setattr(gro, "MIN_STRETCH", 10**9)  # packet by packet
    slow = [coalesce(b, partial=partial) for b in batches]
    assert fast == slow


def test_a_stretch_stops_at_the_first_packet_that_does_not_follow() -> None:
    """Inside one stretch of equal lengths: a lost segment, a foreign flow's segment, one
    with another ACK."""
    segs = segments(30, 1000)
    other = tcp4(5, bytes(1000), sport=40001)
    acked = tcp4(1 + 25 * 1000, segs[25][40:], ack=2000)
    batch = segs[:10] + segs[11:15] + [other] + segs[15:25] + [acked] + segs[26:]
    writes = coalesce(batch)
    # Runs are per flow: the foreign segment goes out after them, the gap and the ACK
    # change each end one.
    assert [count for _, count, _ in writes] == [10, 14, 1, 4, 1]
    assert writes[4][0][VNET_HDR_LEN:] == other
    assert b"".join(w[0][VNET_HDR_LEN + 40:] for w in writes if w[1] > 1) == b"".join(
        payload_of(p) for p in segs[:10] + segs[11:25] + segs[26:])


@pytest.mark.parametrize("tap", [False, True])
def test_memoryviews_are_joined_as_bytes_are(tap: bool) -> None:
    """A link may hand on views of its receive buffer (``UdpLink.views``): the same
    writes as for bytes, over tun and tap, IPv4 and IPv6, joined or written alone."""
    rng = random.Random(5)
    for _ in range(100):
        batch = _bulk_batch(rng) + [tcp6(1, b"x" * 500), tcp6(501, b"y" * 500)]
        if tap:
            batch = [MAC + (b"\x86\xdd" if p[0] >> 4 == 6 else b"\x08\x00") + p for p in batch]
        buf = b"".join(batch)
        views, pos = [], 0
        for p in batch:
            views.append(memoryview(buf)[pos:pos + len(p)])
            pos += len(p)
        for partial in (False, True):
            assert coalesce(views, tap, partial) == coalesce(batch, tap, partial)
