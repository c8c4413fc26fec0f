"""vtund's cipher table and key derivation (spec §0 "Cipher codes", §5.3 "Key derivation").

Pure data plus two small helpers; the codecs in :mod:`ecb`, :mod:`chained` and
:mod:`legacy` build their ``cryptography`` contexts from a :class:`CipherSpec`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from cryptography.hazmat.decrepit.ciphers.algorithms import Blowfish
from cryptography.hazmat.primitives.ciphers import BlockCipherAlgorithm, algorithms, modes

try:  # cryptography >= 47 moved CFB/OFB to "decrepit"; the old names warn, then go away.
    from cryptography.hazmat.decrepit.ciphers.modes import CFB, OFB
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.modes import CFB, OFB

Family = Literal["blowfish", "aes"]
Mode = Literal["ecb", "cbc", "cfb", "ofb", "legacy"]

LEGACY_CODE = 999
DEFAULT_CODE = 1
"""vtund falls back to Blowfish-128-ECB for any code it does not know."""


@dataclass(frozen=True)
class CipherSpec:
    """One row of vtund's cipher table."""

    code: int
    name: str
    family: Family
    key_size: int
    mode: Mode

    @property
    def block_size(self) -> int:
        return 16 if self.family == "aes" else 8

    @property
    def chained(self) -> bool:
        """CBC/CFB/OFB: carries the ``ivec`` sideband header and ``seq#`` tags."""
        return self.mode in ("cbc", "cfb", "ofb")

    def algorithm(self, key: bytes) -> BlockCipherAlgorithm:
        return algorithms.AES(key) if self.family == "aes" else Blowfish(key)

    def chaining_mode(self, iv: bytes) -> modes.ModeWithInitializationVector:
        """The IV mode context; CFB is full-block (CFB64 Blowfish, CFB128 AES) as in OpenSSL."""
        return _MODES[self.mode](iv)


_MODES: dict[str, Callable[[bytes], modes.ModeWithInitializationVector]] = {
    "cbc": modes.CBC, "cfb": CFB, "ofb": OFB}


def _table() -> dict[int, CipherSpec]:
    rows: dict[int, CipherSpec] = {}
    code = 1
    for family in ("blowfish", "aes"):
        for key_size in (16, 32):
            for mode in ("ecb", "cbc", "cfb", "ofb"):
                name = f"{family}{key_size * 8}{mode}"
                rows[code] = CipherSpec(code, name, family, key_size, mode)  # type: ignore[arg-type]
                code += 1
    rows[LEGACY_CODE] = CipherSpec(LEGACY_CODE, "oldblowfish128ecb", "blowfish", 16, "legacy")
    return rows


CIPHERS: dict[int, CipherSpec] = _table()
"""Code -> spec, codes 1-16 and 999, exactly as vtund numbers them."""

WORDS: dict[str, int] = {"yes": DEFAULT_CODE} | {s.name: s.code for s in CIPHERS.values()}
"""``encrypt`` keyword values and their codes (``yes`` is code 1, as in vtund)."""


def spec_for(code: int) -> CipherSpec:
    """The spec for a negotiated code; unknown codes fall back to Blowfish-128-ECB (vtund)."""
    return CIPHERS.get(code, CIPHERS[DEFAULT_CODE])


def derive_key(password: bytes, size: int) -> bytes:
    """vtund's key: ``MD5(pw)`` for 16 bytes, ``MD5(first half) || MD5(second half)`` for 32.

    vtund measures the password with ``strlen``, so anything from a NUL on is ignored.
    """
    password = password.split(b"\0", 1)[0]
    if size == 16:
        return hashlib.md5(password).digest()
    if size == 32:
        half = len(password) // 2
        return hashlib.md5(password[:half]).digest() + hashlib.md5(password[half:]).digest()
    raise ValueError(f"unsupported key size {size}")


def padding_table(block_size: int) -> list[bytes]:
    """``table[p]`` = the ``p`` pad bytes of value ``p`` for ``1 <= p < block_size``."""
    return [bytes([p]) * p for p in range(block_size)]


MAX_FRAME = 0x0FFF
"""Largest payload a vtun frame header can announce; anything longer is not a frame."""
