"""vt-zstd: ``compress zstd:1-19`` between two vt ends (an example third-party plugin)."""

__version__ = "0.1.0"
