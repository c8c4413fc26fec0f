"""vtund's ECB ciphers (codes 1, 5, 9, 13; spec §5.3 "ECB modes").

Frame payload = ECB(plaintext || pad): no IV, no sequence block, every frame independent.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers import Cipher, modes

from vt_crypto.ciphers import MAX_FRAME, CipherSpec, derive_key, padding_table


class EcbCodec:
    """Stateless per frame; one encryptor and one decryptor per session, made once."""

    def __init__(
        self,
        spec: CipherSpec,
        password: bytes,
        *,
        rng: Callable[[int], bytes] = os.urandom,
        max_frame: int = MAX_FRAME,
    ) -> None:
        cipher = Cipher(spec.algorithm(derive_key(password, spec.key_size)), modes.ECB())
        self.spec = spec
        self._enc = cipher.encryptor()
        self._dec = cipher.decryptor()
        self._bs = spec.block_size
        self._pads = padding_table(self._bs)
        self._rng = rng
        self.max_frame = max_frame
        self.dropped = 0

    def encode(self, frame: bytes) -> bytes:
        bs = self._bs
        pad = bs - len(frame) % bs
        # pad < bs: pad bytes of value pad; pad == bs: a random block ending in bs.
        tail = self._pads[pad] if pad < bs else self._rng(bs - 1) + bytes([bs])
        return self._enc.update(frame + tail)

    def decode(self, frame: bytes) -> bytes | None:
        n = len(frame)
        bs = self._bs
        if n == 0 or n % bs or n > self.max_frame:
            self.dropped += 1
            return None
        plain = self._dec.update(frame)
        pad = plain[-1]
        if not 1 <= pad <= bs:
            self.dropped += 1
            return None
        return plain[: n - pad] or None
