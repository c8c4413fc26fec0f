"""vtund's LZO frame module (``lfd_lzo.c``): one raw LZO1X block per frame, stateless.

Wire format (spec §5.2): no header, no length prefix; the decoder learns the length from
the stream.  vtund compresses with ``lzo1x_999`` at level 9 and ``lzo1x_1_15`` otherwise.
python-lzo offers ``lzo1x_1`` (level 1) and ``lzo1x_999`` (any other level), not
``lzo1x_1_15``, so levels 1-8 use ``lzo1x_1``: a different byte stream of the same LZO1X
format, which any LZO1X decompressor (vtund's included) reads.  Interoperability holds;
byte equality with vtund's output at levels 1-8 does not.

Decoding uses python-lzo's ``lzo1x_decompress_safe`` into a buffer of ``max_frame`` bytes,
so a frame that would expand further is refused without growing memory.  Bad frames are
dropped and counted; since frames are independent, the next good one decodes.

Between two vt ends with native framing (``native=True``) every frame starts with a
marker byte (:mod:`vtcore.compression`): a frame that does not shrink goes out raw, and
the compressor rests for a while on traffic that does not compress.
"""

from __future__ import annotations

import lzo
from vt_api.compression import MARK_PACKED, MARK_RAW, PACKED, RAW, AdaptiveSkip

DEFAULT_MAX_FRAME = 2048 + 100
"""vtund's frame buffer: the largest payload a decoded frame may have."""


def lzo_level(n: int) -> int:
    """python-lzo level for a vtund level: 9 -> lzo1x_999, anything else -> lzo1x_1."""
    return 9 if n == 9 else 1


class LzoModule:
    """Compresses each frame on its own.  Never raises on network input."""

    def __init__(
        self, level: int = 1, max_frame: int = DEFAULT_MAX_FRAME, *, native: bool = False
    ) -> None:
        self.level = level
        self.native = native
        self.adaptive = AdaptiveSkip() if native else None
        """The native path's skip policy (``None`` on the vtun wire)."""
        self._lzo_level = lzo_level(level)
        self.max_frame = max_frame
        self.dropped = 0
        """Frames dropped on decode (corrupt, truncated, or expanding past ``max_frame``)."""

    def encode(self, frame: bytes) -> bytes | None:
        adaptive = self.adaptive
        if adaptive is None:
            return lzo.compress(frame, self._lzo_level, False)
        if not adaptive.should_try():
            return MARK_RAW + frame
        packed = lzo.compress(frame, self._lzo_level, False)
        # Frames are independent: a try that did not pay goes out raw.
        if adaptive.tried(len(frame), len(packed)):
            return MARK_PACKED + packed
        return MARK_RAW + frame

    def decode(self, frame: bytes) -> bytes | None:
        if self.native and frame:
            mark = frame[0]
            frame = frame[1:]
            if mark == RAW:
                if 0 < len(frame) <= self.max_frame:
                    return frame
                self.dropped += 1
                return None
            if mark != PACKED:
                self.dropped += 1
                return None
        if not frame:
            # A valid LZO1X block is never empty (even empty input gives the 3-byte EOF).
            self.dropped += 1
            return None
        try:
            return lzo.decompress(frame, False, self.max_frame)
        except lzo.error:
            self.dropped += 1
            return None
