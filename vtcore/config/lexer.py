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
from enum import Enum
from typing import NamedTuple

from vtcore.config.errors import ConfigError, shown


class Kind(Enum):
    WORD = "word"
    STRING = "string"
    LBRACE = "'{'"
    RBRACE = "'}'"
    SEMI = "';'"
    EOF = "end of file"


class Token(NamedTuple):
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


_MASTER = re.compile(
    r"""(?P<nl>\n)
      | (?P<blank>[ \t\r\f\v]+)
      | (?P<comment>\#[^\n]*)
      | (?P<punct>[{};])
      | (?P<string>"[^"\n]*")
      | (?P<open>"[^"\n]*)
      | (?P<word>[^ \t\n\r\f\v;{}"]+)""",
    re.VERBOSE,
)
_WORD = re.compile(r"[^ \t\n\r\f\v;{}\"]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_ANY_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # _CONTROL without newline
_PUNCT = {"{": Kind.LBRACE, "}": Kind.RBRACE, ";": Kind.SEMI}
_KEYWORD_START = (Kind.SEMI, Kind.LBRACE, Kind.RBRACE)


def tokenize(text: str, path: str, errors: list[ConfigError]) -> list[Token]:
    """Split ``text`` into tokens; lexical errors are appended to ``errors`` (the token
    is kept), so parsing can go on and report more."""
    tokens: list[Token] = []
    append = tokens.append
    line = 1
    line_start = 0
    depth = 0
    pos = 0
    check = _ANY_CONTROL.search(text) is not None
    restart = True
    while restart:  # runs again only after a '#' inside a value
        restart = False
        for m in _MASTER.finditer(text, pos):
            kind = m.lastgroup
            if kind == "blank":
                continue
            start = m.start()
            if kind == "nl":
                line += 1
                line_start = start + 1
                continue
            col = start - line_start + 1
            value = m.group()
            if kind == "punct":
                tkind = _PUNCT[value]
                append(Token(tkind, value, line, col))
                if tkind is Kind.LBRACE:
                    depth += 1
                elif tkind is Kind.RBRACE and depth > 0:
                    depth -= 1
            elif kind == "word" or kind == "comment":
                if kind == "comment":
                    if depth == 0 or not tokens or tokens[-1].kind in _KEYWORD_START:
                        continue
                    # '#' inside a value is a plain character: take the word, re-scan after
                    word = _WORD.match(text, start)
                    assert word is not None  # the scanner matched a word here
                    value = word.group()
                    pos = start + len(value)
                    restart = True
                bad = check and _CONTROL.search(value)
                if bad:
                    msg = f"invalid character '{shown(bad[0])}'"
                    errors.append(ConfigError(path, line, col + bad.start(), msg))
                append(Token(Kind.WORD, value, line, col))
                if restart:
                    break
            else:  # a quoted string, closed or not
                body = value[1:-1] if kind == "string" else value[1:]
                if kind == "open":
                    errors.append(ConfigError(path, line, col, "unterminated string"))
                bad = check and _CONTROL.search(body)
                if bad:
                    msg = "invalid character in string"
                    errors.append(ConfigError(path, line, col + 1 + bad.start(), msg))
                append(Token(Kind.STRING, body, line, col))
    tokens.append(Token(Kind.EOF, "", line, len(text) - line_start + 1))
    return tokens
