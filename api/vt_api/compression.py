"""What compression plugins share on the vt-native path (never on the vtun wire).

Most traffic today is already compressed or encrypted (TLS, media, archives); pushing it
through deflate or LZO costs CPU for nothing.  Between two vt ends that negotiated native
features (``LinkSettings.options["native"]``, over TCP and UDP), a compression module may
send a frame as is, behind a one-byte marker, and stop trying for a while when frames do
not shrink -- OpenVPN's "adaptive" compression, in frames instead of seconds.  vtund's wire has no room
for a marker, so ``vtmode no`` and vtund peers get every frame compressed, as vtund does.
"""

from __future__ import annotations

RAW = 0
"""Marker byte: the frame's payload follows unchanged."""
PACKED = 1
"""Marker byte: the frame's payload follows compressed."""
MARK_RAW = bytes([RAW])
MARK_PACKED = bytes([PACKED])

MAX_SKIP = 64
"""Most frames sent raw in a row before compression is tried again."""
MIN_JUDGED = 128
"""Frames shorter than this (ACKs, keep-alives) never change the decision."""


class AdaptiveSkip:
    """Decides, frame by frame, whether compression is worth trying.

    After a frame that did not shrink by at least 1/16, the next frames go out raw: 1,
    then 2, 4, ... up to :data:`MAX_SKIP` while tries keep failing; a frame that shrinks
    resets it.  On incompressible traffic that is one try in 65 frames.  Short frames
    rarely shrink whatever the traffic, so they do not count.
    """

    def __init__(self, max_skip: int = MAX_SKIP) -> None:
        self.max_skip = max_skip
        self._backoff = 0
        self._left = 0
        self.raw_frames = 0
        """Frames sent without trying (for counters and tests)."""

    def should_try(self) -> bool:
        if self._left:
            self._left -= 1
            self.raw_frames += 1
            return False
        return True

    def tried(self, size: int, packed: int) -> bool:
        """Record one try; True when the compressed frame is worth sending."""
        if size < MIN_JUDGED:
            return packed < size
        if packed <= size - (size >> 4):
            self._backoff = 0
            return True
        self._backoff = min(max(1, self._backoff * 2), self.max_skip)
        self._left = self._backoff
        return False
