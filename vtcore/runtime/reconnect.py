"""How long a persistent client waits before it tries again: pure, the randomness passed in.

A fixed 1, 2, 4 ... 30 s sequence brings every client of a restarted server back in the
same second, and a client with a wrong password back every 30 s for ever.  Delays double
up to a ceiling, and each wait is drawn from the upper half of its delay (jitter), so
clients spread out but none waits longer than the ceiling."""

from __future__ import annotations

FIRST = 1.0
"""The first delay, and the delay after a session that lasted."""
MAX = 30.0
"""Ceiling after a failed connection or session."""
AUTH_MAX = 300.0
"""Ceiling after an authentication failure: a password does not fix itself, and the
server's own back-off for the host reaches 5 minutes too (vtcore/admission.py)."""


def grown(delay: float, ceiling: float) -> float:
    """The delay after ``delay``: doubled, never above ``ceiling`` (nor below FIRST)."""
    return max(FIRST, min(delay * 2, ceiling))


def jittered(delay: float, unit: float) -> float:
    """The wait for ``delay``: somewhere in its upper half, ``unit`` in [0, 1) from the
    caller's random source.  Bounded by ``delay`` whatever ``unit`` is."""
    unit = min(max(unit, 0.0), 1.0)
    return delay * (0.5 + unit / 2)
