"""Receive-side coalescing (GRO in user space) for tun/tap devices with ``IFF_VNET_HDR``.

A tunnel hands its device one packet per frame.  Written one by one, every TCP segment
of a bulk transfer walks the whole receive stack on its own (and draws its own ACK); that
kernel work is most of a tunnel daemon's CPU.  A NIC driver avoids it with GRO; here the
daemon does the same before writing: consecutive in-order segments of one TCP flow are
joined into one GSO super-packet (``virtio_net_hdr`` with ``gso_type`` TCPv4/TCPv6 and
``NEEDS_CSUM``), which the kernel takes whole, and segments again only if it forwards it.

Pure functions over bytes (no I/O): :func:`coalesce` turns a batch of packets into the
buffers to write, each prefixed by a ``virtio_net_hdr`` and with the number and bytes of
the packets it carries (a refused write drops them all).

Joined only what kernel GRO joins: IPv4 without options or fragments, or IPv6 whose next
header is TCP; TCP with only ACK (and PSH on the last segment) set; identical addresses,
ports, TOS/traffic class, TTL/hop limit, DF, ACK number, window and options (timestamps
included); sequence numbers following on; every segment the size of the first except the
last, which may be shorter and ends the run.  Anything else is written as it came, in
order within its flow.  Segment checksums are not verified (that would cost as much as
it saves): the segments arrived under the outer UDP/TCP checksum (and the cipher, if
any); the joined packet's TCP checksum is left for the kernel (``NEEDS_CSUM``).
"""

from __future__ import annotations

import struct
from itertools import groupby, repeat
from operator import itemgetter

VNET_HDR = struct.Struct("<BBHHHH")
"""``struct virtio_net_hdr``: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset."""
VNET_HDR_LEN = VNET_HDR.size
PLAIN = bytes(VNET_HDR_LEN)
"""The header for a packet written as is (no offload, checksum already complete)."""
F_NEEDS_CSUM = 1
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_TCPV6 = 4
TCP_CSUM_OFFSET = 16
MAX_IP_PAYLOAD = 65535
"""IPv4 total length / IPv6 payload length: the largest joined packet."""
ACK, PSH = 0x10, 0x08
ETH_LEN = 14
_IPV4, _IPV6 = b"\x08\x00", b"\x86\xdd"
TCP, UDP = 6, 17
_CSUM_OFFSET = {TCP: 16, UDP: 6}
_u16 = struct.Struct("!H")

Write = tuple[bytes, int, int]
"""A buffer to write, the packets it carries and their bytes (as they came)."""


class _Run:
    """Segments of one flow being joined."""

    __slots__ = ("first", "l3", "l4", "hlen", "v6", "sig", "pieces", "size", "total", "next_seq",
                 "psh", "closed")

    def __init__(self, p: bytes, l3: int, l4: int, hlen: int, v6: bool, sig: bytes,
                 seq: int, plen: int, psh: bool) -> None:
        self.first = p
        self.l3 = l3
        self.l4 = l4
        self.hlen = hlen
        self.v6 = v6
        self.sig = sig
        self.pieces = [p[hlen:]]
        self.size = plen
        self.total = hlen - l3 + plen
        self.next_seq = (seq + plen) & 0xFFFFFFFF
        self.psh = psh
        self.closed = psh

    def take(self, p: bytes, sig: bytes, seq: int, plen: int, psh: bool) -> bool:
        if (self.closed or sig != self.sig or seq != self.next_seq or plen > self.size
                or self.total + plen > MAX_IP_PAYLOAD):
            return False
        self.pieces.append(p[self.hlen:])
        self.total += plen
        self.next_seq = (seq + plen) & 0xFFFFFFFF
        if psh:
            self.psh = True
        self.closed = psh or plen < self.size
        return True

    def emit(self, partial: bool = False) -> Write:
        first = self.first
        count = len(self.pieces)
        l3, l4, hlen = self.l3, self.l4, self.hlen
        # Every packet had the first one's headers: their bytes as they came.
        orig = self.total + l3 + (count - 1) * hlen
        if count == 1:
            return _single(first, partial, l3 > 0), 1, orig
        ip = bytearray(first[l3:l4])
        tcp = bytearray(first[l4:hlen])
        tcp_len = self.total - (l4 - l3)
        if self.v6:
            ip[4:6] = tcp_len.to_bytes(2, "big")
            pseudo = int.from_bytes(ip[8:40], "big") + tcp_len + 6
            gso = GSO_TCPV6
        else:
            ip[2:4] = self.total.to_bytes(2, "big")
            ip[10:12] = b"\0\0"
            ip[10:12] = (~_fold(int.from_bytes(ip, "big")) & 0xFFFF).to_bytes(2, "big")
            pseudo = int.from_bytes(ip[12:20], "big") + tcp_len + 6
            gso = GSO_TCPV4
        if self.psh:
            tcp[13] |= PSH
        tcp[16:18] = _fold(pseudo).to_bytes(2, "big")
        head = VNET_HDR.pack(F_NEEDS_CSUM, gso, hlen, self.size, l4, TCP_CSUM_OFFSET)
        return b"".join((head, first[:l3], ip, tcp, *self.pieces)), count, orig


def _single(p: bytes, partial: bool, tap: bool) -> bytes:
    """One packet as it came, or (``partial``: the peer left its checksum to us) with
    its TCP/UDP checksum left to the kernel."""
    return b"".join(partial_header(p, tap)) if partial else PLAIN + p


def l4_of(p: bytes, tap: bool) -> tuple[int, int, int] | None:
    """(start, checksum field offset, pseudo-header sum) of a TCP or UDP packet whose
    transport header follows the IP header (IPv4 not fragmented, IPv6 without extension
    headers), else None.  The sum is folded, not complemented, and counts the protocol
    and the transport length."""
    l3 = 0
    if tap:
        l3 = ETH_LEN
        etype = p[12:14]
        if etype != _IPV4 and etype != _IPV6:
            return None
    n = len(p)
    if n < l3 + 20:
        return None
    v = p[l3] >> 4
    if v == 4:
        ihl = (p[l3] & 0x0F) * 4
        proto = p[l3 + 9]
        if ihl < 20 or proto not in _CSUM_OFFSET or p[l3 + 6] & 0x3F or p[l3 + 7]:
            return None
        l4 = l3 + ihl
        total = l3 + int.from_bytes(p[l3 + 2:l3 + 4], "big")
        if total > n or total < l4 + _CSUM_OFFSET[proto] + 2:
            return None
        addrs = int.from_bytes(p[l3 + 12:l3 + 20], "big")
    elif v == 6:
        proto = p[l3 + 6]
        if proto not in _CSUM_OFFSET or n < l3 + 40:
            return None
        l4 = l3 + 40
        total = l4 + int.from_bytes(p[l3 + 4:l3 + 6], "big")
        if total > n or total < l4 + _CSUM_OFFSET[proto] + 2:
            return None
        addrs = int.from_bytes(p[l3 + 8:l3 + 40], "big")
    else:
        return None
    return l4, l4 + _CSUM_OFFSET[proto], _fold(addrs + proto + total - l4)


def partial_header(p: bytes, tap: bool) -> tuple[bytes, bytes]:
    """The receiving side: ``(virtio_net_hdr, packet)`` to write ``p`` with its TCP/UDP
    checksum left to the kernel (the field reset to the pseudo-header sum), or with an
    all-zero header (checksum as it came) when it is neither."""
    info = l4_of(p, tap)
    if info is None:
        return bytes(VNET_HDR_LEN), p
    l4, field, pseudo = info
    head = VNET_HDR.pack(F_NEEDS_CSUM, GSO_NONE, 0, 0, l4, field - l4)
    return head, b"".join((p[:field], _u16.pack(pseudo), p[field + 2:]))


def _fold(n: int) -> int:
    """One's-complement sum of the 16-bit words of ``n`` (2**16 = 1 mod 0xFFFF)."""
    r = n % 0xFFFF
    return r if r or not n else 0xFFFF


_TUN4 = struct.Struct("!HHxxBBHxx12sIIBBH")
"""IPv4 (no options) + TCP up to the window, in one call: version/IHL+TOS, total length,
(ID skipped) flags+fragment offset (2 bytes), TTL+protocol, (checksum skipped),
addresses+ports, sequence, ack, data offset, flags, window."""


def _parse_tun4(p: bytes) -> tuple | None:
    """:func:`_parse` for the common case, a tun device and IPv4 (``p[0] == 0x45``): the
    same decision, the same flow and numbers, the signature as a tuple of the same fields
    (runs never mix the two parsers: on a tun, every 0x45 packet comes here).  One struct
    unpack instead of six slices and an int conversion: 0.7 against 1.4 us a packet."""
    n = len(p)
    if n < 40:
        return None
    vtos, total, frag_hi, frag_lo, ttl_proto, flow, seq, ack, doff, flags, window = \
        _TUN4.unpack_from(p)
    if (ttl_proto & 0xFF != 6 or frag_hi & 0x3F or frag_lo or total != n
            or flags & ~PSH != ACK):
        return None
    hlen = 20 + (doff >> 4) * 4
    if hlen < 40 or hlen >= n:
        return None
    sig = (vtos, frag_hi, ttl_proto, ack, doff, window, p[40:hlen])
    return flow, sig, 0, 20, hlen, False, seq, n - hlen, bool(flags & PSH)


def _parse(p: bytes, tap: bool) -> tuple | None:
    """(flow, sig, l3, l4, hlen, v6, seq, plen, psh) of a joinable TCP segment, else None."""
    l3 = 0
    if tap:
        l3 = ETH_LEN
        etype = p[12:14]
        if etype == _IPV4:
            v6 = False
        elif etype == _IPV6:
            v6 = True
        else:
            return None
    n = len(p)
    if n < l3 + 40:
        return None
    b0 = p[l3]
    if not tap:
        v6 = b0 >> 4 == 6
        if not v6 and b0 >> 4 != 4:
            return None
    if v6:
        if b0 >> 4 != 6 or p[l3 + 6] != 6:
            return None
        l4 = l3 + 40
        if int.from_bytes(p[l3 + 4:l3 + 6], "big") != n - l4:
            return None
    else:
        # IHL 5 (no options), protocol TCP, not a fragment, length exact.
        if b0 != 0x45 or p[l3 + 9] != 6 or p[l3 + 6] & 0x3F or p[l3 + 7]:
            return None
        if int.from_bytes(p[l3 + 2:l3 + 4], "big") != n - l3:
            return None
        l4 = l3 + 20
    if n < l4 + 20:
        return None
    flags = p[l4 + 13]
    if flags & ~PSH != ACK:
        return None
    hlen = l4 + (p[l4 + 12] >> 4) * 4
    plen = n - hlen
    if plen <= 0 or hlen < l4 + 20:
        return None
    if v6:
        flow = p[l3 + 8:l3 + 40] + p[l4:l4 + 4]
        # version/class/flow label, next header + hop limit, ack, offset, window, options.
        sig = p[:l3 + 4] + p[l3 + 6:l3 + 8] + p[l4 + 8:l4 + 13] + p[l4 + 14:l4 + 16] \
            + p[l4 + 20:hlen]
    else:
        flow = p[l3 + 12:l3 + 20] + p[l4:l4 + 4]
        # MAC header, TOS, DF, TTL + protocol, ack, offset, window, options.
        sig = p[:l3 + 2] + p[l3 + 6:l3 + 7] + p[l3 + 8:l3 + 10] + p[l4 + 8:l4 + 13] \
            + p[l4 + 14:l4 + 16] + p[l4 + 20:hlen]
    seq = int.from_bytes(p[l4 + 4:l4 + 8], "big")
    return flow, sig, l3, l4, hlen, v6, seq, plen, bool(flags & PSH)


MIN_STRETCH = 3
"""Packets after a run's latest of the same length from which :func:`_take_stretch` checks
them all at once (fewer: one by one, as cheap)."""
MAX_MISSES = 3
"""Stretches that joined nothing (beyond one per 8 packets that did) after which a batch
goes on one by one: equal-length segments of flows taking turns (two iperf3 streams)
would otherwise pay a failed check after every packet (measured 5.7 against 1.8 us a
packet)."""


def _stretch_ends(packets: list[bytes]) -> list[int]:
    """For each index, the end of the stretch of packets of that one's length (a bulk
    flow's segments come as such stretches: equal length, but for a run's last)."""
    ends: list[int] = []
    pos = 0
    for _, group in groupby(map(len, packets)):
        count = len(list(group))
        pos += count
        ends += repeat(pos, count)
    return ends


_masks: dict[tuple[int, int, int, bool], tuple[int, int, itemgetter, itemgetter]] = {}


def _masks_of(run: _Run) -> tuple[int, int, itemgetter, itemgetter]:
    """For a run's shape: the mask that keeps what must be equal in every segment's
    headers and the sequence number (all but IPv4's ID and checksum and the TCP
    checksum), the sequence number's place (bit shift), and ``itemgetter``s of the
    headers and the payload: mapped over a stretch, the loops run in C."""
    key = (run.l3, run.l4, run.hlen, run.v6)
    got = _masks.get(key)
    if got is None:
        l3, l4, hlen = run.l3, run.l4, run.hlen
        keep = bytearray(b"\xff" * hlen)
        holes = [(l4 + 16, 2)] if run.v6 else [(l3 + 4, 2), (l3 + 10, 2), (l4 + 16, 2)]
        for at, size in holes:
            keep[at:at + size] = bytes(size)
        got = _masks[key] = (int.from_bytes(keep, "big"), (hlen - l4 - 8) * 8,
                             itemgetter(slice(0, hlen)), itemgetter(slice(hlen, None)))
    return got


def _take_stretch(run: _Run, last: bytes, packets: list[bytes], start: int, end: int) -> int:
    """How many of ``packets[start:end]`` (each as long as ``last``, the run's latest
    packet, which did not close it) join ``run`` in one go: the checks of
    :meth:`_Run.take` made for the whole stretch by mapping over it.  Each packet's
    headers as one integer, the fields that may differ masked out, must be ``last``'s
    with the sequence number ``k`` segments on: an arithmetic progression, so one
    comparison per packet covers the signature and the order (~0.5 us a packet against
    ~2.3 us parsing and taking each).  Takes the longest prefix that passes; the caller
    goes on one by one from there."""
    plen = run.size
    room = (MAX_IP_PAYLOAD - run.total) // plen
    seq = run.next_seq
    wrap = (0x100000000 - seq) // plen  # the sequence numbers must not wrap (carry)
    end = min(end, start + room, start + wrap)
    n = end - start
    if n < MIN_STRETCH:
        return 0
    mask, shift, headers, payload_of = _masks_of(run)
    step = plen << shift
    expect = (int.from_bytes(headers(last), "big") & mask) + step
    # In chunks that double: segments of two flows taking turns (equal lengths, no
    # stretch to take) cost one comparison each, not one per packet left in the batch.
    pos = start
    chunk = 1
    while pos < end:
        stop = min(end, pos + chunk)
        part = packets[pos:stop]
        fits = list(map(int.__eq__,
                        map(mask.__and__, map(int.from_bytes, map(headers, part))),
                        range(expect, expect + len(part) * step, step)))
        fits += (False,)
        k = fits.index(False)
        if k:
            run.pieces += map(payload_of, part[:k] if k < len(part) else part)
            pos += k
            expect += k * step
        if k < len(part):
            break
        chunk *= 4
    n = pos - start
    if n:
        run.total += n * plen
        run.next_seq = (seq + n * plen) & 0xFFFFFFFF
    return n


def coalesce(packets: list[bytes], tap: bool = False, partial: bool = False) -> list[Write]:
    """The buffers to write for ``packets`` (each with a ``virtio_net_hdr`` in front);
    packets may be memoryviews (of a link's receive buffer).

    Runs of different flows may be reordered among themselves; a packet that joins
    nothing (SYN, FIN, ICMP, UDP...) is written after every run begun before it, so the
    order within each flow and around every other packet is kept.  ``partial``: the
    packets' TCP/UDP checksums are the pseudo-header sums of a splitting peer
    (:mod:`vt_devices.gso`), so a packet written alone leaves its checksum to the kernel
    too (a joined one always does).

    A bulk flow's segments arrive as stretches of equal length: once a packet is in an
    open run, the rest of its stretch is checked and taken at once (:func:`_take_stretch`)."""
    out: list[Write] = []
    runs: dict[bytes, _Run] = {}
    n = len(packets)
    ends = _stretch_ends(packets) if n > MIN_STRETCH else None
    misses = taken = 0
    i = 0
    while i < n:
        p = packets[i]
        i += 1
        if not tap and p and p[0] == 0x45:
            info = _parse_tun4(p)
        else:
            if p.__class__ is memoryview:  # its flow key is made by joining slices
                p = bytes(p)
            info = _parse(p, tap)
        if info is None:
            if runs:
                out.extend(run.emit(partial) for run in runs.values())
                runs.clear()
            out.append((_single(p, partial, tap), 1, len(p)))
            continue
        flow, sig, l3, l4, hlen, v6, seq, plen, psh = info
        run = runs.get(flow)
        if run is None or not run.take(p, sig, seq, plen, psh):
            if run is not None:
                out.append(run.emit(partial))
            run = runs[flow] = _Run(p, l3, l4, hlen, v6, sig, seq, plen, psh)
        if ends is not None and not run.closed and ends[i - 1] - i >= MIN_STRETCH:
            took = _take_stretch(run, p, packets, i, ends[i - 1])
            i += took
            taken += took
            if not took:
                misses += 1
                if misses > MAX_MISSES + taken // 8:  # flows taking turns: one by one
                    ends = None
    out.extend(run.emit(partial) for run in runs.values())
    return out
