"""Re-exported from :mod:`vt_api.compression` (part of the plugin contract) for existing
imports."""

from vt_api.compression import (  # noqa: F401
    MARK_PACKED,
    MARK_RAW,
    MAX_SKIP,
    MIN_JUDGED,
    PACKED,
    RAW,
    AdaptiveSkip,
)
