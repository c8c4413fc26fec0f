"""Events produced by the handshake state machines (frozen, comparable, loggable).

Fields that carry secrets (challenge responses) are left out of ``repr``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vtcore.protocol.flags import Flags


@dataclass(frozen=True)
class HostAnnounced:
    """Server side: the client sent ``HOST: <host>``; call ``send_challenge`` next.

    ``extra`` holds tokens after the host name.  vtund clients never send any; a vtund
    server ignores them, so a vt client may use them to announce itself.
    """

    host: str
    extra: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChallengeAnswered:
    """Server side: the client answered; check it, then ``accept`` or ``reject``."""

    host: str
    response: bytes = field(repr=False)
    extra: tuple[str, ...] = ()


@dataclass(frozen=True)
class Accepted:
    """Client side: ``OK FLAGS`` received; ``raw`` is the ``<...>`` text as sent."""

    flags: Flags
    raw: str


@dataclass(frozen=True)
class Denied:
    """Client side: the server answered ``ERR`` (unknown host, wrong password or lock;
    vtund makes them indistinguishable).  ``reason``: what a vt server added after
    ``ERR`` for a vt client (a feature it lacks), printable text only."""

    reason: str = ""


Event = HostAnnounced | ChallengeAnswered | Accepted | Denied
