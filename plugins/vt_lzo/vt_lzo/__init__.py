"""vt plugin: LZO compression, byte-compatible with vtund (``compress lzo:N``)."""

from vt_lzo.codec import LzoModule

__all__ = ["LzoModule"]
