"""Helpers for the device tests: packet builders/parsers, bounded stream reads."""

from __future__ import annotations

import ipaddress
import os
import select
import struct
import time

from vt_devices import base

from vtcore.testing import inet_checksum


def parse_echo_reply(pkt: bytes) -> tuple[str, str, int, int, bytes] | None:
    """(src, dst, ident, seq, payload) of an IPv4 ICMP echo reply, else None."""
    if len(pkt) < 28 or pkt[0] >> 4 != 4 or pkt[9] != 1:
        return None
    ihl = (pkt[0] & 0x0F) * 4
    icmp = pkt[ihl:]
    if icmp[0] != 0 or inet_checksum(icmp) != 0:
        return None
    ident, seq = struct.unpack("!HH", icmp[4:8])
    src = str(ipaddress.IPv4Address(pkt[12:16]))
    dst = str(ipaddress.IPv4Address(pkt[16:20]))
    return src, dst, ident, seq, bytes(icmp[8:])


def mac_bytes(mac: str) -> bytes:
    return bytes(int(x, 16) for x in mac.split(":"))


def arp_request(src_mac: str, src_ip: str, target_ip: str) -> bytes:
    """A broadcast Ethernet ARP who-has."""
    eth = b"\xff" * 6 + mac_bytes(src_mac) + b"\x08\x06"
    arp = struct.pack(
        "!HHBBH6s4s6s4s",
        1,
        0x0800,
        6,
        4,
        1,
        mac_bytes(src_mac),
        ipaddress.IPv4Address(src_ip).packed,
        b"\0" * 6,
        ipaddress.IPv4Address(target_ip).packed,
    )
    return eth + arp


def parse_arp_reply(frame: bytes) -> tuple[str, str, str, str, str] | None:
    """(eth_dst, sender_mac, sender_ip, target_mac, target_ip) of an ARP reply, else None."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x06":
        return None
    _, _, _, _, op, sha, spa, tha, tpa = struct.unpack("!HHBBH6s4s6s4s", frame[14:42])
    if op != 2:
        return None

    def mac(b: bytes) -> str:
        return ":".join(f"{x:02x}" for x in b)

    return (
        mac(frame[:6]),
        mac(sha),
        str(ipaddress.IPv4Address(spa)),
        mac(tha),
        str(ipaddress.IPv4Address(tpa)),
    )


def drain(dev, want: int, timeout: float = 3.0) -> bytes:
    """Read from ``dev`` until ``want`` bytes arrived; bounded in time."""
    got = bytearray()
    deadline = time.monotonic() + timeout
    while len(got) < want and (left := deadline - time.monotonic()) > 0:
        select.select([dev], [], [], left)
        for chunk in dev.read_packets(16):
            assert 0 < len(chunk) <= base.STREAM_CHUNK
            got += chunk
    return bytes(got)


def read_peer(fd: int, want: int) -> bytes:
    got = bytearray()
    while len(got) < want:
        r, _, _ = select.select([fd], [], [], 3)
        assert r, "peer saw nothing"
        got += os.read(fd, want - len(got))
    return bytes(got)
