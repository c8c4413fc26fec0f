"""vt plugin: zlib compression, byte-compatible with vtund (``compress zlib:N``)."""

from vt_zlib.codec import ZlibModule

__all__ = ["ZlibModule"]
