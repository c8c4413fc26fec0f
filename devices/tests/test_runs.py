"""vt_devices.runs: a tun's super-packet as marked segments, joined back on the other side.

The oracle is the path they replace: the real packets :func:`~vt_devices.gso.split` cuts,
joined by :func:`~vt_devices.gro.coalesce`.  Whatever arrives of a run (all of it, with
losses, reordered), the marked segments must give the kernel byte for byte the same
writes that the real packets give.  The netns tests in ``test_gso.py`` run the same
devices against real kernels (with and without losses).
"""

from __future__ import annotations

import os
import random
import struct

import pytest
from test_gro import ACK, MAC, PSH, csum, finish_checksum, tcp6
from test_gso import super4
from vt_devices.gro import (
    F_NEEDS_CSUM,
    GSO_NONE,
    GSO_TCPV4,
    GSO_TCPV6,
    VNET_HDR,
    VNET_HDR_LEN,
    coalesce,
    l4_of,
)
from vt_devices.gso import split
from vt_devices.runs import MARK_LIMIT, join
from vt_devices.tun import _plan_runs

MSS = 1348


def super6(seq: int, payload: bytes, mss: int, flags: int = ACK | PSH) -> bytes:
    p = tcp6(seq, payload, flags=flags)
    info = l4_of(p, False)
    assert info is not None
    p = p[:56] + struct.pack("!H", info[2]) + p[58:]
    return VNET_HDR.pack(F_NEEDS_CSUM, GSO_TCPV6, 60, mss, 40, 16) + p


def both(buf: bytes) -> tuple[list[bytes], list[bytes]]:
    """(the marked segments, the real packets) of one super-packet."""
    marked, real = split(buf, runs=True), split(buf)
    assert marked is not None and real is not None and len(marked) == len(real)
    return marked, real


def joined(segments: list) -> list:
    out: list = []
    assert join(segments, out) == (0, 0)
    return out


def same_writes(marked: list, real: list) -> None:
    """The writes of the marked segments are the real packets' (the byte counts aside:
    both count what came, and the same)."""
    got, want = joined(marked), coalesce(real, partial=True)
    assert [(b, c) for b, c, _ in got] == [(b, c) for b, c, _ in want]
    assert [n for _, _, n in got] == [n for _, _, n in want]


@pytest.mark.parametrize("make", [super4, super6], ids=["ipv4", "ipv6"])
def test_a_whole_run_is_one_write_the_same_as_the_joined_packets(make) -> None:
    data = os.urandom(MSS * 44 + 500)
    marked, real = both(make(7_000, data, MSS, flags=ACK | PSH))
    assert len(marked) == 45
    assert all(m[0] < MARK_LIMIT for m in marked) and [len(m) for m in marked] == list(map(len, real))
    ((buf, count, _),) = joined(marked)
    assert count == 45 and buf[VNET_HDR_LEN + (40 if make is super4 else 60):] == data
    same_writes(marked, real)


def super6_tap(seq: int, payload: bytes, mss: int, flags: int = ACK | PSH) -> bytes:
    head = super6(seq, payload, mss, flags)
    flags_, gso, hlen, size, start, off = VNET_HDR.unpack_from(head)
    return (VNET_HDR.pack(flags_, gso, hlen + 14, size, start + 14, off) + MAC + b"\x86\xdd"
            + head[VNET_HDR_LEN:])


@pytest.mark.parametrize("make", [lambda *a, **k: super4(*a, tap=True, **k), super6_tap],
                         ids=["ipv4", "ipv6"])
def test_a_tap_run_keeps_its_ethernet_header_and_joins_as_the_packets(make) -> None:
    """On a tap the mark sits after the Ethernet header; an ARP frame (byte 14 is 0 too)
    between runs is no segment and goes as it came."""
    data = os.urandom(MSS * 20 + 77)
    buf = make(11, data, MSS, flags=ACK | PSH)
    marked, real = split(buf, tap=True, runs=True), split(buf, tap=True)
    assert marked is not None and real is not None and len(marked) == len(real) == 21
    assert all(m[:14] == r[:14] and m[14] >> 4 in (0, 1) for m, r in zip(marked, real, strict=True))
    got, want = [], coalesce(real, True, partial=True)
    assert join(marked, got, tap=True) == (0, 0)
    assert [(b, c) for b, c, _ in got] == [(b, c) for b, c, _ in want]
    keep = [0, 1, 2, 5, 6, 9, 20]  # with losses too
    got = []
    assert join([marked[i] for i in keep], got, tap=True) == (0, 0)
    want = coalesce([real[i] for i in keep], True, partial=True)
    assert [(b, c) for b, c, _ in got] == [(b, c) for b, c, _ in want]
    arp = MAC + b"\x08\x06" + bytes.fromhex("0001080006040001") + bytes(20)
    writes, bad, _ = _plan_runs([*marked[:3], arp, *marked[3:]], tap=True)
    assert bad == 0 and [c for _, c, _ in writes] == [3, 1, 18]
    assert writes[1][0][VNET_HDR_LEN:] == arp


def test_a_run_is_joined_from_views_of_one_receive_buffer() -> None:
    marked, real = both(super4(1, os.urandom(MSS * 10), MSS, flags=ACK | PSH))
    buf = memoryview(b"".join(marked))
    size = len(marked[0])
    views = [buf[i:i + size] for i in range(0, len(buf), size)]
    same_writes(views, real)


@pytest.mark.parametrize("seed", range(12))
def test_losses_and_reordering_give_the_writes_of_what_arrived(seed: int) -> None:
    """Any subset, in any order: each stretch of consecutive segments is one write, the
    same as coalescing the real packets that arrived (sequence numbers, IPv4 ID, PSH
    only with the last, lengths, checksums)."""
    rng = random.Random(seed)
    n = rng.randrange(2, 48)
    data = os.urandom(MSS * (n - 1) + rng.randrange(1, MSS + 1))
    make = super4 if seed % 2 else super6
    kw = {"ident": rng.randrange(0x10000)} if make is super4 else {}
    marked, real = both(make(rng.randrange(1 << 32), data, MSS, flags=ACK | PSH, **kw))
    keep = sorted(rng.sample(range(n), rng.randrange(1, n + 1)))
    if seed % 3 == 0 and len(keep) > 2:  # one pair swapped
        a = rng.randrange(len(keep) - 1)
        keep[a], keep[a + 1] = keep[a + 1], keep[a]
    same_writes([marked[i] for i in keep], [real[i] for i in keep])


def test_two_runs_back_to_back_stay_two_writes() -> None:
    """The second run's first segment does not follow on the first's last (its index
    starts again), even when the same flow goes on."""
    d1, d2 = os.urandom(MSS * 5), os.urandom(MSS * 5)
    m1, r1 = both(super4(1, d1, MSS, flags=ACK | PSH))
    m2, r2 = both(super4(1 + len(d1), d2, MSS, flags=ACK | PSH, ident=105))
    got = joined(m1 + m2)
    assert [c for _, c, _ in got] == [5, 5]
    assert got[1][0][VNET_HDR_LEN + 40:] == d2


def test_a_lone_segment_is_a_complete_packet_once_the_kernel_sums_it() -> None:
    data = os.urandom(MSS * 3)
    marked, real = both(super4(9, data, MSS, flags=ACK | PSH, ident=0xFFFF))
    ((buf, count, _),) = joined([marked[2]])
    flags, gso, *_ = VNET_HDR.unpack_from(buf)
    assert count == 1 and flags == F_NEEDS_CSUM and gso == GSO_NONE
    pkt = bytearray(buf[VNET_HDR_LEN:])
    assert csum(bytes(pkt[:20])) == 0 and pkt[4:6] == b"\x00\x01"  # ID 0xFFFF + 2 wrapped
    assert pkt[40:] == data[2 * MSS:] and pkt[33] == ACK | PSH


def test_a_mixed_batch_keeps_its_order() -> None:
    """Plain packets (ACKs, pings) between runs: each stretch is written where it came."""
    from test_gro import tcp4

    m1, _ = both(super4(1, os.urandom(MSS * 4), MSS, flags=ACK | PSH))
    ack = tcp4(5, b"", ident=7)
    m2, _ = both(super4(1 + MSS * 4, os.urandom(MSS * 3), MSS, flags=ACK | PSH))
    writes, bad, _ = _plan_runs([*m1, ack, *m2])
    assert bad == 0 and [c for _, c, _ in writes] == [4, 1, 3]
    assert finish_checksum(writes[1][0]) == ack


def test_gso_types_and_shapes_that_are_not_marked() -> None:
    """A packet that fits one segment, and a super-packet cut finer than a one-byte count
    go as real packets."""
    small = super4(1, os.urandom(900), MSS)
    assert split(small, runs=True) == split(small)
    tiny = super4(1, os.urandom(300 * 40), 40)
    cut = split(tiny, runs=True)
    assert cut is not None and len(cut) == 300 and cut[0][0] == 0x45


@pytest.mark.parametrize("tap", [False, True], ids=["tun", "tap"])
def test_malformed_segments_are_dropped_and_counted_never_raised(tap: bool) -> None:
    rng = random.Random(5)
    l3 = 14 if tap else 0
    marked = split(super4(1, os.urandom(MSS * 8), MSS, flags=ACK | PSH, tap=tap), tap=tap,
                   runs=True)
    assert marked is not None
    for _ in range(3000):
        batch = [bytearray(m) for m in rng.sample(marked, rng.randrange(1, 6))]
        for seg in batch:
            for _ in range(rng.randrange(1, 4)):
                seg[rng.randrange(min(len(seg), l3 + 80))] = rng.randrange(256)
            seg[l3] &= 0x1F  # still marked (on a tap, unless the EtherType was hit)
        if rng.random() < 0.3:
            batch.append(bytearray(rng.randbytes(rng.randrange(0, l3 + 70))))
        out: list = []
        bad, bad_bytes = join([bytes(s) for s in batch], out, tap=tap)
        assert bad + sum(c for _, c, _ in out) == len(batch)
        for buf, _, _ in out:  # what is written has a sane header and fits an IP packet
            flags, gso, hlen, size, start, offset = VNET_HDR.unpack_from(buf)
            assert gso in (GSO_NONE, GSO_TCPV4, GSO_TCPV6) and len(buf) - VNET_HDR_LEN <= 65535 + 60 + l3
        writes, bad, _ = _plan_runs([bytes(s) for s in batch], tap)  # as the device does
        assert bad + sum(c for _, c, _ in writes) == len(batch)
    if tap:
        return
    three, _ = both(super4(1, os.urandom(MSS * 2 + 100), MSS, flags=ACK | PSH))
    out = []
    # A short one in the middle of a run (that may end short): its index is never read.
    assert join([three[0], b"\x01" * 5, three[2]], out) == (1, 5)
    assert [c for _, c, _ in out] == [1, 1]
    assert _plan_runs([]) == ([], 0, 0)
    writes, bad, nbytes = _plan_runs([b"\x01" * 30, b"", *marked])
    assert bad == 2 and nbytes == 30 and sum(c for _, c, _ in writes) == len(marked)
