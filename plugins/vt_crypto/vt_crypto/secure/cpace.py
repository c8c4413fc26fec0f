"""CPace (draft-irtf-cfrg-cpace), cipher suite CPACE-RISTR255-SHA512: secure mode's PAKE.

The CFRG-selected balanced PAKE.  Every group operation is libsodium's (through
pysodium): hashing to the group, scalar sampling and scalar multiplication run in
constant time, so the password-derived generator never steers a branch or a memory
access.  What stays in Python is byte-string assembly whose shape depends only on
lengths (the generator string pads the password to a whole hash block).

Initiator-responder setting: the client is A (initiator), the server B.  Pure functions;
randomness comes in as ``rng(n)``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pysodium

DSI = b"CPaceRistretto255"
DSI_ISK = DSI + b"_ISK"
HASH_BLOCK = 128
"""SHA-512's input block size (the draft's H.s_in_bytes)."""
POINT_SIZE = 32
ISK_SIZE = 64

Rng = Callable[[int], bytes]


def prepend_len(data: bytes) -> bytes:
    """``data`` preceded by its length in LEB128 (7 bits a byte, least significant first)."""
    n = len(data)
    head = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        head.append(low | 0x80 if n else low)
        if not n:
            return bytes(head) + data


def lv_cat(*parts: bytes) -> bytes:
    """Length-value concatenation: a prefix-free encoding of a list of strings."""
    return b"".join(prepend_len(p) for p in parts)


def generator_string(prs: bytes, ci: bytes, sid: bytes, dsi: bytes = DSI) -> bytes:
    """``lv_cat(DSI, PRS, zero padding, CI, sid)``; the padding fills the first hash block,
    so for passwords under a block the bytes hashed do not depend on the password length."""
    zpad = max(0, HASH_BLOCK - 1 - len(prepend_len(prs)) - len(prepend_len(dsi)))
    return lv_cat(dsi, prs, bytes(zpad), ci, sid)


def calculate_generator(prs: bytes, ci: bytes, sid: bytes) -> bytes:
    """The password-derived generator (encoded): SHA-512 of the generator string, mapped
    to ristretto255 by libsodium's element derivation (RFC 9496 one-way map)."""
    digest = hashlib.sha512(generator_string(prs, ci, sid)).digest()
    return pysodium.crypto_core_ristretto255_from_hash(digest)


def sample_scalar(rng: Rng) -> bytes:
    """A uniform scalar: 64 random bytes reduced modulo the group order."""
    return pysodium.crypto_core_ristretto255_scalar_reduce(rng(64))


def scalar_mult_vfy(scalar: bytes, point: bytes) -> bytes | None:
    """``encode(scalar * decode(point))``, or None (the draft's G.I) when ``point`` is not
    a valid encoding or the product is the neutral element: the caller must abort."""
    if len(point) != POINT_SIZE:
        return None
    try:
        return pysodium.crypto_scalarmult_ristretto255(scalar, point)
    except ValueError:
        return None


def transcript_ir(ya: bytes, ada: bytes, yb: bytes, adb: bytes) -> bytes:
    """The initiator-responder transcript: ``lv_cat(Ya, ADa) || lv_cat(Yb, ADb)``."""
    return lv_cat(ya, ada) + lv_cat(yb, adb)


def intermediate_key(sid: bytes, k: bytes, ya: bytes, ada: bytes, yb: bytes, adb: bytes) -> bytes:
    """ISK = SHA-512(lv_cat(DSI || "_ISK", sid, K) || transcript_ir(Ya, ADa, Yb, ADb))."""
    return hashlib.sha512(lv_cat(DSI_ISK, sid, k) + transcript_ir(ya, ada, yb, adb)).digest()


class CPace:
    """One party's run.  ``share`` (Ya or Yb) goes to the peer; :meth:`finish` takes the
    peer's share and returns ISK, or None if that share is invalid (abort).

    ``ci`` binds the channel (both party identities and the negotiation), ``sid`` the
    session; both must be the same on both ends or the keys differ.
    """

    __slots__ = ("_scalar", "_sid", "initiator", "share")

    def __init__(self, prs: bytes, ci: bytes, sid: bytes, *, initiator: bool, rng: Rng) -> None:
        self.initiator = initiator
        self._sid = sid
        self._scalar = sample_scalar(rng)
        generator = calculate_generator(prs, ci, sid)
        share = scalar_mult_vfy(self._scalar, generator)
        if share is None:  # a zero scalar (probability 2^-252): a local failure
            raise ValueError("CPace: degenerate scalar")
        self.share = share

    def __repr__(self) -> str:
        return f"<CPace {'initiator' if self.initiator else 'responder'}>"

    def finish(self, peer_share: bytes, ad_self: bytes = b"", ad_peer: bytes = b"") -> bytes | None:
        """ISK (64 bytes) from the peer's share, or None when it is invalid.  The scalar
        is dropped either way: a run is finished once."""
        k = scalar_mult_vfy(self._scalar, peer_share)
        self._scalar = b""
        if k is None:
            return None
        if self.initiator:
            return intermediate_key(self._sid, k, self.share, ad_self, peer_share, ad_peer)
        return intermediate_key(self._sid, k, peer_share, ad_peer, self.share, ad_self)
