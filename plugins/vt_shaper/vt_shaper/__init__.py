"""vt plugin: traffic shaping as vtund's ``speed`` keyword."""

from vt_shaper.bucket import Shaper, vtund_limit

__all__ = ["Shaper", "vtund_limit"]
