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

Only a tun (no Ethernet header to put the mark in), IPv4 with any options and IPv6 whose
next header is TCP; anything else is cut into real packets as before.  Both ends must
agree: the HOST token ``gso2`` (``vtcore.runtime.native``).

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
)

MARK_LIMIT = 0x20
"""First bytes below this are segments (version nibble 0 or 1), at or above it packets."""
MAX_SEGMENTS = 255
"""The count is one byte: a super-packet cut finer (a tiny MSS) goes as real packets."""
FIN, PSH, CWR = 0x01, 0x08, 0x80
_INDEX = [bytes((i,)) for i in range(256)]
_RANGE = bytes(range(256))
_u16 = struct.Struct("!H")
_get0 = itemgetter(0)


def cut(p: bytes | memoryview, l4: int, hlen: int, v6: bool, gso_size: int,
        payload: memoryview) -> list[bytes] | None:
    """The segments of super-packet ``p`` (headers ``p[:hlen]``, TCP from ``l4``,
    ``payload`` its bytes after the headers), or None when it has too many to count."""
    n = (len(payload) + gso_size - 1) // gso_size
    if n > MAX_SEGMENTS or gso_size > 0xFFFF:
        return None
    head = bytearray(p[:hlen])
    head[0] &= 0x0F
    if v6:
        head[0] |= 0x10
        at = 4
    else:
        at = 2
    head[at + 1] = n
    head[l4 + 16:l4 + 18] = _u16.pack(gso_size)
    before, after = bytes(head[:at]), bytes(head[at + 1:])
    end = n * gso_size
    return list(map(b"".join, zip(repeat(before), _INDEX[:n], repeat(after),
                                  map(payload.__getitem__,
                                      map(slice, range(0, end, gso_size),
                                          range(gso_size, end + gso_size, gso_size))))))


def _shape(p: bytes | memoryview) -> tuple[int, int, bool, int, int, int, int] | None:
    """(l4, hlen, v6, place of the index, index, count, gso_size) of a segment whose
    fields hold together, else None."""
    n = len(p)
    if n < 40:
        return None
    v6 = p[0] >> 4 == 1
    if v6:
        if p[6] != TCP or n < 60:
            return None
        l4, at = 40, 4
    else:
        l4, at = (p[0] & 0x0F) * 4, 2
        if l4 < 20 or p[9] != TCP or n < l4 + 20:
            return None
    hlen = l4 + (p[l4 + 12] >> 4) * 4
    index, count = p[at], p[at + 1]
    size = p[l4 + 16] << 8 | p[l4 + 17]
    plen = n - hlen
    if (hlen < l4 + 20 or plen <= 0 or index >= count or size <= 0 or plen > size
            or (index < count - 1 and plen != size)):
        return None
    return l4, hlen, v6, at, index, count, size


def _emit(first: bytes | memoryview, shape: tuple[int, int, bool, int, int, int, int],
          pieces: list) -> Write:
    """The buffer to write for segments ``first`` (index ``shape[4]``) and on: one packet,
    or a super-packet when there are several."""
    l4, hlen, v6, at, index, count, size = shape
    k = len(pieces)
    last = index + k - 1
    plen = sum(map(len, pieces))
    tcp_len = hlen - l4 + plen
    ip = bytearray(first[:l4])
    tcp = bytearray(first[l4:hlen])
    if v6:
        ip[0] = 0x60 | (ip[0] & 0x0F)
        ip[4:6] = _u16.pack(tcp_len)
        pseudo = int.from_bytes(ip[8:40], "big") + tcp_len + TCP
        gso = GSO_TCPV6
    else:
        ip[0] = 0x40 | (ip[0] & 0x0F)
        ip[2:4] = _u16.pack(l4 + tcp_len)
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
    return b"".join((head, ip, tcp, *pieces)), k, k * hlen + plen


def join(segments: list, out: list[Write]) -> tuple[int, int]:
    """Append to ``out`` the writes for ``segments`` (each a marked segment: first byte
    below :data:`MARK_LIMIT`), in order: each stretch of one run as one write.  Returns
    the segments and bytes dropped as malformed."""
    bad = bad_bytes = 0
    n = len(segments)
    i = 0
    while i < n:
        first = segments[i]
        shape = _shape(first)
        if shape is None:
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
        out.append(_emit(first, shape, pieces))
        i += k
    return bad, bad_bytes


def is_segment(p: bytes | memoryview) -> bool:
    return bool(p) and p[0] < MARK_LIMIT


def first_bytes(packets: list) -> bytes:
    """The first byte of every packet (0 for an empty one), for finding the segments."""
    return bytes(map(_get0, packets)) if all(packets) else bytes(p[0] if p else 0 for p in packets)
