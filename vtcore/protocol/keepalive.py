"""vtund's keep-alive as a pure timer (spec 2.3): time is passed in, nothing sleeps.

The runtime asks :meth:`KeepAlive.next_deadline`, calls :meth:`KeepAlive.on_timer` when
it is reached, and :meth:`KeepAlive.received` for every frame read from the network
(data or control).  With no inbound traffic the result is ECHO_REQ at ticks 2..count+1
and DEAD at tick count+2, about ``(count + 2) * (interval + 1)`` seconds of silence.
Outbound traffic does not keep a link alive.
"""

from __future__ import annotations

import enum
import math

_FIRST_TICK_CAP = 300
"""vtund arms the first alarm at ``min(interval, VTUN_STAT_IVAL)``."""


class Action(enum.Enum):
    """What the runtime does after a timer tick."""

    NONE = "none"
    SEND_ECHO = "send_echo"
    """Send one ECHO_REQ control frame."""
    DEAD = "dead"
    """Network timeout: end the session (send CONN_CLOSE, best effort)."""


class KeepAlive:
    """Idle counter of one session; ``enabled=False`` (no ``K`` flag) never fires."""

    __slots__ = ("interval", "count", "enabled", "_deadline", "_idle", "_dead")

    def __init__(
        self, interval: int = 30, count: int = 4, now: float = 0.0, enabled: bool = True
    ) -> None:
        if enabled and (interval < 1 or count < 0):
            raise ValueError("keepalive needs interval >= 1 and count >= 0")
        self.interval = interval
        self.count = count
        self.enabled = enabled
        self._idle = 0
        self._dead = False
        self._deadline = now + min(interval, _FIRST_TICK_CAP) if enabled else math.inf

    @classmethod
    def disabled(cls) -> KeepAlive:
        """A keep-alive for a session without the ``K`` flag."""
        return cls(enabled=False)

    @property
    def idle(self) -> int:
        """Ticks since the last inbound frame (vtund's ``idle``)."""
        return self._idle

    def received(self, now: float) -> None:
        """Any frame came in from the network: the link is alive."""
        self._idle = 0

    def next_deadline(self) -> float:
        """When to call :meth:`on_timer` next (``math.inf`` when disabled)."""
        return self._deadline

    def on_timer(self, now: float) -> Action:
        """Run the tick due at ``next_deadline()``; early calls do nothing."""
        if not self.enabled or now < self._deadline:
            return Action.NONE
        if self._dead:
            return Action.DEAD
        # vtund re-arms the alarm from the moment it fires, one second over the interval
        # so that an idle select() always completes in between.
        self._deadline = now + self.interval + 1
        if self._idle > self.count:
            self._dead = True
            self._deadline = math.inf
            return Action.DEAD
        self._idle += 1
        return Action.SEND_ECHO if self._idle > 1 else Action.NONE
