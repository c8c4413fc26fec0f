"""The ``OK FLAGS`` string: what the server's profile dictates to the client (spec 1.5).

``format_flags`` builds it in vtund's fixed order; ``parse_flags`` follows vtund's client
rules (letters in any order, ``strtol`` numbers, the ERANGE quirk), so that we accept
exactly what a vtund client accepts, and refuse the rest with :class:`ProtocolError`.

Extension point for a native vt mode: vtund clients accept the letter ``F`` (reserved for
"features", no argument) and fail on any other unknown character.  ``Flags.extra`` is
written as ``F`` + ``extra`` just before ``>``, and is read back only with
``parse_flags(..., allow_extra=True)``.  Send a non-empty ``extra`` only to a peer known
to be vt (see :mod:`vtcore.protocol.handshake`), never to vtund.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from vtcore.protocol.errors import ProtocolError

LEGACY_ENCRYPT = 999
"""Cipher code of ``oldblowfish128ecb``, carried as a bare ``E``."""


@dataclass(frozen=True)
class Letters:
    """Which ``OK FLAGS`` letter names which transport and tunnel type.

    The runtime builds it from the ``flag`` of each registered transport and device record
    (``Letters(registry.letters("transport"), registry.letters("device"))``), so a plugin's
    ``proto``/``type`` travels in the flags; the default is vtund's."""

    protos: Mapping[str, str] = field(default_factory=lambda: {"T": "tcp", "U": "udp"})
    types: Mapping[str, str] = field(
        default_factory=lambda: {"t": "tty", "p": "pipe", "e": "ether", "u": "tun"})


VTUND_LETTERS = Letters()

_ERANGE = 34
"""vtund compares ``strtol``'s result with the C constant ERANGE: the value 34 fails."""

_C_WHITESPACE = " \t\n\v\f\r"
_LONG_MAX = 2**63 - 1


@dataclass(frozen=True)
class Flags:
    """One parsed ``OK FLAGS`` string."""

    proto: str = "tcp"
    """``tcp`` or ``udp``."""
    type: str = "tty"
    """``tty``, ``pipe``, ``ether`` or ``tun``."""
    speed: int | None = None
    """``S<n>``: kbit/s the client may send; ``None`` = no ``S``.  The client shapes only
    if this is non-zero (vtund ignores ``S0``)."""
    zlib: int | None = None
    """``C<n>``: zlib level."""
    lzo: int | None = None
    """``L<n>``: lzo level."""
    keepalive: bool = False
    """``K``: the client uses its own interval:count."""
    encrypt: int | None = None
    """``E<n>``: cipher code; 999 (``LEGACY_ENCRYPT``) is written as a bare ``E``."""
    extra: str = ""
    """Reserved for vt-native negotiation, written as ``F<extra>``; see module doc."""


def format_flags(f: Flags, letters: Letters = VTUND_LETTERS) -> str:
    """``Flags`` -> ``'<TuS128C2KE1>'``, in vtund's order: T/U, t/p/e/u, S, C, L, K, E."""
    proto = next((k for k, v in letters.protos.items() if v == f.proto), None)
    kind = next((k for k, v in letters.types.items() if v == f.type), None)
    if proto is None or kind is None:
        raise ValueError(f"unknown proto or type: {f.proto if proto is None else f.type!r}")
    parts = ["<", proto, kind]
    if f.speed is not None:
        parts.append(f"S{f.speed}")
    if f.zlib is not None:
        parts.append(f"C{f.zlib}")
    if f.lzo is not None:
        parts.append(f"L{f.lzo}")
    if f.keepalive:
        parts.append("K")
    if f.encrypt is not None:
        parts.append("E" if f.encrypt == LEGACY_ENCRYPT else f"E{f.encrypt}")
    if f.extra:
        if ">" in f.extra or "\n" in f.extra or "\0" in f.extra:
            raise ValueError("Flags.extra must not contain '>', newline or NUL")
        parts.append("F" + f.extra)
    parts.append(">")
    return "".join(parts)


def _strtol(s: str, pos: int) -> tuple[int | None, int]:
    """C ``strtol(s+pos, &end, 10)`` then the cast to ``int`` that vtund does.

    Returns ``(value, end)``; ``value`` is None (and ``end == pos``) when no digits.
    """
    i, n = pos, len(s)
    while i < n and s[i] in _C_WHITESPACE:
        i += 1
    neg = False
    if i < n and s[i] in "+-":
        neg = s[i] == "-"
        i += 1
    start = i
    while i < n and "0" <= s[i] <= "9":
        i += 1
    if i == start:
        return None, pos
    value = int(s[start:i])
    value = min(value, _LONG_MAX + 1) if neg else min(value, _LONG_MAX)
    if neg:
        value = -value
    value &= 0xFFFFFFFF  # long -> int, as the C assignment does
    if value >= 2**31:
        value -= 2**32
    return value, i


def parse_flags(s: str, allow_extra: bool = False, letters: Letters = VTUND_LETTERS) -> Flags:
    """Parse the flags part of an ``OK FLAGS`` message (anything before ``<`` is ignored).

    Conflicting tunnel types (``tu``) and zlib together with lzo are refused: vtund
    would accept them and then run a broken session.  Missing T/U or type letters keep
    the defaults (tcp, tty); a vtund server always sends both.
    """
    start = s.find("<")
    if start < 0:
        raise ProtocolError("flags: no '<' found")
    proto, types = "tcp", set()
    speed = zlib = lzo = encrypt = None
    keepalive = False
    extra = ""
    i, n = start + 1, len(s)
    while i < n:
        c = s[i]
        i += 1
        if c in letters.types:
            types.add(letters.types[c])
        elif c in letters.protos:
            proto = letters.protos[c]
        elif c == "K":
            keepalive = True
        elif c in "CLS":
            value, end = _strtol(s, i)
            if value is None or value == _ERANGE:
                raise ProtocolError(f"flags: bad number after {c!r}")
            i = end
            if c == "C":
                zlib = value
            elif c == "L":
                lzo = value
            else:
                speed = value
        elif c == "E":
            value, end = _strtol(s, i)
            if value == _ERANGE:
                raise ProtocolError("flags: bad cipher number")
            i = end
            encrypt = LEGACY_ENCRYPT if not value else value
        elif c == "F":
            if allow_extra:
                close = s.find(">", i)
                if close < 0:
                    break
                extra, i = s[i:close], close
        elif c == ">":
            if len(types) > 1:
                raise ProtocolError("flags: more than one tunnel type")
            if zlib is not None and lzo is not None:
                raise ProtocolError("flags: both zlib and lzo")
            return Flags(
                proto=proto,
                type=types.pop() if types else "tty",
                speed=speed,
                zlib=zlib,
                lzo=lzo,
                keepalive=keepalive,
                encrypt=encrypt,
                extra=extra,
            )
        else:
            raise ProtocolError(f"flags: unexpected character {c!r}")
    raise ProtocolError("flags: no closing '>'")
