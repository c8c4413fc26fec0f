"""vtund's zlib frame module (``lfd_zlib.c``), wire-compatible, with bounded decoding.

Wire format (spec §5.1): one deflate stream per direction for the whole session, zlib
wrapper (``78 xx`` at the start of the first frame only), window 15, memLevel 8.  Each
frame is ``compress(packet) + flush(Z_SYNC_FLUSH)``: it ends with ``00 00 ff ff`` and the
next frame starts on a fresh deflate block.

The engine is zlib-ng (``zlib_ng``): the same deflate format, compressed 2-4x faster
than stock zlib (which vtund links).  Its frames differ byte for byte from stock zlib's
at the same level (level 1 trades a few percent of ratio for speed) and any inflater
reads them; ``engine=zlib`` gives vtund's exact bytes (the known-answer tests use it).

Between two vt ends with native framing (``native=True``) every frame starts with a
marker byte (:mod:`vtcore.compression`): frames that do not shrink make the deflater
rest for a while and go out raw, outside the deflate stream on both ends.

Where vt differs from vtund, on bad input only:

* vtund grows its buffer without limit; vt inflates at most ``max_frame + 1`` bytes at a
  time.  A frame that inflates beyond ``max_frame`` is dropped, and the rest of it is
  inflated in ``max_frame``-sized pieces and thrown away so the stream stays in step with
  the peer (memory stays bounded; work is capped at :data:`DRAIN_LIMIT` bytes, past which
  the stream is treated as broken).
* A frame that does not end with ``00 00 ff ff`` is treated as an inflate error (vtund
  would deliver the partial output of a truncated frame and fail later).
* An inflate error kills a vtund session.  vt drops the frame, counts it and marks the
  module ``broken``; from then on every frame is dropped (and counted) without inflating.
  A lost or corrupt frame cannot be stepped over: later frames refer back up to 32 KiB
  into the history the peer's deflater saw, and a fresh inflater started at the next
  frame boundary rejects nearly every frame of real traffic (tried: with IP-like
  packets not one of 300 later frames decoded).  The session goes on; the runtime may
  read ``broken`` (and ``dropped``) to end it, as vtund would.
* Over UDP a lost datagram is not detected: later frames inflate against the wrong history
  and may yield garbage without any error (vtund has the same flaw).  ``warning`` holds a
  line the runtime can log once for such sessions.
"""

from __future__ import annotations

import zlib
from types import ModuleType

import structlog
from vt_api.compression import MARK_PACKED, MARK_RAW, PACKED, RAW, AdaptiveSkip
from zlib_ng import zlib_ng

DEFAULT_MAX_FRAME = 2048 + 100
"""vtund's frame buffer: the largest payload a decoded frame may have."""

SYNC_MARKER = b"\x00\x00\xff\xff"
"""The empty stored block ``Z_SYNC_FLUSH`` appends: the last 4 bytes of every frame."""

DRAIN_LIMIT = 1 << 20
"""Most bytes inflated (and discarded) from one oversized frame before giving up on it."""

log = structlog.get_logger()


def _level(n: int) -> int:
    """vtund maps level 0 to 1; anything outside 1..9 is clamped (zlib refuses it)."""
    return min(max(n, 1), 9)


class ZlibModule:
    """One session's deflate and inflate streams.  Never raises on network input."""

    def __init__(
        self,
        level: int = 1,
        max_frame: int = DEFAULT_MAX_FRAME,
        *,
        native: bool = False,
        engine: ModuleType = zlib_ng,
    ) -> None:
        self.level = _level(level)
        self.max_frame = max_frame
        self._engine = engine
        self._error: type[Exception] = engine.error
        self._sync = engine.Z_SYNC_FLUSH
        self._deflate = engine.compressobj(self.level)
        self._inflate = engine.decompressobj()
        self.native = native
        self.adaptive = AdaptiveSkip() if native else None
        """The native path's skip policy (``None`` on the vtun wire)."""
        self.dropped = 0
        """Frames dropped on decode (corrupt, oversized, or while out of step)."""
        self.errors = 0
        """Inflate errors seen (0 or 1: the first one breaks the stream)."""
        self.broken = False
        """True once the inflate stream is out of step with the peer (for good)."""

    # ------------------------------------------------------------------ device -> network

    def encode(self, frame: bytes) -> bytes | None:
        adaptive = self.adaptive
        if adaptive is None:
            return self._deflate.compress(frame) + self._deflate.flush(self._sync)
        if not adaptive.should_try():
            return MARK_RAW + frame
        # Once deflated, the frame is in the deflater's history: it must go out packed
        # (the peer's inflater has to see it), even when it came out no smaller.
        packed = self._deflate.compress(frame) + self._deflate.flush(self._sync)
        adaptive.tried(len(frame), len(packed))
        return MARK_PACKED + packed

    # ------------------------------------------------------------------ network -> device

    def decode(self, frame: bytes) -> bytes | None:
        if self.broken:
            return self._drop()
        if self.native:
            if not frame:
                return self._drop()
            mark = frame[0]
            frame = frame[1:]
            if mark == RAW:
                return frame if 0 < len(frame) <= self.max_frame else self._drop()
            if mark != PACKED:
                return self._break(ValueError(f"unknown frame marker {mark}"))
        inflater = self._inflate
        try:
            if not frame.endswith(SYNC_MARKER):
                # Every vtund frame ends with the sync flush; anything else is truncated
                # or forged, and inflating it would leave the stream mid-block.
                raise self._error("frame does not end with the sync marker")
            out = inflater.decompress(frame, self.max_frame + 1)
            if len(out) > self.max_frame:
                self._drain(inflater)
                return self._drop()
            if inflater.eof:
                # The peer ended its stream; vtund treats Z_STREAM_END as an error too.
                raise self._error("stream end inside a session")
        except self._error as exc:
            return self._break(exc)
        return out

    def _drain(self, inflater: zlib._Decompress) -> None:
        """Inflate and discard the rest of an oversized frame, in bounded pieces."""
        total = 0
        tail = inflater.unconsumed_tail
        while total <= DRAIN_LIMIT:
            piece = inflater.decompress(tail, self.max_frame)
            total += len(piece)
            tail = inflater.unconsumed_tail
            if not tail and len(piece) < self.max_frame:
                return
        raise self._error(f"frame inflates beyond {DRAIN_LIMIT} bytes")

    def _drop(self) -> bytes | None:
        """Count a dropped frame; the None that ``decode`` returns for it."""
        self.dropped += 1
        return None

    def _break(self, exc: Exception) -> bytes | None:
        self.errors += 1
        self.broken = True
        # Logged once per session: afterwards frames are dropped silently (counted).
        log.warning("zlib inflate error, rest of the stream dropped", error=str(exc))
        return self._drop()
