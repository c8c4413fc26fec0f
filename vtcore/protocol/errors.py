"""The one exception raised for bad input from a peer."""

from __future__ import annotations


class ProtocolError(Exception):
    """The peer sent something the vtun protocol does not allow.

    Every parser in :mod:`vtcore.protocol` raises only this for bad peer input, with a
    short one-line message safe to log (it never contains a password or a challenge).
    Misuse by local code (wrong argument types, calls out of order) raises ``ValueError``
    or ``RuntimeError`` instead, so the two are never confused.
    """
