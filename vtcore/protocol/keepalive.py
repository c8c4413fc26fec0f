"""vtund's keep-alive and vt's fast dead-peer probe as a pure timer: time is passed in,
nothing sleeps.

The runtime asks :meth:`KeepAlive.next_deadline`, calls :meth:`KeepAlive.on_timer` when
it is reached, and :meth:`KeepAlive.received` for every frame read from the network
(data or control).  With no inbound traffic the result is ECHO_REQ at ticks 2..count+1
and DEAD at tick count+2, about ``(count + 2) * (interval + 1)`` seconds of silence
(spec 2.3).  Outbound traffic does not keep a link alive.

On top of that, a *probe* finds a dead peer in seconds: ECHO_REQ every
:data:`PROBE_INTERVAL` and DEAD when nothing valid came back within :data:`PROBE_TIMEOUT`.
It starts on a hint that the peer may be gone -- an ICMP error (:meth:`suspect`), data
sent into silence (:meth:`sent`, ``watch_sending``), or a new connection for the same
host (the server asks).  A hint alone never ends a session: an
off-path attacker can forge ICMP errors, but not the peer's answer (in secure mode
only an authenticated frame reaches :meth:`received`).
"""

from __future__ import annotations

import enum
import math

_FIRST_TICK_CAP = 300
"""vtund arms the first alarm at ``min(interval, VTUN_STAT_IVAL)``."""
PROBE_INTERVAL = 0.5
"""Seconds between ECHO_REQs while a probe runs: one lost datagram costs little."""
PROBE_TIMEOUT = 3.0
"""A probe with no valid frame from the peer for this long ends the session."""
SILENT_SEND = 2.0
"""Data sent for this long with nothing heard back starts a probe (``watch_sending``)."""


class Action(enum.Enum):
    """What the runtime does after a timer tick."""

    NONE = "none"
    SEND_ECHO = "send_echo"
    """Send one ECHO_REQ control frame."""
    DEAD = "dead"
    """Network timeout: end the session (send CONN_CLOSE, best effort)."""


class KeepAlive:
    """Idle counter and probe of one session.

    ``enabled=False`` (no ``K`` flag) never fires on its own, but still probes when
    told to (:meth:`suspect`): a peer that no longer answers is gone, keep-alive or not.
    ``watch_sending`` (datagram links with keep-alive on) turns :meth:`sent` on.
    """

    __slots__ = ("interval", "count", "enabled", "watch_sending", "_deadline", "_idle",
                 "_dead", "_probe_until", "_probe_next", "_sending_since", "probes")

    def __init__(
        self, interval: int = 30, count: int = 4, now: float = 0.0, enabled: bool = True,
        watch_sending: bool = False,
    ) -> None:
        if enabled and (interval < 1 or count < 0):
            raise ValueError("keepalive needs interval >= 1 and count >= 0")
        self.interval = interval
        self.count = count
        self.enabled = enabled
        self.watch_sending = watch_sending and enabled
        self._idle = 0
        self._dead = False
        self._deadline = now + min(interval, _FIRST_TICK_CAP) if enabled else math.inf
        self._probe_until = math.inf
        """While a probe runs: when it fails; ``inf`` otherwise."""
        self._probe_next = math.inf
        self._sending_since = math.inf
        """First data frame sent since the last frame received (``inf``: none)."""
        self.probes = 0
        """Probes started (counted for ``vt status`` and tests)."""

    @classmethod
    def disabled(cls) -> KeepAlive:
        """A keep-alive for a session without the ``K`` flag."""
        return cls(enabled=False)

    @property
    def idle(self) -> int:
        """Ticks since the last inbound frame (vtund's ``idle``)."""
        return self._idle

    @property
    def probing(self) -> bool:
        return self._probe_until != math.inf

    def received(self, now: float) -> None:
        """A valid frame came in from the network: the link is alive, a probe answered."""
        self._idle = 0
        self._sending_since = math.inf
        self._probe_until = self._probe_next = math.inf

    def sent(self, now: float) -> float:
        """Data frames went out; returns the (possibly new) silence deadline, so the
        runtime re-arms its timer only when that is earlier than the one it set."""
        if self.watch_sending and self._sending_since == math.inf:
            self._sending_since = now
        return self._sending_since + SILENT_SEND

    def suspect(self, now: float) -> bool:
        """A hint the peer may be gone (ICMP error, a new connection for its host):
        start a probe unless one runs or the session is over.  Returns True when the
        runtime must re-arm its timer."""
        if self._dead or self.probing:
            return False
        self.probes += 1
        self._sending_since = math.inf  # the probe takes over from the silence watch
        self._probe_until = now + PROBE_TIMEOUT
        self._probe_next = now
        return True

    def next_deadline(self) -> float:
        """When to call :meth:`on_timer` next (``math.inf`` when nothing is due)."""
        if self._dead:
            return math.inf
        return min(self._deadline, self._probe_next, self._sending_since + SILENT_SEND)

    def on_timer(self, now: float) -> Action:
        """Run what is due at ``now``; early calls do nothing."""
        if self._dead:
            return Action.NONE
        action = Action.NONE
        if self._sending_since + SILENT_SEND <= now and not self.probing:
            self.suspect(now)
        if self.probing:
            if now >= self._probe_until:
                return self._die()
            if now >= self._probe_next:
                self._probe_next = min(now + PROBE_INTERVAL, self._probe_until)
                action = Action.SEND_ECHO
        if not self.enabled or now < self._deadline:
            return action
        # vtund re-arms the alarm from the moment it fires, one second over the interval
        # so that an idle select() always completes in between.
        self._deadline = now + self.interval + 1
        if self._idle > self.count:
            return self._die()
        self._idle += 1
        return Action.SEND_ECHO if self._idle > 1 else action

    def _die(self) -> Action:
        self._dead = True
        self._deadline = self._probe_until = self._probe_next = math.inf
        return Action.DEAD
