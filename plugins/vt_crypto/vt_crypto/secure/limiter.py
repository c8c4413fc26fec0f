"""Bounding the cost of secure handshakes (each costs the server a SPAKE2 computation).

The runtime asks :meth:`HandshakeLimiter.admit` before it answers ``OK VT2``, i.e.
before any expensive work; a refused client gets ``ERR``.  Pure: time is passed in.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict


def source_key(address: str) -> str:
    """The bucket a peer address falls in: the IPv4 address, or the IPv6 /64 (one host
    usually owns a whole /64, so per-address buckets would be free to multiply)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class HandshakeLimiter:
    """Token bucket per source (``rate`` per second, ``burst`` at once) plus a global cap
    on secure handshakes in progress.  Remembers at most ``max_sources`` sources (least
    recently seen forgotten first), so memory stays bounded under a spoofing flood.
    """

    def __init__(
        self,
        rate: float = 1.0,
        burst: int = 5,
        max_concurrent: int = 32,
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
