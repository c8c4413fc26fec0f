"""Runs: a tun's TCP super-packet sent between vt ends as marked segments.

Over UDP between vt ends (feature ``g``) the sender cuts each TCP super-packet into
datagrams of one packet's size (:mod:`vt_devices.gso`).  Making real packets of them (a
length, ID, checksum and sequence number per segment) and parsing and joining them again
on the other side is Python work per packet.  On a tun, the two ends skip it both ways:
segment ``i`` of ``n`` is the super-packet's own headers, unchanged but for four fields,
then its ``i``-th slice of ``gso_size`` payload bytes:

* the IP version nibble is 0 (IPv4) or 1 (IPv6), never 4 or 6: no IP packet looks like
  this, so the receiver tells a segment from a packet by its first byte;
* the IP length field (IPv4 total length, IPv6 payload length) holds ``i`` and ``n``;
* the TCP checksum field holds ``gso_size`` (the receiving kernel computes the checksum
  anyway: ``NEEDS_CSUM``).

Each datagram stays one self-contained segment, the same size as the packet it replaces:
a lost datagram loses one segment.  The receiver joins each stretch of consecutive
segments of one run (equal headers, indices following on) into one super-packet and
writes it once: sequence number, IPv4 ID and lengths from the stretch's first index,
PSH/FIN only if it holds the last segment, CWR only if it holds the first.  A complete run
costs the receiver a few comparisons mapped in C, not a parse per packet.

On a tap the same fields are marked after the 14-byte Ethernet header, whose EtherType
(IPv4 or IPv6, no VLAN tag) stays: an IPv4 EtherType with version nibble 0 is no valid
frame either, so a frame that is not a segment (ARP, a VLAN-tagged one) is told apart
and written as it came.  IPv4 with any options and IPv6 whose next header is TCP;
anything else is cut into real packets as before.  Both ends must agree: feature ``r``
(``vtcore.runtime.native``, ``DeviceRequest.runs``).

Pure functions over bytes (no I/O).  What a peer sends is not trusted: a segment whose
fields do not hold together is dropped and counted, never raised.
"""

from __future__ import annotations

import struct
from itertools import repeat
from operator import eq, itemgetter

from vt_devices.gro import (
    F_NEEDS_CSUM,
    GSO_NONE,
    GSO_TCPV4,
    GSO_TCPV6,
    MAX_IP_PAYLOAD,
    TCP,
    VNET_HDR,
    Write,
    _fold,
    coalesce,
)

MARK_LIMIT = 0x20
"""First bytes below this are segments (version nibble 0 or 1), at or above it packets."""
ETH_LEN = 14
_IPV4, _IPV6 = b"\x08\x00", b"\x86\xdd"
MAX_SEGMENTS = 255
"""The count is one byte: a super-packet cut finer (a tiny MSS) goes as real packets."""
FIN, PSH, CWR = 0x01, 0x08, 0x80
_INDEX = [bytes((i,)) for i in range(256)]
_RANGE = bytes(range(256))
_u16 = struct.Struct("!H")
_get0 = itemgetter(0)
_get14 = itemgetter(ETH_LEN)


def cut(p: bytes | memoryview, l3: int, l4: int, hlen: int, v6: bool, gso_size: int,
        payload: memoryview) -> list[bytes] | None:
    """The segments of super-packet ``p`` (IP from ``l3``: 0 on a tun, 14 on a tap; TCP
    from ``l4``, headers ``p[:hlen]``, ``payload`` its bytes after the headers), or None
    when it has too many to count."""
    n = (len(payload) + gso_size - 1) // gso_size
    if n > MAX_SEGMENTS or gso_size > 0xFFFF:
        return None
    head = bytearray(p[:hlen])
    head[l3] &= 0x0F
    if v6:
        head[l3] |= 0x10
        at = l3 + 4
    else:
        at = l3 + 2
    head[at + 1] = n
    head[l4 + 16:l4 + 18] = _u16.pack(gso_size)
    before, after = bytes(head[:at]), bytes(head[at + 1:])
    end = n * gso_size
    return list(map(b"".join, zip(repeat(before), _INDEX[:n], repeat(after),
                                  map(payload.__getitem__,
                                      map(slice, range(0, end, gso_size),
                                          range(gso_size, end + gso_size, gso_size))))))


def marked(p: bytes | memoryview, l3: int) -> bool:
    """Whether ``p`` carries the mark (on a tap: after an IPv4 or IPv6 EtherType)."""
    if len(p) <= l3:
        return False
    if not l3:
        return p[0] < MARK_LIMIT
    kind = p[l3] >> 4
    etype = p[12:14]
    return (kind == 0 and etype == _IPV4) or (kind == 1 and etype == _IPV6)


def _shape(p: bytes | memoryview, l3: int) -> tuple[int, int, bool, int, int, int, int] | None:
    """(l4, hlen, v6, place of the index, index, count, gso_size) of a segment whose
    fields hold together, else None."""
    n = len(p)
    if n < l3 + 40 or not marked(p, l3):
        return None
    v6 = p[l3] >> 4 == 1
    if v6:
        if p[l3 + 6] != TCP or n < l3 + 60:
            return None
        l4, at = l3 + 40, l3 + 4
    else:
        l4, at = l3 + (p[l3] & 0x0F) * 4, l3 + 2
        if l4 < l3 + 20 or p[l3 + 9] != TCP or n < l4 + 20:
            return None
    hlen = l4 + (p[l4 + 12] >> 4) * 4
    index, count = p[at], p[at + 1]
    size = p[l4 + 16] << 8 | p[l4 + 17]
    plen = n - hlen
    if (hlen < l4 + 20 or plen <= 0 or index >= count or size <= 0 or plen > size
            or (index < count - 1 and plen != size)):
        return None
    return l4, hlen, v6, at, index, count, size


def _emit(first: bytes | memoryview, l3: int,
          shape: tuple[int, int, bool, int, int, int, int], pieces: list) -> Write:
    """The buffer to write for segments ``first`` (index ``shape[4]``) and on: one packet,
    or a super-packet when there are several."""
    l4, hlen, v6, at, index, count, size = shape
    k = len(pieces)
    last = index + k - 1
    plen = sum(map(len, pieces))
    tcp_len = hlen - l4 + plen
    ip = bytearray(first[l3:l4])
    tcp = bytearray(first[l4:hlen])
    if v6:
        ip[0] = 0x60 | (ip[0] & 0x0F)
        ip[4:6] = _u16.pack(tcp_len)
        pseudo = int.from_bytes(ip[8:40], "big") + tcp_len + TCP
        gso = GSO_TCPV6
    else:
        ip[0] = 0x40 | (ip[0] & 0x0F)
        ip[2:4] = _u16.pack(l4 - l3 + tcp_len)
        ip[4:6] = _u16.pack((int.from_bytes(ip[4:6], "big") + index) & 0xFFFF)
        ip[10:12] = b"\0\0"
        ip[10:12] = _u16.pack(~_fold(int.from_bytes(ip, "big")) & 0xFFFF)
        pseudo = int.from_bytes(ip[12:20], "big") + tcp_len + TCP
        gso = GSO_TCPV4
    tcp[4:8] = ((int.from_bytes(tcp[4:8], "big") + index * size) & 0xFFFFFFFF).to_bytes(4, "big")
    if last != count - 1:
        tcp[13] &= ~(FIN | PSH)
    if index:
        tcp[13] &= ~CWR
    tcp[16:18] = _u16.pack(_fold(pseudo))
    if k > 1:
        head = VNET_HDR.pack(F_NEEDS_CSUM, gso, hlen, size, l4, 16)
    else:
        head = VNET_HDR.pack(F_NEEDS_CSUM, GSO_NONE, 0, 0, l4, 16)
    return b"".join((head, first[:l3], ip, tcp, *pieces)), k, k * hlen + plen


def join(segments: list, out: list[Write], tap: bool = False) -> tuple[int, int]:
    """Append to ``out`` the writes for ``segments`` (marked segments, as
    :func:`first_bytes` found them), in order: each stretch of one run as one write.
    Returns the segments and bytes dropped as malformed.  On a tap, a frame without the
    mark (ARP, whose byte 14 is 0 too) is written as it came."""
    bad = bad_bytes = 0
    l3 = ETH_LEN if tap else 0
    n = len(segments)
    i = 0
    while i < n:
        first = segments[i]
        shape = _shape(first, l3)
        if shape is None:
            if tap and not marked(first, l3):
                out.extend(coalesce([first], True, partial=True))
            else:
                bad += 1
                bad_bytes += len(first)
            i += 1
            continue
        l4, hlen, _, at, index, count, size = shape
        room = min(count - index, n - i, (MAX_IP_PAYLOAD - hlen) // size)
        k = 1
        if room > 1:
            # The stretch's headers must be the first's with the index counting on, its
            # full segments ``size`` long (the run's last may be shorter): checked for
            # all of them at once, column by column, and where that fails (a loss, a
            # reordering), segment by segment for the longest stretch that holds.
            cand = segments[i:i + room]
            before, after = bytes(first[:at]), bytes(first[at + 1:hlen])
            full = hlen + size
            sizes = list(map(len, cand))
            last_short = index + room == count  # the run's last may be shorter
            if last_short:
                sized = sizes[:-1].count(full) == room - 1 and hlen < sizes[-1] <= full
            else:
                sized = sizes.count(full) == room
            # (Sizes first: the index column is read only from segments long enough.)
            if (sized and bytes(map(itemgetter(at), cand)) == _RANGE[index:index + room]
                    and list(map(itemgetter(slice(at + 1, hlen)), cand)).count(after) == room
                    and list(map(itemgetter(slice(0, at)), cand)).count(before) == room):
                k = room
            else:
                expect = map(b"".join, zip(repeat(before), _INDEX[index:index + room],
                                           repeat(after)))
                fits = list(map(eq, map(itemgetter(slice(0, hlen)), cand), expect))
                ok = list(map(eq, sizes, repeat(full)))
                if last_short:
                    ok[-1] = hlen < sizes[-1] <= full
                fits = list(map(bool.__and__, fits, ok))
                fits.append(False)
                k = fits.index(False) or 1
        pieces = list(map(itemgetter(slice(hlen, None)), segments[i:i + k]))
        out.append(_emit(first, l3, shape, pieces))
        i += k
    return bad, bad_bytes


def packet_of(segment: bytes | memoryview, tap: bool = False) -> bytes | None:
    """The real packet a marked segment stands for (its TCP checksum left as the
    pseudo-header sum), or None if it is malformed: what an ICMP error quotes."""
    l3 = ETH_LEN if tap else 0
    shape = _shape(segment, l3)
    if shape is None:
        return None
    buf, _, _ = _emit(segment, l3, shape, [segment[shape[1]:]])
    return buf[VNET_HDR.size:]


def first_bytes(packets: list, tap: bool = False) -> bytes:
    """The byte that carries the mark of every packet (its first, or on a tap its 15th;
    0 where there is none), for finding the segments: below :data:`MARK_LIMIT`, a
    segment (on a tap, possibly: :func:`join` tells)."""
    at = ETH_LEN if tap else 0
    if min(map(len, packets), default=1) > at:
        return bytes(map(_get14 if tap else _get0, packets))
    return bytes(p[at] if len(p) > at else 0 for p in packets)
