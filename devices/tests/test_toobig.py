"""vt_devices.toobig: the ICMP "too big" answer a router gives, checked field by field
and by checksum; and the device's side of it for marked segments (vt_devices.runs).
The live test (a path MTU below the tunnel's, no fragment on the wire) is in
tests/test_udp_offload.py."""

from __future__ import annotations

import os
import struct

import pytest
from test_gro import DST4, MAC, SRC4, csum, tcp4, tcp6
from test_gso import super4
from vt_devices.gso import split
from vt_devices.toobig import reply


def test_ipv4_with_df_gets_fragmentation_needed_with_the_mtu() -> None:
    p = tcp4(7, os.urandom(1360))
    assert p[6] & 0x40  # test_gro builds packets with DF
    r = reply(p, 1272)
    assert r is not None
    assert r[0] == 0x45 and r[9] == 1 and csum(r[:20]) == 0
    assert r[12:16] == DST4 and r[16:20] == SRC4  # from where it was going, back to its source
    icmp = r[20:]
    assert csum(icmp) == 0
    kind, code, _, _, mtu = struct.unpack("!BBHHH", icmp[:8])
    assert (kind, code, mtu) == (3, 4, 1272)
    assert icmp[8:] == p[:28]  # its header and the first 8 bytes (ports and sequence)
    assert struct.unpack("!H", r[2:4])[0] == len(r)


def test_ipv4_without_df_and_icmp_errors_get_no_answer() -> None:
    p = bytearray(tcp4(7, os.urandom(1360)))
    p[6] &= ~0x40
    assert reply(bytes(p), 1272) is None
    err = reply(tcp4(7, os.urandom(1360)), 1272)
    assert err is not None and reply(err, 500) is None  # never an error about an error
    mcast = bytearray(tcp4(7, os.urandom(100)))
    mcast[12] = 239
    assert reply(bytes(mcast), 500) is None


def test_ipv6_gets_packet_too_big_within_the_minimum_mtu() -> None:
    p = tcp6(1, os.urandom(1400))
    r = reply(p, 1300)
    assert r is not None and r[0] >> 4 == 6 and r[6] == 58 and len(r) <= 1280
    assert r[8:24] == p[24:40] and r[24:40] == p[8:24]
    body = r[40:]
    pseudo = r[8:40] + struct.pack("!I3xB", len(body), 58)
    assert csum(pseudo + body) == 0
    kind, code, _, mtu = struct.unpack("!BBHI", body[:8])
    assert (kind, code, mtu) == (2, 0, 1300)
    assert body[8:] == p[:len(body) - 8]
    assert struct.unpack("!I", reply(p, 900)[44:48])[0] == 1280  # never below IPv6's minimum
    assert reply(r, 1000) is None  # nor to an ICMPv6 error


def test_tap_answer_goes_back_to_the_sender_mac() -> None:
    frame = MAC + b"\x08\x00" + tcp4(7, os.urandom(1360))
    r = reply(frame, 1300 - 14, tap=True)
    assert r is not None
    assert r[:6] == frame[6:12] and r[6:12] == frame[:6] and r[12:14] == b"\x08\x00"
    assert struct.unpack("!H", r[14 + 20 + 6:14 + 20 + 8])[0] == 1286
    arp = MAC + b"\x08\x06" + bytes(40)
    assert reply(arp, 500, tap=True) is None


@pytest.mark.parametrize("tap", [False, True], ids=["tun", "tap"])
def test_a_marked_segment_is_answered_about_the_packet_it_stands_for(tap: bool) -> None:
    """The device reads marked segments in runs mode: the ICMP quotes the real packet
    (version 4, its own length and sequence number), which the sender's TCP matches."""
    from vt_devices.runs import packet_of

    data = os.urandom(1348 * 5)
    marked = split(super4(1000, data, 1348, tap=tap), tap=tap, runs=True)
    real = split(super4(1000, data, 1348, tap=tap), tap=tap)
    assert marked is not None and real is not None
    l3 = 14 if tap else 0
    for m, p in zip(marked, real, strict=True):
        got = packet_of(m, tap)
        assert got is not None and got[:l3 + 40] == p[:l3 + 40] and got[l3 + 40:] == p[l3 + 40:]
        assert reply(got, 1200 + l3, tap)[l3 + 28:l3 + 56] == p[l3:l3 + 28]
    assert packet_of(b"\x01" * 50) is None
