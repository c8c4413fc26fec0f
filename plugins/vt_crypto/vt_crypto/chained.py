"""vtund's IV-mode ciphers: CBC, CFB, OFB (codes 2-4, 6-8, 10-12, 14-16; spec §5.3).

Wire format of one frame payload::

    [ECB_k("ivec" | IV | random[bs-4])]          only when (re)initialising, 2*bs bytes
    MODE_k,ctx(TAG | BE32 seq | zero[bs-8] | plaintext | pad)

``TAG`` is ``seq#`` normally and ``rsyn`` to ask the peer for a fresh IV.  The mode
context runs continuously across frames, one per direction, exactly like vtund's single
``EVP_CIPHER_CTX``; a ``cryptography`` encryptor/decryptor keeps that state between
``update()`` calls, so the per-frame cost is one ``update()``.

State (vtund's names in brackets):

* encoder: ``need_iv`` [INIT] and ``send_rsyn`` [REQ_INIT]; neither set is [SEQUENCE].
  vtund has one state variable, so a pending ``rsyn`` and a pending ``ivec`` overwrite
  each other; here both can be pending and one frame then carries ``ivec`` + ``rsyn``,
  which vtund's decoder handles (it checks the ``ivec`` header, then the tag).
* decoder: ``synced`` [SEQUENCE] or not [INIT].

Resync (vtund): a decoder that cannot read a frame drops it and asks for a new IV by
tagging its next outgoing frame ``rsyn``; the peer answers with an ``ivec`` header on its
next frame.  After 10 unreadable frames, or 2 s since the first, the local encoder also
re-initialises.  vtund pushes a 1-byte dummy packet through the chain so the ``rsyn``
leaves soon; vt does not: the request rides on the next outgoing frame.  Deliberately so:
the dummy byte is delivered to the peer's device, and a vtund peer writing one byte to a
tun device gets EINVAL (unless the byte happens to start with nibble 4 or 6), which vtund
treats as fatal for the session.  (Observed against Debian vtund: its dummy frames
decode to one byte such as ``00``.)  :attr:`ChainedCodec.resync_pending` reports a
pending request.

Compatible robustness additions, decoder side only (never change what the peer sees):

* An unreadable frame in SEQUENCE whose first 2*bs bytes are a valid ``ivec`` header is
  taken as the peer's re-initialisation at once (vtund drops it and needs another round).
* In INIT, a non-``ivec`` frame is still tried with the old context: CBC and CFB resync
  by themselves one frame after a loss, so UDP loss costs one frame instead of a round
  trip.  Only a correct ``seq#``/``rsyn`` tag is accepted.
* Receiving a valid ``ivec`` cancels an ``rsyn`` not sent yet (it would only force the
  peer into another, pointless re-initialisation).

64-bit Blowfish quirk: vtund writes the counter as a C ``unsigned long`` at offset 4; on
64-bit hosts that is 8 bytes, which for Blowfish (bs = 8) zeroes the first 4 plaintext
bytes of every frame.  vt never does that: it writes the 4-byte counter and keeps the
plaintext intact, so vt<->vt and vt->vtund are correct.  Frames *from* a 64-bit vtund
arrive with those 4 bytes already zeroed at the sender; no receiver can restore them.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, modes

from vt_crypto.ciphers import MAX_FRAME, CipherSpec, derive_key, padding_table

IVEC = b"ivec"
SEQ = b"seq#"
RSYN = b"rsyn"
MAX_GIBBERISH = 10
"""Unreadable frames in INIT before the local encoder re-initialises too (vtund)."""
MAX_GIBBERISH_TIME = 2.0
"""... or seconds since the first of them (vtund)."""


class ChainedCodec:
    """One session's CBC/CFB/OFB encoder and decoder (both directions of one end).

    ``rng(n)`` supplies random bytes, called in this order: 4 bytes (sequence start) at
    construction; ``2*bs - 4`` bytes (IV, then the header's filler) when a frame
    carries an ``ivec`` header; ``bs - 1`` bytes for a padding block when a frame's
    length is a multiple of ``bs``.  ``clock()`` gives seconds for the 2-second rule.
    """

    def __init__(
        self,
        spec: CipherSpec,
        password: bytes,
        *,
        rng: Callable[[int], bytes] = os.urandom,
        clock: Callable[[], float] = time.monotonic,
        max_frame: int = MAX_FRAME,
    ) -> None:
        bs = spec.block_size
        self.max_frame = max_frame
        self.spec = spec
        self._bs = bs
        self._cipher_alg = spec.algorithm(derive_key(password, spec.key_size))
        sideband = Cipher(self._cipher_alg, modes.ECB())
        self._sb_enc = sideband.encryptor()
        self._sb_dec = sideband.decryptor()
        self._enc: CipherContext | None = None
        self._dec: CipherContext | None = None
        self._head = struct.Struct(f">4sI{bs - 8}x")
        self._pads = padding_table(bs)
        self._rng = rng
        self._clock = clock
        self._seq = int.from_bytes(rng(4), "big")
        self.need_iv = True
        self.send_rsyn = False
        self.synced = False
        self._gibberish = 0
        self._gib_start = 0.0
        self.dropped = 0
        """Frames dropped as unreadable (bad length, header, tag or padding)."""
        self.resyncs = 0
        """``ivec`` headers accepted from the peer (the first one included)."""
        self.rsyn_received = 0
        """Re-initialisation requests from the peer."""

    # ------------------------------------------------------------------ state views

    @property
    def encoder_state(self) -> str:
        """vtund's name for the encoder state (INIT wins, as the header goes first)."""
        if self.need_iv:
            return "INIT"
        return "REQ_INIT" if self.send_rsyn else "SEQUENCE"

    @property
    def decoder_state(self) -> str:
        return "SEQUENCE" if self.synced else "INIT"

    @property
    def resync_pending(self) -> bool:
        """The next outgoing frame carries an ``ivec`` header or an ``rsyn`` tag."""
        return self.need_iv or self.send_rsyn

    # ------------------------------------------------------------------ encode

    def encode(self, frame: bytes) -> bytes:
        bs = self._bs
        header = b""
        if self.need_iv or self._enc is None:
            fresh = self._rng(2 * bs - 4)  # IV (bs bytes) then the header's filler
            self._enc = Cipher(self._cipher_alg, self.spec.chaining_mode(fresh[:bs])).encryptor()
            header = self._sb_enc.update(IVEC + fresh)
            self.need_iv = False
        tag = SEQ
        if self.send_rsyn:
            tag = RSYN
            self.send_rsyn = False
        pad = bs - len(frame) % bs
        tail = self._pads[pad] if pad < bs else self._rng(bs - 1) + bytes([bs])
        body = self._enc.update(self._head.pack(tag, self._seq) + frame + tail)
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        return header + body if header else body

    # ------------------------------------------------------------------ decode

    def decode(self, frame: bytes) -> bytes | None:
        n = len(frame)
        bs = self._bs
        if n > self.max_frame:
            self.dropped += 1
            return None
        if self.synced:
            if n < bs or n % bs:
                self.dropped += 1
                return None
            plain = self._dec.update(frame)  # type: ignore[union-attr]
            tag = plain[:4]
            if tag != SEQ and tag != RSYN:
                return self._out_of_sync(frame)
            return self._finish(plain, tag)
        return self._decode_init(frame)

    def _decode_init(self, frame: bytes) -> bytes | None:
        """Decoder INIT: expect an ``ivec`` header; otherwise count gibberish."""
        bs = self._bs
        n = len(frame)
        if n >= 2 * bs and n % bs == 0:
            head = self._sb_dec.update(frame[: 2 * bs])
            if head[:4] == IVEC:
                return self._accept_ivec(head, frame)
        # Not a header.  CBC/CFB contexts resync by themselves after a lost frame: try it.
        if self._dec is not None and n >= bs and n % bs == 0:
            plain = self._dec.update(frame)
            tag = plain[:4]
            if tag == SEQ or tag == RSYN:
                self.synced = True
                self.send_rsyn = False  # recovered without the peer's help
                self._gibberish = 0
                return self._finish(plain, tag)
        return self._gibberish_frame()

    def _accept_ivec(self, head: bytes, frame: bytes) -> bytes | None:
        bs = self._bs
        self._dec = Cipher(self._cipher_alg, self.spec.chaining_mode(head[4 : 4 + bs])).decryptor()
        self.synced = True
        self.send_rsyn = False
        self._gibberish = 0
        self.resyncs += 1
        rest = frame[2 * bs :]
        if not rest:
            return None
        plain = self._dec.update(rest)
        tag = plain[:4]
        if tag != SEQ and tag != RSYN:
            self.synced = False
            self.send_rsyn = True
            self.dropped += 1
            return None
        return self._finish(plain, tag)

    def _finish(self, plain: bytes, tag: bytes) -> bytes | None:
        """Act on the tag, check and strip the tag block and the padding."""
        if tag == RSYN:
            self.need_iv = True
            self.rsyn_received += 1
        bs = self._bs
        n = len(plain)
        pad = plain[-1]
        if not 1 <= pad <= bs:
            self.dropped += 1
            return None
        return plain[bs : n - pad] or None

    def _out_of_sync(self, frame: bytes) -> bytes | None:
        """Decoder SEQUENCE read a bad tag: maybe a fresh ``ivec``, else ask for one."""
        bs = self._bs
        n = len(frame)
        if n >= 3 * bs:
            head = self._sb_dec.update(frame[: 2 * bs])
            if head[:4] == IVEC:
                return self._accept_ivec(head, frame)
        self.dropped += 1
        self.synced = False
        self.send_rsyn = True
        return None

    def _gibberish_frame(self) -> bytes | None:
        """vtund's gibberish rule: ask for a new IV; re-init our own after 10 or 2 s."""
        self.dropped += 1
        now = self._clock()
        self._gibberish += 1
        if self._gibberish == 1:
            self._gib_start = now
        # vtund asks only on the 1st.  Asking on every one survives a lost rsyn or ivec
        # frame; a surplus request costs one more ivec header, which we take at once.
        self.send_rsyn = True
        if self._gibberish >= MAX_GIBBERISH or now - self._gib_start >= MAX_GIBBERISH_TIME:
            self._gibberish = 0
            self.need_iv = True
        return None
