"""vt: a vtund-compatible tunnel daemon built from plugins."""

from vt_api import hookimpl

__version__ = "0.1.0"
__all__ = ["__version__", "hookimpl"]
