"""Challenge encoding and the challenge/response computation (spec 1.4).

The server sends 16 random bytes, the client returns them encrypted with the shared
password; only the password's owner can produce the answer.  Challenges and responses
are secrets of the session: never log them.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.decrepit.ciphers.algorithms import Blowfish
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from vtcore.protocol.errors import ProtocolError

CHAL_SIZE = 16
_ALPHABET = "abcdefghijklmnop"
_ENCODE = [_ALPHABET[b >> 4] + _ALPHABET[b & 0x0F] for b in range(256)]


def encode_chal(b: bytes) -> str:
    """16 bytes -> ``'<'`` + 32 chars ``a``-``p`` (high nibble first) + ``'>'``."""
    if len(b) != CHAL_SIZE:
        raise ValueError(f"a challenge is {CHAL_SIZE} bytes, got {len(b)}")
    return "<" + "".join(_ENCODE[x] for x in b) + ">"


def decode_chal(text: str) -> bytes:
    """Find ``<...>`` in ``text`` and decode its 32 characters back to 16 bytes.

    Like vtund: starts at the first ``<``, ends at the next ``>`` or at the end of the
    text, anything around it is ignored.  Unlike vtund the characters are range-checked
    (vtund always sends ``a``-``p``, so no real peer is refused by this).
    """
    start = text.find("<")
    if start < 0:
        raise ProtocolError("challenge: no '<' found")
    body = text[start + 1 :].split(">", 1)[0]
    if len(body) != 2 * CHAL_SIZE:
        raise ProtocolError(f"challenge: expected {2 * CHAL_SIZE} characters, got {len(body)}")
    out = bytearray(CHAL_SIZE)
    for i in range(CHAL_SIZE):
        hi = ord(body[2 * i]) - 97
        lo = ord(body[2 * i + 1]) - 97
        if not (0 <= hi < 16 and 0 <= lo < 16):
            raise ProtocolError("challenge: characters outside a-p")
        out[i] = (hi << 4) | lo
    return bytes(out)


def _c_string(password: bytes) -> bytes:
    """vtund hands the password to ``strlen``: it ends at the first NUL."""
    return password.split(b"\0", 1)[0]


def chal_response(chal: bytes, password: bytes, sslauth: bool = True) -> bytes:
    """The 16-byte answer to ``chal``.

    ``sslauth`` (vtund's default): Blowfish-ECB with key MD5(password), each 8-byte
    block on its own.  ``sslauth no`` (Debian patch): XOR with the password repeated.
    """
    if len(chal) != CHAL_SIZE:
        raise ValueError(f"a challenge is {CHAL_SIZE} bytes, got {len(chal)}")
    pwd = _c_string(password)
    if sslauth:
        key = hashlib.md5(pwd).digest()  # noqa: S324 - the protocol's choice, not ours
        enc = Cipher(Blowfish(key), modes.ECB()).encryptor()
        return enc.update(chal) + enc.finalize()
    if not pwd:
        raise ValueError("sslauth no needs a non-empty password")
    return bytes(c ^ pwd[i % len(pwd)] for i, c in enumerate(chal))


def check_response(chal: bytes, resp: bytes, password: bytes, sslauth: bool = True) -> bool:
    """True if ``resp`` answers ``chal`` for ``password`` (constant-time compare).

    Equivalent to vtund's decrypt-and-compare, since Blowfish-ECB is a permutation.
    """
    if len(resp) != CHAL_SIZE:
        return False
    if not sslauth and not _c_string(password):
        return False
    return hmac.compare_digest(chal_response(chal, password, sslauth), resp)
