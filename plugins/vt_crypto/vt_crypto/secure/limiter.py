"""Bounding the cost of secure handshakes (each costs the server a CPace computation).

The runtime asks :meth:`HandshakeLimiter.admit` before it answers ``OK VT3``, i.e.
before any expensive work; a refused client gets ``ERR``.  Pure: time is passed in.
"""

from __future__ import annotations

from collections import OrderedDict

from vt_api import source_key

__all__ = ["HandshakeLimiter", "source_key"]


class HandshakeLimiter:
    """Token bucket per source (``rate`` per second, ``burst`` at once) plus a global cap
    on secure handshakes in progress.  The cap matches the server's handshake slots
    (:class:`vtcore.admission.HandshakeSlots`), which evict the oldest half-open
    handshake of the busiest source: a lower cap here would let silent half-handshakes
    hold it with nothing to evict them.  Remembers at most ``max_sources`` sources (least
    recently seen forgotten first), so memory stays bounded under a spoofing flood.
    """

    def __init__(
        self,
        rate: float = 1.0,
        burst: int = 5,
        max_concurrent: int = 256,
        max_sources: int = 4096,
    ) -> None:
        if rate <= 0 or burst < 1 or max_concurrent < 1 or max_sources < 1:
            raise ValueError("rate, burst, max_concurrent and max_sources must be positive")
        self.rate = rate
        self.burst = burst
        self.max_concurrent = max_concurrent
        self.max_sources = max_sources
        self.in_flight = 0
        self.refused = 0
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def admit(self, source: str, now: float) -> bool:
        """May ``source`` start a secure handshake now?  If True, call ``release`` once
        when that handshake ends (success, failure or time-out)."""
        if self.in_flight >= self.max_concurrent:
            self.refused += 1
            return False
        tokens, last = self._buckets.pop(source, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(0.0, now - last) * self.rate)
        now = max(now, last)  # a clock stepping back must not refill later
        if tokens < 1.0:
            self._remember(source, tokens, now)
            self.refused += 1
            return False
        self._remember(source, tokens - 1.0, now)
        self.in_flight += 1
        return True

    def release(self) -> None:
        """One admitted handshake ended."""
        if self.in_flight > 0:
            self.in_flight -= 1

    def _remember(self, source: str, tokens: float, now: float) -> None:
        self._buckets[source] = (tokens, now)
        while len(self._buckets) > self.max_sources:
            self._buckets.popitem(last=False)
