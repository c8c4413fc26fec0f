"""The classic pcap file format, without I/O: header and record bytes out, a summary in.

Written little-endian with microsecond timestamps (magic ``a1b2c3d4``); read in either byte
order and either timestamp resolution, as libpcap does.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

MAGIC_USEC = 0xA1B2C3D4
MAGIC_NSEC = 0xA1B23C4D
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_NAMES = {LINKTYPE_ETHERNET: "ETHERNET", LINKTYPE_RAW: "RAW"}
SNAPLEN = 65535
"""Larger than any frame vt carries (vtund frames are at most 4095 bytes)."""
MAX_RECORD = 262144
"""libpcap's own limit on a record; a longer one means a damaged file."""

_GLOBAL = struct.Struct("<IHHiIII")  # magic, major, minor, thiszone, sigfigs, snaplen, network
_RECORD = struct.Struct("<IIII")  # ts_sec, ts_usec, incl_len, orig_len
GLOBAL_HEADER_SIZE = _GLOBAL.size


class PcapError(Exception):
    """The data is not a pcap file, or a damaged one."""


def global_header(linktype: int, snaplen: int = SNAPLEN) -> bytes:
    """The 24-byte header every pcap file starts with (version 2.4)."""
    return _GLOBAL.pack(MAGIC_USEC, 2, 4, 0, 0, snaplen, linktype)


def record(packet: bytes, now: float, snaplen: int = SNAPLEN) -> bytes:
    """One record: header and packet (cut to ``snaplen``), stamped ``now`` (Unix seconds)."""
    sec = int(now)
    usec = min(int((now - sec) * 1_000_000), 999_999)
    data = packet[:snaplen]
    return _RECORD.pack(sec, usec, len(data), len(packet)) + data


@dataclass(frozen=True)
class PcapHeader:
    linktype: int
    snaplen: int
    byteorder: str
    """``<`` or ``>``, as written by the producer."""


def parse_global_header(data: bytes) -> PcapHeader:
    """Read the 24-byte global header; :class:`PcapError` if it is not one."""
    if len(data) < GLOBAL_HEADER_SIZE:
        raise PcapError(f"too short for a pcap header ({len(data)} bytes)")
    for order in "<>":
        magic, major, _minor, _zone, _sig, snaplen, linktype = struct.unpack(
            order + "IHHiIII", data[:GLOBAL_HEADER_SIZE]
        )
        if magic in (MAGIC_USEC, MAGIC_NSEC):
            if major != 2:
                raise PcapError(f"unsupported pcap version {major}")
            return PcapHeader(linktype & 0x0FFFFFFF, snaplen, order)
    raise PcapError("not a pcap file (bad magic number)")


@dataclass(frozen=True)
class PcapSummary:
    linktype: int
    packets: int
    bytes: int
    """Captured bytes (sum of the records' lengths)."""
    truncated: bool
    """The last record is cut short (a writer stopped mid-record)."""

    @property
    def linktype_name(self) -> str:
        return LINKTYPE_NAMES.get(self.linktype, "?")


def summarize(stream: BinaryIO) -> PcapSummary:
    """Count the records of a pcap stream; :class:`PcapError` on a damaged file."""
    header = parse_global_header(stream.read(GLOBAL_HEADER_SIZE))
    rec = struct.Struct(header.byteorder + "IIII")
    packets = total = 0
    while True:
        head = stream.read(rec.size)
        if not head:
            return PcapSummary(header.linktype, packets, total, False)
        if len(head) < rec.size:
            return PcapSummary(header.linktype, packets, total, True)
        _sec, _usec, incl, _orig = rec.unpack(head)
        if incl > MAX_RECORD:
            raise PcapError(f"record {packets + 1}: length {incl} is not plausible")
        data = stream.read(incl)
        if len(data) < incl:
            return PcapSummary(header.linktype, packets, total, True)
        packets += 1
        total += incl
