"""Who may hold a handshake slot, and which host names are in back-off.  Pure: the
server passes the time in; nothing here reads a clock or touches a socket.

:class:`HandshakeSlots` bounds the connections still in the handshake: at most
``per_source`` per source (an IPv4 address, an IPv6 /64), at most ``max_pending`` in all.
A new connection is never queued: it takes a slot, and when its source (or the server)
is full the oldest half-open handshake of that source (or of the busiest source) is
evicted.  So idle sockets cannot pile up, and a flood only crowds out itself.

:class:`HostBackoff` is the per-host failure budget against online guessing from many
sources: after ``free`` failed authentications a host name admits one attempt per
interval, the interval doubling with each further failure up to ``max_interval``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

Ticket = TypeVar("Ticket", bound=Hashable)


class HandshakeSlots(Generic[Ticket]):
    """Half-open handshakes by source; the caller ends every evicted one at once.  Generic
    in the ticket (the server's are its handshake tasks): what :meth:`admit` evicts is what
    was admitted, so the caller can end it."""

    def __init__(self, max_pending: int = 256, per_source: int = 16) -> None:
        if max_pending < 1 or per_source < 1:
            raise ValueError("max_pending and per_source must be positive")
        self.max_pending = max_pending
        self.per_source = per_source
        self.evicted = 0
        self._slots: OrderedDict[Ticket, str] = OrderedDict()  # ticket -> source, oldest first
        self._count: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, ticket: object) -> bool:
        return ticket in self._slots

    def admit(self, ticket: Ticket, source: str) -> list[Ticket]:
        """Give ``ticket`` a slot; return the tickets evicted to make room (oldest of
        ``source`` when it is at its cap, else the oldest of the busiest source when all
        slots are taken).  Call :meth:`release` when ``ticket``'s handshake ends."""
        evicted: list[Ticket] = []
        if self._count.get(source, 0) >= self.per_source:
            evicted.append(self._oldest_of(source))
        elif len(self._slots) >= self.max_pending:
            busiest = max(self._count, key=self._count.__getitem__)
            evicted.append(self._oldest_of(busiest))
        for old in evicted:
            self.release(old)
        self.evicted += len(evicted)
        self._slots[ticket] = source
        self._count[source] = self._count.get(source, 0) + 1
        return evicted

    def release(self, ticket: Ticket) -> None:
        """``ticket``'s handshake ended (or was evicted); unknown tickets are ignored."""
        source = self._slots.pop(ticket, None)
        if source is None:
            return
        left = self._count[source] - 1
        if left:
            self._count[source] = left
        else:
            del self._count[source]

    def _oldest_of(self, source: str) -> Ticket:
        return next(t for t, s in self._slots.items() if s == source)


@dataclass
class _HostState:
    touched: float
    failures: int = 0
    in_flight: int = 0
    interval: float = 0.0
    next_try: float = 0.0
    refused: int = 0
    logged_at: float | None = None


@dataclass(frozen=True)
class BackoffNotice:
    """What the server logs, once per back-off window, for one host."""

    host: str
    failures: int
    interval: float
    refused: int


class HostBackoff:
    """Per-host failure budget with exponential back-off.

    The server asks :meth:`allow` when a password is about to be tried (a challenge
    answer, a secure msg1), and may ask ``allow(host, now, reserve=False)`` earlier to
    refuse at once a host that is in back-off.  Every attempt a reserving ``allow`` let
    through ends in :meth:`succeeded` or :meth:`failed` (also when the peer left before
    the guess was judged: a secure msg1 once processed is a guess spent).  Guesses in flight count against the
    budget, so a burst cannot overrun it; a connection that never tries a password
    (silent, idle) holds nothing.  Every host name is
    tracked alike, configured or not (back-off never tells an unknown name from a known
    one); at most ``max_hosts`` are remembered (least recently used forgotten first).  A
    host left alone for ``forget_after`` seconds starts afresh; a success resets it.
    """

    def __init__(self, free: int = 10, first_interval: float = 1.0,
                 max_interval: float = 300.0, forget_after: float = 3600.0,
                 max_hosts: int = 4096) -> None:
        if free < 1 or first_interval <= 0 or max_interval < first_interval or max_hosts < 1:
            raise ValueError("bad back-off parameters")
        self.free = free
        self.first_interval = first_interval
        self.max_interval = max_interval
        self.forget_after = forget_after
        self.max_hosts = max_hosts
        self._hosts: OrderedDict[str, _HostState] = OrderedDict()

    def _state(self, host: str, now: float) -> _HostState | None:
        """``host``'s live record (None if it has none, or it was forgotten)."""
        st = self._hosts.get(host)
        if st is None:
            return None
        if now - st.touched > self.forget_after and not st.in_flight:
            del self._hosts[host]
            return None
        self._hosts.move_to_end(host)
        return st

    def _new_state(self, host: str, now: float) -> _HostState:
        """A fresh record for ``host``, the least recent one forgotten beyond ``max_hosts``."""
        st = self._hosts[host] = _HostState(touched=now)
        while len(self._hosts) > self.max_hosts:
            self._hosts.popitem(last=False)
        return st

    def allow(self, host: str, now: float, reserve: bool = True) -> bool:
        """May a password be tried for ``host`` now?  Under the budget, yes; in back-off,
        one attempt per interval (the next one only after it).  ``reserve=False`` only
        asks (an early check that spends nothing)."""
        st = self._state(host, now)
        if st is None:
            if not reserve:
                return True
            st = self._new_state(host, now)
        st.touched = now
        if st.failures + st.in_flight < self.free:
            pass
        elif st.failures >= self.free and now >= st.next_try:
            if reserve:
                st.next_try = now + st.interval
        else:
            st.refused += 1
            return False
        if reserve:
            st.in_flight += 1
        return True

    def _end(self, host: str, now: float) -> _HostState | None:
        st = self._state(host, now)
        if st is not None and st.in_flight:
            st.in_flight -= 1
        return st

    def succeeded(self, host: str, now: float) -> None:
        st = self._end(host, now)
        if st is not None and not st.in_flight:
            del self._hosts[host]
        elif st is not None:
            st.failures = st.refused = 0
            st.interval = st.next_try = 0.0

    def failed(self, host: str, now: float) -> BackoffNotice | None:
        """A password guess for ``host`` failed.  Returns a notice to log when the host
        is in back-off and nothing was logged for it in the current window, else None."""
        st = self._end(host, now) or self._new_state(host, now)
        st.failures += 1
        st.touched = now
        if st.failures < self.free:
            return None
        st.interval = (self.first_interval if st.failures == self.free
                       else min(self.max_interval, st.interval * 2))
        st.next_try = max(st.next_try, now + st.interval)
        if st.logged_at is not None and now - st.logged_at < st.interval:
            return None
        st.logged_at = now
        return BackoffNotice(host, st.failures, st.interval, st.refused)

    def snapshot(self, now: float) -> list[dict[str, object]]:
        """Hosts in back-off now, for ``vt status``."""
        out = []
        for host, st in self._hosts.items():
            if st.failures < self.free or now - st.touched > self.forget_after:
                continue
            out.append({"host": host, "failures": st.failures, "interval": st.interval,
                        "next_try_in": round(max(0.0, st.next_try - now), 1),
                        "refused": st.refused})
        return out
