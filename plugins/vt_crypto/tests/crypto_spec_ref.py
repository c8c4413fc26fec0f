"""An independent, deliberately plain re-statement of spec §5.3/§5.4 for the known-answer
tests.  It shares no code with ``vt_crypto``: only ``hashlib`` and ``cryptography``
primitives, written straight from the spec text.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.decrepit.ciphers.algorithms import Blowfish
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

try:
    from cryptography.hazmat.decrepit.ciphers.modes import CFB, OFB
except ImportError:  # pragma: no cover
    from cryptography.hazmat.primitives.ciphers.modes import CFB, OFB


class ScriptedRng:
    """Hands out a fixed byte string in order, like ``os.urandom`` would hand out noise."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def __call__(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        assert len(out) == n, "scripted randomness exhausted"
        self.pos += n
        return out


def script(n: int = 512) -> bytes:
    """Deterministic 'random' bytes: SHA-256 counter stream."""
    out = b""
    i = 0
    while len(out) < n:
        out += hashlib.sha256(b"vt-kat-%d" % i).digest()
        i += 1
    return out[:n]


# name -> (algorithm class, key bytes, block size, mode)
TABLE = {
    "blowfish128ecb": (Blowfish, 16, 8, "ecb"),
    "blowfish256cbc": (Blowfish, 32, 8, "cbc"),
    "blowfish128cfb": (Blowfish, 16, 8, "cfb"),
    "aes128cbc": (algorithms.AES, 16, 16, "cbc"),
    "aes128ofb": (algorithms.AES, 16, 16, "ofb"),
    "aes256cfb": (algorithms.AES, 32, 16, "cfb"),
    "aes256ecb": (algorithms.AES, 32, 16, "ecb"),
}


def key(password: bytes, size: int) -> bytes:
    if size == 16:
        return hashlib.md5(password).digest()
    h = len(password) // 2
    return hashlib.md5(password[:h]).digest() + hashlib.md5(password[h:]).digest()


def pad(n: int, bs: int, rng: ScriptedRng) -> bytes:
    p = bs - (n % bs)
    if p < bs:
        return bytes([p] * p)
    return rng(bs - 1) + bytes([bs])


def encrypt_frames(name: str, password: bytes, packets: list[bytes], rng: ScriptedRng):
    """Frames a fresh vtund encoder would emit for ``packets`` (spec §5.3)."""
    alg, ksize, bs, mode = TABLE[name]
    k = key(password, ksize)
    ecb = Cipher(alg(k), modes.ECB()).encryptor()
    if mode == "ecb":
        return [ecb.update(p + pad(len(p), bs, rng)) for p in packets]
    seq = int.from_bytes(rng(4), "big")  # random start
    iv = rng(bs)
    filler = rng(bs - 4)
    ctx = Cipher(alg(k), {"cbc": modes.CBC, "cfb": CFB, "ofb": OFB}[mode](iv)).encryptor()
    frames = []
    for i, p in enumerate(packets):
        sideband = ecb.update(b"ivec" + iv + filler) if i == 0 else b""
        block = b"seq#" + ((seq + i) % 2**32).to_bytes(4, "big") + bytes(bs - 8)
        frames.append(sideband + ctx.update(block + p + pad(len(p), bs, rng)))
    return frames


def legacy_encrypt(password: bytes, packet: bytes) -> bytes:
    """spec §5.4: pad count at the front, then zeros, then the data; Blowfish-ECB."""
    p = 8 - len(packet) % 8
    plain = bytes([p]) + bytes(p - 1) + packet
    return Cipher(Blowfish(key(password, 16)), modes.ECB()).encryptor().update(plain)


class VtundDecoder:
    """vtund's decoder (recv_msg, then recv_ib_mesg, then the pad check), for IV modes."""

    def __init__(self, name: str, password: bytes) -> None:
        self.alg, ksize, self.bs, self.mode = TABLE[name]
        self.k = key(password, ksize)
        self.synced = False
        self.ctx = None
        self.rsyn_seen = 0

    def decode(self, frame: bytes) -> bytes | None:
        bs = self.bs
        if not self.synced:
            head = Cipher(self.alg(self.k), modes.ECB()).decryptor().update(frame[: 2 * bs])
            if head[:4] != b"ivec":
                return None
            mode = {"cbc": modes.CBC, "cfb": CFB, "ofb": OFB}[self.mode](head[4 : 4 + bs])
            self.ctx = Cipher(self.alg(self.k), mode).decryptor()
            self.synced = True
            frame = frame[2 * bs :]
        plain = self.ctx.update(frame)
        if plain[:4] == b"rsyn":
            self.rsyn_seen += 1
        elif plain[:4] != b"seq#":
            self.synced = False
            return None
        p = plain[-1]
        return plain[bs:-p] if 1 <= p <= bs else None
