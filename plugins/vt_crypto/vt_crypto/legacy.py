"""``oldblowfish128ecb`` (code 999, flag ``E``; spec §5.4): VTun 2.x "encrypt yes".

Blowfish-ECB with ``MD5(password)``, padding at the *front*: the first byte of the
plaintext is the pad count ``p`` (1..8), followed by ``p - 1`` zeros, then the data.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, modes

from vt_crypto.ciphers import MAX_FRAME, CipherSpec, derive_key


class LegacyCodec:
    """Stateless per frame; Blowfish ECB contexts made once per session."""

    def __init__(self, spec: CipherSpec, password: bytes, *, max_frame: int = MAX_FRAME) -> None:
        cipher = Cipher(spec.algorithm(derive_key(password, 16)), modes.ECB())
        self.spec = spec
        self._enc = cipher.encryptor()
        self._dec = cipher.decryptor()
        self._heads = [b""] + [bytes([p]) + bytes(p - 1) for p in range(1, 9)]
        self.max_frame = max_frame
        self.dropped = 0

    def encode(self, frame: bytes) -> bytes:
        return self._enc.update(self._heads[8 - len(frame) % 8] + frame)

    def decode(self, frame: bytes) -> bytes | None:
        n = len(frame)
        if n == 0 or n % 8 or n > self.max_frame:
            self.dropped += 1
            return None
        plain = self._dec.update(frame)
        pad = plain[0]
        if not 1 <= pad <= 8:
            self.dropped += 1
            return None
        return plain[pad:] or None
