"""Events of the handshake state machines (frozen, comparable, loggable), h11's way:
``next_event()`` returns what the peer did; ``send(decision)`` takes what this side does
and returns the bytes for it.

Fields that carry secrets (challenge responses) are left out of ``repr``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vtcore.protocol.flags import Flags

# -- what the peer did (next_event)


@dataclass(frozen=True)
class HostAnnounced:
    """Server side: the client sent ``HOST: <host>``; ``send(Challenge(...))`` next (or
    switch to a secure mode's offer).

    ``extra`` holds tokens after the host name.  vtund clients never send any; a vtund
    server ignores them, so a vt client may use them to announce itself.
    """

    host: str
    extra: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChallengeAnswered:
    """Server side: the client answered; ``check`` it, then ``send(Accept(...))`` or
    ``send(Reject())``."""

    host: str
    response: bytes = field(repr=False)
    extra: tuple[str, ...] = ()


@dataclass(frozen=True)
class Challenged:
    """Client side: the server's reply to ``HOST:`` that is not ``ERR``: vtund's
    ``OK CHAL`` or a secure mode's offer.  ``block`` is the 50 bytes as received.  The
    runtime decides: ``send(Answer())`` answers a challenge with the password; a client
    that requires a secure mode must never do so on a plain challenge (a downgrade)."""

    block: bytes


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


Event = HostAnnounced | ChallengeAnswered | Challenged | Accepted | Denied


# -- what this side does (send)


@dataclass(frozen=True)
class Challenge:
    """Server: ``OK CHAL`` with these 16 random bytes (``os.urandom``)."""

    chal: bytes


@dataclass(frozen=True)
class Accept:
    """Server: ``OK FLAGS`` (a :class:`Flags` or its ``<...>`` text); the handshake is done."""

    flags: Flags | str


@dataclass(frozen=True)
class Reject:
    """Server: ``ERR`` (any failure, also after a ProtocolError); then close.  ``reason``
    follows ``ERR`` only for a client that announced itself with a HOST token."""

    reason: str = ""


@dataclass(frozen=True)
class Answer:
    """Client, after :class:`Challenged`: answer the challenge with the password."""


Decision = Challenge | Accept | Reject | Answer
