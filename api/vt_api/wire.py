"""What every handshake participant must agree on byte for byte (contract 1.2).

vtun's handshake messages are fixed 50-byte blocks; a secure-mode extension's messages
are a 2-byte big-endian length and a body.  The core and the plugins that take part in
the handshake (secure modes) read these from here, so the numbers live in one place.
"""

from __future__ import annotations

import ipaddress

MESG_SIZE = 50
"""A vtun handshake message: text, NUL padding, byte 49 always NUL."""
MAX_TEXT = MESG_SIZE - 2
"""vtund formats into the block with ``vsnprintf(buf, 49, ...)``: 48 characters at most."""

HANDSHAKE_LENGTH_SIZE = 2
MAX_HANDSHAKE_MESSAGE = 4096
"""Largest secure-handshake message body the core reads (an extension may allow less)."""


def pack_msg(text: str) -> bytes:
    """``text`` as one 50-byte block, truncated to 48 characters as vtund does."""
    raw = text.encode("latin-1")[:MAX_TEXT]
    return raw + b"\0" * (MESG_SIZE - len(raw))


def unpack_msg(block: bytes) -> str:
    """One 50-byte block -> its text: byte 49 forced to NUL, cut at the first NUL."""
    if len(block) != MESG_SIZE:
        raise ValueError(f"a handshake message is {MESG_SIZE} bytes, got {len(block)}")
    return block[: MESG_SIZE - 1].split(b"\0", 1)[0].decode("latin-1")


def source_key(address: str) -> str:
    """The bucket a peer address falls in for rate limits: the IPv4 address, or the IPv6
    /64 (one host usually owns a whole /64, so per-address buckets would be free to
    multiply)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
