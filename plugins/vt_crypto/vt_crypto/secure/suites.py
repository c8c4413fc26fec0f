"""The AEAD suites of secure mode and the choice behind ``encrypt aead``."""

from __future__ import annotations

import functools
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

AES256GCM = "aes256gcm"
CHACHA20POLY1305 = "chacha20poly1305"
SUITES: dict[str, Callable[[bytes], AESGCM | ChaCha20Poly1305]] = {
    AES256GCM: AESGCM,
    CHACHA20POLY1305: ChaCha20Poly1305,
}
"""Suite name -> AEAD class; both take a 32-byte key, a 12-byte nonce, a 16-byte tag."""

KEY_SIZE = 32
TAG_SIZE = 16

AUTO_WORD = "aead"
SECURE_WORDS = frozenset({AUTO_WORD, AES256GCM, CHACHA20POLY1305})
"""The ``encrypt`` words that select secure mode."""


@functools.cache
def cpu_has_aes(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the CPU advertises AES instructions (x86 ``aes`` flag, arm ``aes`` feature).

    Without them AES-GCM runs in constant-time software and ChaCha20-Poly1305 is faster.
    Unreadable or missing cpuinfo counts as "no".
    """
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features") and "aes" in value.split():
                    return True
    except OSError:
        return False
    return False


def choose_suite(word: str, has_aes: bool | None = None) -> str:
    """The suite for an ``encrypt`` word: ``aead`` picks the faster one on this machine."""
    if word == AUTO_WORD:
        if has_aes is None:
            has_aes = cpu_has_aes()
        return AES256GCM if has_aes else CHACHA20POLY1305
    if word in SUITES:
        return word
    raise ValueError(f"not a secure-mode encrypt word: {word!r}")


def make_aead(suite: str, key: bytes) -> AESGCM | ChaCha20Poly1305:
    """The AEAD object for ``suite`` (create once per key, reuse for every frame)."""
    if len(key) != KEY_SIZE:
        raise ValueError(f"secure-mode keys are {KEY_SIZE} bytes")
    try:
        cls = SUITES[suite]
    except KeyError:
        raise ValueError(f"unknown suite {suite!r}") from None
    return cls(key)
