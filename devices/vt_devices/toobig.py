"""What a router does with a packet its next hop cannot carry: an IPv4 packet without DF
is cut into fragments (:func:`fragments`), anything else is answered with ICMP
"fragmentation needed" (IPv4, DF set) or ICMPv6 "packet too big", written back into the
device (:func:`reply`).

Between vt ends the datagrams go with DF set (``vtcore.transports.udp``): the underlay
never fragments them.  A packet that would need a datagram larger than the path takes is
not sent; its sender learns the size that fits from this answer, as from any router
(its TCP lowers the segment size; ``ping -M do`` prints it).  Source address: the
packet's destination (the kernel takes ICMP errors from anywhere, and this one is
routed back through the tunnel, so reverse-path filtering passes it).

Never an answer to an ICMP error, to a packet from an unspecified or multicast address,
or to IPv4 without DF (that one is fragmented, as a router would: RFC 791; the outer
datagrams still never are).  Pure functions over bytes (no I/O).
"""

from __future__ import annotations

import struct

from vt_devices.gro import _fold

ETH_LEN = 14
_IPV4, _IPV6 = b"\x08\x00", b"\x86\xdd"
ICMP, ICMPV6 = 1, 58
IPV4_MIN_MTU = 68
IPV6_MIN_MTU = 1280
_ICMP_ERRORS = frozenset({3, 4, 5, 11, 12})
"""ICMPv4 types that are errors (never answered with another)."""
_u16 = struct.Struct("!H")


def _checksum(data: bytes) -> int:
    """The Internet checksum of ``data`` (RFC 1071)."""
    if len(data) & 1:
        data += b"\0"
    return ~_fold(int.from_bytes(data, "big")) & 0xFFFF


def reply(packet: bytes, mtu: int, tap: bool = False) -> bytes | None:
    """The ICMP "too big" answer to ``packet`` (a tun's IP packet, or a tap's Ethernet
    frame) for a path that carries ``mtu``-byte packets, or None when none is due."""
    l3 = ETH_LEN if tap else 0
    if len(packet) < l3 + 28:
        return None
    ip = bytes(packet[l3:])
    version = ip[0] >> 4
    if tap and packet[12:14] != (_IPV6 if version == 6 else _IPV4):
        return None
    if version == 4:
        answer = _reply4(ip, mtu)
    elif version == 6:
        answer = _reply6(ip, mtu)
    else:
        return None
    if answer is None:
        return None
    if tap:  # back to where it came from
        return bytes(packet[6:12]) + bytes(packet[0:6]) + bytes(packet[12:14]) + answer
    return answer


def _reply4(ip: bytes, mtu: int) -> bytes | None:
    ihl = (ip[0] & 0x0F) * 4
    if ihl < 20 or len(ip) < ihl + 8 or not ip[6] & 0x40:  # DF clear: no answer
        return None
    src, dst = ip[12:16], ip[16:20]
    if src == bytes(4) or src[0] >= 224 or (ip[9] == ICMP and ip[ihl] in _ICMP_ERRORS):
        return None
    quoted = ip[:ihl + 8]  # its header and the first 8 bytes after it (RFC 792)
    body = struct.pack("!BBHHH", 3, 4, 0, 0, max(IPV4_MIN_MTU, min(mtu, 0xFFFF))) + quoted
    body = body[:2] + _u16.pack(_checksum(body)) + body[4:]
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0xC0, 20 + len(body), 0, 0, 64, ICMP, 0, dst, src)
    head = head[:10] + _u16.pack(_checksum(head)) + head[12:]
    return head + body


def _reply6(ip: bytes, mtu: int) -> bytes | None:
    if len(ip) < 48:
        return None
    src, dst = ip[8:24], ip[24:40]
    if src == bytes(16) or src[0] == 0xFF or (ip[6] == ICMPV6 and ip[40] < 128):
        return None
    # As much of the packet as keeps the answer within the minimum MTU (RFC 4443).
    quoted = ip[:IPV6_MIN_MTU - 48]
    body = struct.pack("!BBHI", 2, 0, 0, max(IPV6_MIN_MTU, mtu)) + quoted
    pseudo = dst + src + struct.pack("!I3xB", len(body), ICMPV6)
    body = body[:2] + _u16.pack(_checksum(pseudo + body)) + body[4:]
    head = struct.pack("!IHBB16s16s", 6 << 28, len(body), ICMPV6, 64, dst, src)
    return head + body


_COPIED = 0x80
"""The option-type bit of the IPv4 options every fragment carries (RFC 791)."""


def _copied_options(options: bytes) -> bytes | None:
    """The options of a later fragment: those with the copied bit, padded to 32 bits;
    None when the option list is malformed."""
    out = bytearray()
    i = 0
    while i < len(options):
        kind = options[i]
        if kind == 0:  # end of the list
            break
        if kind == 1:  # no-operation: never copied
            i += 1
            continue
        if i + 1 >= len(options) or not 2 <= options[i + 1] <= len(options) - i:
            return None
        size = options[i + 1]
        if kind & _COPIED:
            out += options[i:i + size]
        i += size
    out += bytes(-len(out) % 4)
    return bytes(out)


def fragments(packet: bytes, mtu: int, tap: bool = False) -> list[bytes]:
    """The fragments a router makes of ``packet`` (a tun's IPv4 packet, or a tap's
    Ethernet frame of one) for a next hop that carries ``mtu``-byte packets (as read from
    the device, so on a tap with the Ethernet header): each within ``mtu``, the data in
    multiples of 8 bytes but the last, offsets added to the packet's own (a fragment may
    be fragmented again), MF on all but the last, which keeps the packet's own; only
    options with the copied bit after the first.  Empty when it is not to be fragmented:
    not IPv4, DF set, malformed, a length field that disagrees with the packet, or an
    ``mtu`` too small for 8 bytes of data."""
    l3 = ETH_LEN if tap else 0
    ip = bytes(packet[l3:])
    if len(ip) < 20 or ip[0] >> 4 != 4 or (tap and packet[12:14] != _IPV4):
        return []
    ihl = (ip[0] & 0x0F) * 4
    flags_offset = _u16.unpack_from(ip, 6)[0]
    if ihl < 20 or _u16.unpack_from(ip, 2)[0] != len(ip) or len(ip) <= ihl \
            or flags_offset & 0x4000:
        return []
    room = mtu - l3
    if len(ip) <= room:
        return []
    later = _copied_options(ip[20:ihl])
    if later is None:
        return []
    link = bytes(packet[:l3])
    data = ip[ihl:]
    base = flags_offset & 0x1FFF
    last_mf = flags_offset & 0x2000
    out: list[bytes] = []
    header, options = ip[:20], ip[20:ihl]
    pos = 0
    while pos < len(data):
        hlen = 20 + len(options)
        step = (room - hlen) // 8 * 8
        if step <= 0:
            return []
        piece = data[pos:pos + step]
        more = 0x2000 if pos + len(piece) < len(data) else last_mf
        offset = base + pos // 8
        if offset > 0x1FFF:
            return []
        head = bytearray(header)
        head[0] = 0x40 | hlen // 4
        head[2:4] = _u16.pack(hlen + len(piece))
        head[6:8] = _u16.pack((flags_offset & 0x8000) | more | offset)
        head[10:12] = b"\0\0"
        head += options
        head[10:12] = _u16.pack(_checksum(bytes(head)))
        out.append(link + bytes(head) + piece)
        pos += len(piece)
        options = later
    return out
