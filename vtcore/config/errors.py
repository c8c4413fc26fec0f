"""The one exception type of the configuration parser.

Every problem found in a vtund.conf is a :class:`ConfigError` with a 1-based position, so
the CLI can print ``file:line:col: message`` lines that editors jump to.  The parser
collects all of them and raises a single :class:`ConfigErrors`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ConfigError(Exception):
    """One problem at one place in a configuration file."""

    def __init__(self, path: str, line: int, col: int, message: str) -> None:
        self.path = path
        self.line = line
        self.col = col
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.message}"

    def __repr__(self) -> str:
        return f"ConfigError({self.path!r}, {self.line}, {self.col}, {self.message!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConfigError):
            return NotImplemented
        return (self.path, self.line, self.col, self.message) == (
            other.path,
            other.line,
            other.col,
            other.message,
        )

    def __hash__(self) -> int:
        return hash((self.path, self.line, self.col, self.message))


class ConfigErrors(Exception):
    """All the errors found in one configuration (raised once, after recovery)."""

    def __init__(self, errors: list[ConfigError], config: object = None) -> None:
        self.errors = list(errors)
        self.config = config
        """What was built despite the errors (a ``Config``), for the plugin check."""
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``candidates``, or ``""``: a typo
    reads as what it was meant to be, in every error that lists valid words."""
    close = difflib.get_close_matches(word, sorted(set(candidates)), n=1)
    return f"; did you mean '{shown(close[0])}'?" if close else ""


def shown(text: str, limit: int = 40) -> str:
    """``text`` made safe for a one-line message: lone surrogates (undecodable bytes of
    the file) and control characters escaped, long values cut."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that is not an escaped byte
        raw = text.encode("utf-8", "backslashreplace")
    safe = raw.decode("utf-8", "backslashreplace")
    safe = "".join(c if c.isprintable() else repr(c)[1:-1] for c in safe)
    return safe if len(safe) <= limit else safe[: limit - 3] + "..."
