"""Secure mode's key schedule: every key is HKDF-SHA256 of CPace's ISK, salted with a
transcript hash, under its own label (see docs/secure-mode.md, "Key schedule").

Keys live in ``bytes`` (immutable): "erasing" one means dropping every reference; Python
cannot promise that the memory is overwritten.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

LABEL_PREFIX = b"vt2 "
HANDSHAKE_LABELS = ("settings", "confirm s", "confirm c", "finished s")
"""Keys salted with ``th_hello`` (the transcript up to the server nonce)."""
SESSION_LABELS = ("c2s", "s2c", "session id")
"""Keys salted with ``th_c`` (the transcript up to the end of msg2)."""
SESSION_ID_SIZE = 16
REKEY_LABELS = (b"vt3 rekey c2s", b"vt3 rekey s2c")

Role = Literal["client", "server"]


def hkdf(ikm: bytes, salt: bytes | None, info: bytes, length: int = 32) -> bytes:
    """RFC 5869 HKDF-SHA256 (extract then expand)."""
    return HKDF(algorithm=SHA256(), length=length, salt=salt, info=info).derive(ikm)


def derive(pake_key: bytes, transcript_hash: bytes, label: str) -> bytes:
    """One schedule key: ``HKDF(ikm=pake_key, salt=transcript_hash, info="vt2 "+label)``."""
    length = SESSION_ID_SIZE if label == "session id" else 32
    return hkdf(pake_key, transcript_hash, LABEL_PREFIX + label.encode("ascii"), length)


def rekeyed(shared: bytes, session_id: bytes, epoch: int) -> tuple[bytes, bytes]:
    """Epoch ``epoch``'s ``(c2s, s2c)`` from an in-session X25519 exchange:
    ``HKDF(ikm=shared, salt=session_id | epoch (4, big-endian), info="vt3 rekey c2s" /
    "vt3 rekey s2c")``.  Only fresh Diffie-Hellman output goes in, so a leaked epoch key
    says nothing of the next one; the salt binds the keys to this session and epoch."""
    salt = session_id + epoch.to_bytes(4, "big")
    return tuple(hkdf(shared, salt, label) for label in REKEY_LABELS)  # type: ignore[return-value]


@dataclass(frozen=True)
class HandshakeKeys:
    """Keys that protect the handshake itself (never used on the data path)."""

    settings: bytes = field(repr=False)
    confirm_s: bytes = field(repr=False)
    confirm_c: bytes = field(repr=False)
    finished_s: bytes = field(repr=False)

    @classmethod
    def derive(cls, pake_key: bytes, th_hello: bytes) -> HandshakeKeys:
        s, cs, cc, fs = (derive(pake_key, th_hello, label) for label in HANDSHAKE_LABELS)
        return cls(settings=s, confirm_s=cs, confirm_c=cc, finished_s=fs)


@dataclass(frozen=True)
class SessionKeys:
    """What a finished handshake gives the data path: one key per direction.

    ``session_id`` is derived too (not secret: it names the session in logs and lets
    both ends check they agree).
    """

    suite: str
    c2s: bytes = field(repr=False)
    s2c: bytes = field(repr=False)
    session_id: bytes

    @classmethod
    def derive(cls, suite: str, pake_key: bytes, th_c: bytes) -> SessionKeys:
        c2s, s2c, sid = (derive(pake_key, th_c, label) for label in SESSION_LABELS)
        return cls(suite=suite, c2s=c2s, s2c=s2c, session_id=sid)

    def send_key(self, role: Role) -> bytes:
        return self.c2s if role == "client" else self.s2c

    def recv_key(self, role: Role) -> bytes:
        return self.s2c if role == "client" else self.c2s

    def sealer(self, role: Role, **kwargs: object):  # -> Sealer (import cycle avoided)
        """This end's :class:`~vt_crypto.secure.seal.Sealer` (kwargs go to it)."""
        from vt_crypto.secure.seal import Sealer

        return Sealer(self.send_key(role), self.suite, **kwargs)  # type: ignore[arg-type]

    def opener(self, role: Role, **kwargs: object):  # -> Opener
        """This end's :class:`~vt_crypto.secure.seal.Opener` (kwargs: ``window``, ...)."""
        from vt_crypto.secure.seal import Opener

        return Opener(self.recv_key(role), self.suite, **kwargs)  # type: ignore[arg-type]
