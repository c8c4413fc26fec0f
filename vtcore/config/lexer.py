"""Tokens of vtund.conf.

Differences from vtund's flex lexer, on purpose:

* a bare value is any run of characters other than blanks, ``; { } "`` (vtund splits
  values into number / word / path classes; the parser checks values per keyword);
* a quoted string ends at the *next* ``"`` on the same line (vtund is greedy to the last
  one), so several commands fit on one line;
* ``\\r`` is a blank, so CRLF files work.

As in vtund, ``#`` starts a comment only where a keyword or section name may start
(top level, or right after ``;``, ``{`` or ``}``); inside a value it is an ordinary
character (``passwd ab#cd;`` is the password ``ab#cd``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from vtcore.config.errors import ConfigError, shown


class Kind(Enum):
    WORD = "word"
    STRING = "string"
    LBRACE = "'{'"
    RBRACE = "'}'"
    SEMI = "';'"
    EOF = "end of file"


@dataclass(frozen=True, slots=True)
class Token:
    kind: Kind
    text: str
    line: int
    col: int

    def describe(self) -> str:
        if self.kind is Kind.WORD:
            return f"'{shown(self.text)}'"
        if self.kind is Kind.STRING:
            return f'string "{shown(self.text)}"'
        return self.kind.value


_BLANK = re.compile(r"[ \t\r\f\v]+")
_WORD = re.compile(r"[^ \t\n\r\f\v;{}\"]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_PUNCT = {"{": Kind.LBRACE, "}": Kind.RBRACE, ";": Kind.SEMI}
_KEYWORD_START = (Kind.SEMI, Kind.LBRACE, Kind.RBRACE)


def tokenize(text: str, path: str, errors: list[ConfigError]) -> list[Token]:
    """Split ``text`` into tokens; lexical errors are appended to ``errors`` and the bad
    characters skipped, so parsing can go on and report more."""
    tokens: list[Token] = []
    pos = 0
    line = 1
    line_start = 0
    depth = 0
    n = len(text)
    while pos < n:
        ch = text[pos]
        col = pos - line_start + 1
        if ch == "\n":
            pos += 1
            line += 1
            line_start = pos
            continue
        m = _BLANK.match(text, pos)
        if m:
            pos = m.end()
            continue
        if ch == "#" and (depth == 0 or not tokens or tokens[-1].kind in _KEYWORD_START):
            end = text.find("\n", pos)
            pos = n if end < 0 else end
            continue
        kind = _PUNCT.get(ch)
        if kind is not None:
            tokens.append(Token(kind, ch, line, col))
            if kind is Kind.LBRACE:
                depth += 1
            elif kind is Kind.RBRACE and depth > 0:
                depth -= 1
            pos += 1
            continue
        if ch == '"':
            end = text.find('"', pos + 1)
            nl = text.find("\n", pos + 1)
            if end < 0 or (0 <= nl < end):
                errors.append(ConfigError(path, line, col, "unterminated string"))
                stop = n if nl < 0 else nl
                tokens.append(Token(Kind.STRING, text[pos + 1 : stop], line, col))
                pos = stop
                continue
            body = text[pos + 1 : end]
            bad = _CONTROL.search(body)
            if bad:
                errors.append(
                    ConfigError(path, line, col + 1 + bad.start(), "invalid character in string")
                )
            tokens.append(Token(Kind.STRING, body, line, col))
            pos = end + 1
            continue
        m = _WORD.match(text, pos)  # always matches here
        word = m.group()
        bad = _CONTROL.search(word)
        if bad:
            errors.append(
                ConfigError(path, line, col + bad.start(), f"invalid character '{shown(bad[0])}'")
            )
        tokens.append(Token(Kind.WORD, word, line, col))
        pos = m.end()
    tokens.append(Token(Kind.EOF, "", line, pos - line_start + 1))
    return tokens
