"""The zstd frame module: every frame compressed on its own (UDP loses and reorders
frames, so no state may span two of them), behind vt_api's one-byte marker.

zstd has no letter in vtund's ``OK FLAGS``: vt agrees on it by name between two vt ends
that both have this plugin and refuses any other peer, so the marker format is always
safe here (vtund never sees it).
"""

from __future__ import annotations

import zstandard
from vt_api.compression import MARK_PACKED, MARK_RAW, PACKED, RAW, AdaptiveSkip

DEFAULT_MAX_FRAME = 65536
"""The decoded-frame limit when the core sets no ``LinkSettings.max_frame``."""


class ZstdModule:
    """One session's zstd compressor and decompressor (``create`` makes one per session)."""

    def __init__(self, level: int, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._packer = zstandard.ZstdCompressor(level=level)
        self._unpacker = zstandard.ZstdDecompressor()
        self.adaptive = AdaptiveSkip()
        self.dropped = 0
        """Frames from the network that were not ours: bad marker, corrupt, too big."""

    def encode(self, frame: bytes) -> bytes | None:
        if not self.adaptive.should_try():
            return MARK_RAW + frame
        packed = self._packer.compress(frame)
        if not self.adaptive.tried(len(frame), len(packed)):
            return MARK_RAW + frame
        return MARK_PACKED + packed

    def decode(self, frame: bytes) -> bytes | None:
        if not frame:
            return self._drop()
        mark, body = frame[0], frame[1:]
        if mark == RAW:
            return body if len(body) <= self.max_frame else self._drop()
        if mark != PACKED:
            return self._drop()
        try:
            # The header states the size; check it before zstd allocates that much.
            size = zstandard.frame_content_size(body)
            if not 0 <= size <= self.max_frame:
                return self._drop()
            out = self._unpacker.decompress(body)
        except zstandard.ZstdError:
            return self._drop()
        return out if len(out) == size else self._drop()

    def _drop(self) -> bytes | None:
        """Count a frame that was not ours; None drops it."""
        self.dropped += 1
        return None
