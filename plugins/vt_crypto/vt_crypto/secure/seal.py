"""Secure mode's frame layer: AEAD-sealed frames with counter nonces, replay windows and
rekeying by epochs.  Pure and per session; this is the data path, so it keeps one AEAD
object per key and allocates nothing per frame beyond the bytes it returns.

Wire frame: ``epoch (1) | counter (8, big-endian) | AEAD(type (1) | payload)`` with
nonce ``00000000 | counter`` and the 9-byte header as associated data.  Each direction has
its own key, and each epoch its own key, so a (key, nonce) pair never repeats: the
counter restarts at 0 in every epoch and a sender rekeys long before it could wrap.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable

from cryptography.exceptions import InvalidTag

from vt_crypto.secure.keys import next_epoch_key
from vt_crypto.secure.suites import TAG_SIZE, make_aead

FRAME_DATA = 0
FRAME_ECHO_REQ = 1
FRAME_ECHO_REP = 2
FRAME_CLOSE = 3

HEADER_SIZE = 9
OVERHEAD = HEADER_SIZE + 1 + TAG_SIZE
"""Bytes a sealed frame adds to its payload (26)."""

REKEY_AFTER_BYTES = 1 << 30
REKEY_AFTER_SECONDS = 120.0
REJECT_AFTER_FRAMES = 1 << 48
"""A counter at or beyond this is never valid; a sender rekeys before reaching it."""
DEFAULT_WINDOW = 2048
"""UDP replay window (frames).  Reordering deeper than this is dropped as too old."""
EPOCH_GRACE_SECONDS = 10.0
"""How long the receiver keeps the previous epoch's key for frames still in flight."""
EPOCH_LOOKAHEAD = 2
"""Epochs ahead of the current one a receiver accepts (a whole epoch may be lost on UDP)."""

_HDR = struct.Struct(">BQ")
_CTR = struct.Struct(">Q")
_ZERO4 = bytes(4)
_TYPE_BYTE = [bytes((i,)) for i in range(256)]


class Sealer:
    """Seals this end's outgoing frames.

    Moves to the next epoch (key ``HKDF(old key, "vt rekey")``, counter back to 0) once
    ``rekey_bytes`` plaintext bytes or ``rekey_frames`` frames were sealed, or
    ``rekey_seconds`` passed, whichever comes first; the old key is dropped.
    """

    __slots__ = (
        "_aead",
        "_bytes",
        "_clock",
        "_counter",
        "_epoch_start",
        "_key",
        "_rekey_bytes",
        "_rekey_frames",
        "_rekey_seconds",
        "epoch",
        "suite",
    )

    def __init__(
        self,
        key: bytes,
        suite: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        rekey_bytes: int = REKEY_AFTER_BYTES,
        rekey_seconds: float = REKEY_AFTER_SECONDS,
        rekey_frames: int = REJECT_AFTER_FRAMES,
    ) -> None:
        if not 1 <= rekey_frames <= REJECT_AFTER_FRAMES:
            raise ValueError(f"rekey_frames must be 1..{REJECT_AFTER_FRAMES}")
        self.suite = suite
        self._key = key
        self._aead = make_aead(suite, key)
        self._clock = clock
        self._rekey_bytes = rekey_bytes
        self._rekey_seconds = rekey_seconds
        self._rekey_frames = rekey_frames
        self.epoch = 0
        self._counter = 0
        self._bytes = 0
        self._epoch_start = clock()

    def __repr__(self) -> str:
        return f"<Sealer suite={self.suite} epoch={self.epoch} counter={self._counter}>"

    @property
    def counter(self) -> int:
        """The counter the next frame of this epoch will carry."""
        return self._counter

    def seal(self, ftype: int, payload: bytes, now: float | None = None) -> bytes:
        """The wire frame for one plaintext frame of type ``ftype`` (0..255)."""
        if now is None:
            now = self._clock()
        if (
            self._bytes >= self._rekey_bytes
            or self._counter >= self._rekey_frames
            or now - self._epoch_start >= self._rekey_seconds
        ):
            self._rekey(now)
        ctr = self._counter
        self._counter = ctr + 1
        self._bytes += len(payload) + 1
        header = _HDR.pack(self.epoch & 0xFF, ctr)
        return header + self._aead.encrypt(_ZERO4 + header[1:], _TYPE_BYTE[ftype] + payload, header)

    def rekey(self, now: float | None = None) -> None:
        """Move to the next epoch now (e.g. on request); normally automatic."""
        self._rekey(self._clock() if now is None else now)

    def _rekey(self, now: float) -> None:
        self._key = next_epoch_key(self._key)
        self._aead = make_aead(self.suite, self._key)
        self.epoch += 1
        self._counter = 0
        self._bytes = 0
        self._epoch_start = now


class ReplayWindow:
    """Sliding anti-replay window (RFC 6479 semantics, as WireGuard uses it).

    Bit ``d`` of ``bitmap`` says counter ``last - d`` was accepted.  ``check`` is the
    cheap test done before decrypting; ``update`` marks a counter once it authenticated,
    so forged frames never move the window.
    """

    __slots__ = ("_mask", "bitmap", "last", "size")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("window size must be >= 1")
        self.size = size
        self._mask = (1 << size) - 1
        self.last = -1
        self.bitmap = 0

    def check(self, ctr: int) -> bool:
        if ctr >= REJECT_AFTER_FRAMES:
            return False
        if ctr > self.last:
            return True
        d = self.last - ctr
        return d < self.size and not (self.bitmap >> d) & 1

    def update(self, ctr: int) -> None:
        if ctr > self.last:
            shift = ctr - self.last
            self.bitmap = ((self.bitmap << shift) | 1) & self._mask if shift < self.size else 1
            self.last = ctr
        else:
            self.bitmap |= 1 << (self.last - ctr)


class StrictCounter:
    """TCP: frames arrive in order, so the only valid counter is the next one."""

    __slots__ = ("next",)

    def __init__(self) -> None:
        self.next = 0

    def check(self, ctr: int) -> bool:
        return ctr == self.next and ctr < REJECT_AFTER_FRAMES

    def update(self, ctr: int) -> None:
        self.next = ctr + 1


class _Epoch:
    __slots__ = ("aead", "expires", "key", "number", "window")

    def __init__(self, number: int, key: bytes, suite: str, window: int | None) -> None:
        self.number = number
        self.key = key
        self.aead = make_aead(suite, key)
        self.window: ReplayWindow | StrictCounter = (
            StrictCounter() if window is None else ReplayWindow(window)
        )
        self.expires = 0.0


class Opener:
    """Opens the peer's frames; rejects (returns None) and counts anything not authentic,
    replayed, too old or of an unknown epoch.  Never raises on peer input.

    ``window=None`` is TCP mode: strictly consecutive counters, only the next epoch
    (starting at counter 0), no grace for the old key.  Otherwise (UDP) each epoch has
    a replay window of ``window`` frames, epochs up to ``EPOCH_LOOKAHEAD`` ahead are
    accepted, and the previous epoch stays valid for ``grace`` seconds.
    """

    __slots__ = (
        "_ahead",
        "_cur",
        "_grace",
        "_prev",
        "_suite",
        "_window",
        "accepted",
        "rejected",
        "replayed",
    )

    def __init__(
        self,
        key: bytes,
        suite: str,
        *,
        window: int | None = DEFAULT_WINDOW,
        grace: float = EPOCH_GRACE_SECONDS,
    ) -> None:
        self._suite = suite
        self._window = window
        self._grace = 0.0 if window is None else grace
        self._cur = _Epoch(0, key, suite, window)
        self._prev: _Epoch | None = None
        self._ahead: list[_Epoch] = []
        self._fill_ahead()
        self.accepted = 0
        self.rejected = 0
        """Every frame returned as None (includes ``replayed``)."""
        self.replayed = 0
        """Duplicates, frames too old for the window, counters out of order on TCP."""

    def __repr__(self) -> str:
        return (
            f"<Opener suite={self._suite} epoch={self._cur.number} accepted={self.accepted}"
            f" rejected={self.rejected} replayed={self.replayed}>"
        )

    @property
    def epoch(self) -> int:
        return self._cur.number

    def open(self, frame: bytes, now: float = 0.0) -> tuple[int, bytes] | None:
        """``(type, payload)`` of an authentic fresh frame, else None (counted).

        ``now`` (monotonic seconds) only matters for the previous epoch's grace period.
        """
        if len(frame) < OVERHEAD:
            self.rejected += 1
            return None
        ep = self._find(frame[0], now)
        if ep is None:
            self.rejected += 1
            return None
        (ctr,) = _CTR.unpack_from(frame, 1)
        window = ep.window
        if not window.check(ctr):
            self.rejected += 1
            self.replayed += 1
            return None
        try:
            plain = ep.aead.decrypt(
                _ZERO4 + frame[1:HEADER_SIZE], frame[HEADER_SIZE:], frame[:HEADER_SIZE]
            )
        except InvalidTag:
            self.rejected += 1
            return None
        window.update(ctr)
        if ep is not self._cur and ep is not self._prev:
            self._advance(ep, now)
        self.accepted += 1
        return plain[0], plain[1:]

    def _find(self, epoch_byte: int, now: float) -> _Epoch | None:
        cur = self._cur
        if epoch_byte == cur.number & 0xFF:
            return cur
        for ep in self._ahead:
            if epoch_byte == ep.number & 0xFF:
                return ep
        prev = self._prev
        if prev is not None and epoch_byte == prev.number & 0xFF:
            if now < prev.expires:
                return prev
            self._prev = None  # grace over: drop the old key
        return None

    def _advance(self, ep: _Epoch, now: float) -> None:
        i = self._ahead.index(ep)
        before = self._cur if i == 0 else self._ahead[i - 1]
        if self._grace > 0:
            before.expires = now + self._grace
            self._prev = before
        else:
            self._prev = None
        self._cur = ep
        del self._ahead[: i + 1]
        self._fill_ahead()

    def _fill_ahead(self) -> None:
        depth = 1 if self._window is None else EPOCH_LOOKAHEAD
        last = self._ahead[-1] if self._ahead else self._cur
        while len(self._ahead) < depth:
            last = _Epoch(last.number + 1, next_epoch_key(last.key), self._suite, self._window)
            self._ahead.append(last)
