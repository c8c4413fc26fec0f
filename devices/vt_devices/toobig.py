"""The answer a router gives to a packet its next hop cannot carry: ICMP "fragmentation
needed" (IPv4, DF set) or ICMPv6 "packet too big", written back into the device.

Between vt ends the datagrams go with DF set (``vtcore.transports.udp``): the underlay
never fragments them.  A packet that would need a datagram larger than the path takes is
not sent; its sender learns the size that fits from this answer, as from any router
(its TCP lowers the segment size; ``ping -M do`` prints it).  Source address: the
packet's destination (the kernel takes ICMP errors from anywhere, and this one is
routed back through the tunnel, so reverse-path filtering passes it).

Never an answer to an ICMP error, to a packet from an unspecified or multicast address,
or to IPv4 without DF (that one is dropped: a router would fragment it; here the outer
datagram may not be).  Pure functions over bytes (no I/O).
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
