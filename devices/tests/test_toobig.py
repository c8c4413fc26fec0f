"""vt_devices.toobig: the ICMP "too big" answer a router gives, checked field by field
and by checksum, and the device's side of it for marked segments (vt_devices.runs); the
fragments it makes of IPv4 without DF (RFC 791), joined back and checked.
The live test (a path MTU below the tunnel's, no fragment on the wire) is in
tests/test_udp_offload.py."""

from __future__ import annotations

import os
import struct

import pytest
from test_gro import DST4, MAC, SRC4, csum, tcp4, tcp6
from test_gso import super4
from vt_devices.gso import split
from vt_devices.toobig import fragments, reply


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


# ------------------------------------------------------------------ fragments (RFC 791)


def _udp4(payload: bytes, *, df: bool = False, options: bytes = b"", mf: bool = False,
          offset: int = 0) -> bytes:
    ihl = 20 + len(options)
    flags = (0x4000 if df else 0) | (0x2000 if mf else 0) | offset
    head = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl // 4, 0, ihl + 8 + len(payload), 0x4242,
                       flags, 64, 17, 0, SRC4, DST4) + options
    head = head[:10] + struct.pack("!H", csum(head)) + head[12:]
    return head + struct.pack("!HHHH", 4000, 53, 8 + len(payload), 0) + payload


def _fields(f: bytes) -> tuple[int, int, int, int]:
    """(header length, total length, MF, offset in bytes) of an IPv4 fragment."""
    flags = struct.unpack("!H", f[6:8])[0]
    return (f[0] & 0x0F) * 4, struct.unpack("!H", f[2:4])[0], flags & 0x2000, (flags & 0x1FFF) * 8


def _reassemble(frags: list[bytes], base: int = 0) -> bytes:
    """The data of ``frags``, checking that each starts where the one before ended."""
    data = bytearray()
    for f in frags:
        hlen, total, _, offset = _fields(f)
        assert offset == base + len(data)
        data += f[hlen:total]
    return bytes(data)


@pytest.mark.parametrize("mtu", [1300, 576, 68, 1001])
def test_ipv4_without_df_is_cut_as_a_router_cuts_it(mtu: int) -> None:
    p = _udp4(os.urandom(1372))
    frags = fragments(p, mtu)
    assert len(frags) == -(-(len(p) - 20) // ((mtu - 20) // 8 * 8))
    for i, f in enumerate(frags):
        hlen, total, mf, offset = _fields(f)
        assert total == len(f) <= mtu and csum(f[:hlen]) == 0
        assert bool(mf) == (i < len(frags) - 1)
        assert (total - hlen) % 8 == 0 or i == len(frags) - 1
        assert f[4:6] == p[4:6] and f[8:10] == p[8:10] and f[12:20] == p[12:20]  # id, ttl, addresses
    assert _reassemble(frags) == p[20:]


def test_df_ipv6_short_and_malformed_packets_are_not_cut() -> None:
    assert fragments(_udp4(os.urandom(1372), df=True), 1300) == []
    assert fragments(_udp4(os.urandom(1000)), 1300) == []  # it fits
    assert fragments(tcp6(7, os.urandom(1360)), 1300) == []
    bad = bytearray(_udp4(os.urandom(1372)))
    bad[2:4] = struct.pack("!H", 1000)  # its length field disagrees
    assert fragments(bytes(bad), 1300) == []
    assert fragments(_udp4(os.urandom(1372)), 27) == []  # no room for 8 bytes of data
    assert fragments(b"\x45" + bytes(10), 8) == []


def test_a_fragment_is_cut_again_with_its_offset_and_last_mf() -> None:
    inner = _udp4(os.urandom(2000), mf=True, offset=100)  # a middle fragment already
    frags = fragments(inner, 1000)
    assert all(_fields(f)[2] for f in frags)  # MF on every piece: more follow the last
    assert _reassemble(frags, 800) == inner[20:]


def test_only_copied_options_follow_the_first_fragment() -> None:
    # Security (type 130, copied, 11 bytes), NOP, record route (7, not copied, 7 bytes), EOL
    security = bytes([130, 11]) + bytes(9)
    options = security + b"\x01" + bytes([7, 7, 4]) + bytes(4) + b"\x00"
    options += bytes(-len(options) % 4)
    p = _udp4(os.urandom(1500), options=options)
    frags = fragments(p, 700)
    assert frags[0][20:_fields(frags[0])[0]] == options
    for f in frags[1:]:
        assert f[20:_fields(f)[0]] == security + b"\x00"  # padded to 32 bits
    assert b"".join(f[_fields(f)[0]:] for f in frags) == p[len(options) + 20:]
    broken = bytearray(p)
    broken[21] = 40  # an option longer than the header
    assert fragments(bytes(broken), 700) == []


def test_tap_fragments_keep_the_ethernet_header() -> None:
    frame = MAC + b"\x08\x00" + _udp4(os.urandom(1372))
    frags = fragments(frame, 1300 + 14, tap=True)
    assert len(frags) == 2 and all(f[:14] == frame[:14] and len(f) <= 1314 for f in frags)
    assert _reassemble([f[14:] for f in frags]) == frame[34:]
    assert fragments(MAC + b"\x08\x06" + bytes(1500), 1314, tap=True) == []  # not IP
