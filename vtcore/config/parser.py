"""vtund.conf parser: text -> :class:`~vtcore.config.model.Config`.

Two small passes.  The syntax pass turns tokens into a tree of statements
(``keyword value... ;`` or ``keyword { ... }``), recovering from an error at the next
``;`` or ``}`` so that one run reports every problem.  :mod:`vtcore.config.sections`
then gives each statement its vtund meaning.  Nothing here raises anything but
:class:`ConfigErrors`.
"""

from __future__ import annotations

from dataclasses import dataclass

from vtcore.config.errors import ConfigError, ConfigErrors
from vtcore.config.lexer import Kind, Token, tokenize
from vtcore.config.model import Config

MAX_DEPTH = 8
"""Sections nest at most three deep (section, block); deeper input is garbage."""


@dataclass
class Stmt:
    """``key args... ;`` or ``key args... { block }``."""

    key: Token
    args: list[Token]
    block: list[Stmt] | None = None


@dataclass
class Section:
    name: Token
    body: list[Stmt]


class _Syntax:
    """Recursive descent over the token list."""

    def __init__(self, tokens: list[Token], path: str, errors: list[ConfigError]) -> None:
        self.toks = tokens
        self.i = 0
        self.path = path
        self.errors = errors

    def peek(self) -> Token:
        return self.toks[self.i]

    def take(self) -> Token:
        tok = self.toks[self.i]
        if tok.kind is not Kind.EOF:
            self.i += 1
        return tok

    def error(self, tok: Token, message: str) -> None:
        self.errors.append(ConfigError(self.path, tok.line, tok.col, message))

    def file(self) -> list[Section]:
        sections: list[Section] = []
        while (tok := self.peek()).kind is not Kind.EOF:
            if tok.kind is Kind.SEMI:  # tolerated, as after "};"
                self.take()
                continue
            if tok.kind is not Kind.WORD:
                self.error(tok, f"expected a section name, got {tok.describe()}")
                self.skip_top()
                continue
            name = self.take()
            if self.peek().kind is not Kind.LBRACE:
                self.error(
                    self.peek(),
                    f"expected '{{' after section name {name.describe()}, "
                    f"got {self.peek().describe()}",
                )
                self.skip_top()
                continue
            sections.append(Section(name, self.block(self.take(), 1)))
            if self.peek().kind is Kind.SEMI:
                self.take()
        return sections

    def block(self, lbrace: Token, depth: int) -> list[Stmt]:
        """Statements up to the matching ``}`` (consumed)."""
        body: list[Stmt] = []
        while True:
            tok = self.peek()
            if tok.kind is Kind.RBRACE:
                self.take()
                return body
            if tok.kind is Kind.EOF:
                self.error(lbrace, "'{' is never closed")
                return body
            if tok.kind is Kind.SEMI:
                self.take()
                continue
            if tok.kind is not Kind.WORD:
                self.error(tok, f"expected a keyword, got {tok.describe()}")
                self.skip_stmt()
                continue
            stmt = self.stmt(depth)
            if stmt is not None:
                body.append(stmt)

    def stmt(self, depth: int) -> Stmt | None:
        key = self.take()
        args: list[Token] = []
        while True:
            tok = self.peek()
            if tok.kind in (Kind.WORD, Kind.STRING):
                args.append(self.take())
            elif tok.kind is Kind.SEMI:
                self.take()
                return Stmt(key, args)
            elif tok.kind is Kind.LBRACE:
                lbrace = self.take()
                if depth >= MAX_DEPTH:
                    self.error(lbrace, "blocks nested too deeply")
                    self.skip_balanced()
                    return None
                stmt = Stmt(key, args, self.block(lbrace, depth + 1))
                if self.peek().kind is Kind.SEMI:
                    self.take()
                return stmt
            else:  # '}' or end of file: the ';' is missing
                last = args[-1] if args else key
                width = len(last.text) + (2 if last.kind is Kind.STRING else 0)
                self.errors.append(
                    ConfigError(
                        self.path, last.line, last.col + width,
                        f"missing ';' after {key.describe()} statement",
                    )
                )  # fmt: skip
                return Stmt(key, args)

    def skip_balanced(self) -> None:
        """Skip from just after a ``{`` to its matching ``}``."""
        depth = 1
        while depth:
            tok = self.take()
            if tok.kind is Kind.EOF:
                return
            if tok.kind is Kind.LBRACE:
                depth += 1
            elif tok.kind is Kind.RBRACE:
                depth -= 1

    def skip_stmt(self) -> None:
        """Recover inside a block: up to the next ``;`` (eaten) or ``}`` (kept)."""
        while True:
            tok = self.peek()
            if tok.kind in (Kind.EOF, Kind.RBRACE):
                return
            self.take()
            if tok.kind is Kind.SEMI:
                return
            if tok.kind is Kind.LBRACE:
                self.skip_balanced()
                if self.peek().kind is Kind.SEMI:
                    self.take()
                return

    def skip_top(self) -> None:
        """Recover at top level: past the next ``;``, ``}`` or whole ``{ }`` group."""
        while True:
            tok = self.take()
            if tok.kind in (Kind.EOF, Kind.SEMI, Kind.RBRACE):
                return
            if tok.kind is Kind.LBRACE:
                self.skip_balanced()
                if self.peek().kind is Kind.SEMI:
                    self.take()
                return


def parse_config(text: str, path: str = "<string>") -> Config:
    """Parse vtund.conf text.  Raises :class:`ConfigErrors` holding every error found;
    warnings (ignored sessions, duplicates) are in ``Config.warnings``."""
    from vtcore.config.sections import build

    errors: list[ConfigError] = []
    try:
        tokens = tokenize(text, path, errors)
        sections = _Syntax(tokens, path, errors).file()
        config = build(sections, path, errors)
    except RecursionError:  # pragma: no cover - depth is bounded; belt and braces
        errors.append(ConfigError(path, 1, 1, "configuration nested too deeply"))
        raise ConfigErrors(errors) from None
    if errors:
        errors.sort(key=lambda e: (e.line, e.col))
        raise ConfigErrors(errors, config)
    return config


def load_config(path: str) -> Config:
    """Read and parse a file.  Bytes that are not UTF-8 are kept (surrogate escapes), so
    a Latin-1 password still reaches the handshake unchanged."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigErrors([ConfigError(path, 1, 1, f"cannot read file: {reason}")]) from None
    return parse_config(data.decode("utf-8", "surrogateescape"), path)
