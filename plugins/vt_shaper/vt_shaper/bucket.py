"""Outgoing rate limit for ``speed N``: a token bucket, pure, with time passed in.

vtund (``lfd_shaper.c``) measures the bytes sent since the start of the current second
and stops reading the device while that average exceeds ``kbps / 8 * 1024 + 400`` bytes/s
(integer division first), polling every microsecond.  Its rate swings within each second
and it burns CPU while blocked.  vt keeps vtund's limit and what it counts (the encoded
payload of each frame, without the 2-byte frame header, after compression and
encryption) but paces with a token bucket, and tells the caller how long to pause
instead of polling.

Burst: the bucket holds ``max(BURST_SECONDS * rate, BURST_FRAMES * 2148)`` bytes, i.e.
10 ms of traffic, but never less than two full vtund frames (so a slow link can still
send a whole frame without waiting).  It starts full.  A frame is always let through;
when it takes the bucket below zero the caller must pause until the debt is repaid.
Debts shorter than :data:`MIN_PAUSE` are carried to the next frame rather than asked
for as a pause (no sub-millisecond sleeps at high rates); they are still repaid, so
the long-run rate is unaffected, and the extra burst is at most 1 ms of traffic.  A
pause that oversleeps refills the bucket (up to its size), so timer slack does not
lower the rate either.
"""

from __future__ import annotations

BURST_SECONDS = 0.010
BURST_FRAMES = 2
MAX_FRAME = 2048 + 100
MIN_PAUSE = 0.001


def vtund_limit(kbps: int) -> int:
    """Bytes per second vtund allows for ``speed kbps`` (spec §5.5)."""
    return kbps // 8 * 1024 + 400


class Shaper:
    """Pacer for one session's outgoing direction (``vt_api.PacingModule``)."""

    def __init__(self, kbps: int) -> None:
        self.kbps = kbps
        self.rate = vtund_limit(kbps)
        """Limit in bytes per second."""
        self.burst = max(BURST_SECONDS * self.rate, BURST_FRAMES * MAX_FRAME)
        """Bucket size in bytes."""
        self._tokens = self.burst
        self._last: float | None = None

    def sent(self, nbytes: int, now: float) -> float:
        """Account for ``nbytes`` of encoded payload sent at ``now`` (seconds, monotonic).

        Returns how long the device reader must pause, 0.0 to go on at once.
        """
        if self._last is not None and now > self._last:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        if self._last is None or now > self._last:
            self._last = now
        self._tokens -= nbytes
        if self._tokens >= 0:
            return 0.0
        pause = -self._tokens / self.rate
        return pause if pause >= MIN_PAUSE else 0.0
