"""Meaning of each statement: the ``options``, ``default`` and session sections.

Follows vtund 3.0.4's cfg_file.y (facts in section 6 of the protocol spec), and accepts
a little more where that cannot change the meaning of a file vtund accepts: numeric or
quoted passwords, several entries in ``bindaddr { }``, ``;`` after any ``}``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import replace

from vtcore.config import keywords as kw
from vtcore.config.errors import ConfigError, did_you_mean
from vtcore.config.lexer import Kind, Token
from vtcore.config.model import Addr, Command, Config, Host, Options
from vtcore.config.parser import Section, Stmt
from vtcore.config.secrets import PasswordFileError, read_password_file

_NUM = re.compile(r"[0-9]{1,9}")
_PAIR = re.compile(r"([0-9]{1,9}):([0-9]{1,9})")
_NAME = re.compile(r"[A-Za-z0-9_-]+")
_CIPHER_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_ACCOUNT = re.compile(r"[a-z_][a-z0-9_-]{0,31}\$?")
"""A user or group name as useradd(8) takes it."""
MAX_WORKERS = 1024

YES = frozenset({"yes", "allow", "enable"})
NO = frozenset({"no", "deny", "disable"})

SYSLOG = {
    "kern": 0, "user": 8, "mail": 16, "daemon": 24, "auth": 32, "syslog": 40, "lpr": 48,
    "news": 56, "uucp": 64, "cron": 72,
    **{f"local{i}": 128 + 8 * i for i in range(8)},
}  # fmt: skip
SYSLOG_BY_CODE = {v: k for k, v in SYSLOG.items()}

CONTEXT_NAMES = {
    kw.OPTIONS: "the options section",
    kw.HOST: "a session section",
    kw.BINDADDR: "a bindaddr block",
    kw.SRCADDR: "a srcaddr block",
    kw.COMMANDS: "an up/down block",
}


class _Bad(Exception):
    """A bad value: reported at ``tok`` and the statement dropped."""

    def __init__(self, tok: Token, message: str) -> None:
        super().__init__(message)
        self.tok = tok
        self.message = message


def _one(stmt: Stmt, name: str, strings: bool = False) -> Token:
    """The single value of ``stmt`` (a bare word; a quoted string too if ``strings``)."""
    if stmt.block is not None:
        raise _Bad(stmt.key, f"'{name}' does not take a {{ }} block")
    if not stmt.args:
        raise _Bad(stmt.key, f"'{name}' needs a value")
    if len(stmt.args) > 1:
        raise _Bad(stmt.args[1], f"unexpected {stmt.args[1].describe()}: '{name}' takes one value")
    tok = stmt.args[0]
    if tok.kind is Kind.STRING and not strings:
        raise _Bad(tok, f"'{name}' takes a plain value, not a quoted string")
    return tok


def _bare(stmt: Stmt, name: str) -> None:
    if stmt.args:
        raise _Bad(stmt.args[0], f"'{name}' takes no value")
    if stmt.block is not None:
        raise _Bad(stmt.key, f"'{name}' does not take a {{ }} block")


def _block(stmt: Stmt, name: str) -> list[Stmt]:
    if stmt.args:
        raise _Bad(stmt.args[0], f"'{name}' takes a {{ }} block, not a value")
    if stmt.block is None:
        raise _Bad(stmt.key, f"'{name}' needs a {{ }} block")
    return stmt.block


def _number(tok: Token, name: str, lo: int = 0, hi: int = 999_999_999) -> int:
    if not _NUM.fullmatch(tok.text):
        raise _Bad(tok, f"'{name}' needs a number, got {tok.describe()}")
    value = int(tok.text)
    if not lo <= value <= hi:
        raise _Bad(tok, f"'{name}' must be between {lo} and {hi}, got {value}")
    return value


def _address_port(tok: Token, name: str) -> tuple[str, int]:
    """``ADDR:PORT`` (``[ADDR]:PORT`` for IPv6)."""
    addr, sep, port = tok.text.rpartition(":")
    addr = addr[1:-1] if addr.startswith("[") and addr.endswith("]") else addr
    if not sep or not addr or not _NUM.fullmatch(port) or not 1 <= int(port) <= 65535:
        raise _Bad(tok, f"'{name}' takes ADDR:PORT (e.g. 127.0.0.1:9100), got {tok.describe()}")
    return addr, int(port)


def _bool(tok: Token, name: str) -> bool:
    text = tok.text
    if text in YES:
        return True
    if text in NO:
        return False
    if _NUM.fullmatch(text):  # vtund reads yes/no as the numbers 1/0
        return int(text) != 0
    raise _Bad(tok, f"'{name}' takes yes or no, got {tok.describe()}")


def _choice(tok: Token, name: str, table: dict[str, str]) -> str:
    value = table.get(tok.text)
    if value is None:
        valid = ", ".join(sorted({k for k in table if not k.isdigit()}))
        hint = did_you_mean(tok.text, (k for k in table if not k.isdigit()))
        raise _Bad(tok, f"'{name}' takes one of {valid}; got {tok.describe()}{hint}")
    return value


def _plugin_word(tok: Token, name: str) -> str:
    """A word an installed plugin must answer (``type tun``, ``proto udp``): only its
    spelling is checked here; ``check_config`` asks the registry."""
    if not _CIPHER_WORD.fullmatch(tok.text):
        raise _Bad(tok, f"'{name}' takes a name (letters, digits, '_', '-'); got {tok.describe()}")
    return tok.text


def _path(tok: Token, name: str) -> str:
    if not tok.text.startswith("/"):
        raise _Bad(tok, f"'{name}' needs an absolute path, got {tok.describe()}")
    return tok.text


def _yes_no_table(yes: str, no: str) -> dict[str, str]:
    return {**dict.fromkeys(YES | {"1"}, yes), **dict.fromkeys(NO | {"0"}, no)}


PERSIST = {**_yes_no_table("yes", "no"), "keep": "keep", "2": "keep"}
MULTI = {**_yes_no_table("yes", "no"), "killold": "killold", "2": "killold"}
NAT_HACK = {**dict.fromkeys(NO | {"0"}, "no"), "client": "client", "server": "server"}
SERVER_TYPE = {"stand": "stand", "inetd": "inetd"}


# ----------------------------------------------------------------- host values


def compress_value(tok: Token) -> tuple[str, int] | None:
    text = tok.text
    if text in NO or text == "0":
        return None
    if text in YES or text == "zlib":
        return ("zlib", 1)
    if text == "lzo":
        # vtund quirk, kept on purpose and silently: its lexer turns the bare word
        # "lzo" into the number 2 (VTUN_LZO), and "compress 2" means zlib level 2.
        # A vtund server given "compress lzo;" sends C2, so vt does the same.
        return ("zlib", 2)
    if _NUM.fullmatch(text):
        return ("zlib", int(text))
    method, sep, level = text.partition(":")
    if _CIPHER_WORD.fullmatch(method) and (not sep or _NUM.fullmatch(level)):
        # Any method word: check_config asks the registry whether a plugin answers it.
        return (method, int(level) if sep else 1)
    raise _Bad(
        tok,
        f"unknown compression {tok.describe()}: expected yes, no, a level, METHOD or METHOD:N",
    )


def encrypt_value(tok: Token) -> int | str | None:
    text = tok.text
    if text in NO:
        return None
    if text in YES:
        return 1  # vtund: "yes" is the number 1 = blowfish128ecb
    if _NUM.fullmatch(text):
        return int(text) or None
    if _CIPHER_WORD.fullmatch(text):
        return text  # resolved against the plugin registry by check_config
    raise _Bad(tok, f"'encrypt' takes yes, no, a cipher name or code, or aead (vt's secure mode); got {tok.describe()}")


def keepalive_value(tok: Token, current: tuple[int, int] | None) -> tuple[int, int] | None:
    text = tok.text
    if text in NO or text == "0":
        return None
    if text in YES or _NUM.fullmatch(text):
        # vtund only switches the flag on; the interval keeps its value (30:4 by default)
        return current or (30, 4)
    m = _PAIR.fullmatch(text)
    if m:
        interval, count = int(m[1]), int(m[2])
        return (interval, count) if interval else None
    raise _Bad(tok, f"'keepalive' takes yes, no or interval:count; got {tok.describe()}")


def speed_value(tok: Token) -> tuple[int, int]:
    text = tok.text
    if _NUM.fullmatch(text):
        n = int(text)
        return (n, n)
    m = _PAIR.fullmatch(text)
    if m:
        return (int(m[1]), int(m[2]))
    raise _Bad(tok, f"'speed' takes kbit/s as N or in:out (in: to the client, out: from it); got {tok.describe()}")


# ----------------------------------------------------------------- builder


class _Builder:
    def __init__(self, path: str, errors: list[ConfigError]) -> None:
        self.path = path
        self.errors = errors
        self.warnings: list[ConfigError] = []
        self.options = Options()
        self.default = Host(name="default")
        self.hosts: dict[str, Host] = {}

    def err(self, tok: Token, message: str) -> None:
        self.errors.append(ConfigError(self.path, tok.line, tok.col, message))

    def warn(self, tok: Token, message: str) -> None:
        self.warnings.append(ConfigError(self.path, tok.line, tok.col, message))

    def each(self, body: list[Stmt], allowed: frozenset[str], apply: Callable,
             host: Host | None = None) -> None:
        """Resolve each statement's keyword in ``allowed`` and hand it to ``apply``.

        In a host section, an unknown keyword with one simple value is kept in
        ``host.extras`` for a plugin to answer (checked by ``check_config``)."""
        for stmt in body:
            try:
                name = kw.resolve_keyword(stmt.key.text)
            except kw.KeywordError as exc:
                if host is not None and self.plugin_keyword(host, stmt):
                    continue
                hint = did_you_mean(stmt.key.text, allowed)
                self.err(stmt.key, f"{exc} in {CONTEXT_NAMES[allowed]}{hint}")
                continue
            if name not in allowed:
                self.err(stmt.key, f"'{name}' is not valid in {CONTEXT_NAMES[allowed]}")
                continue
            try:
                apply(name, stmt)
            except _Bad as bad:
                self.err(bad.tok, bad.message)

    def plugin_keyword(self, host: Host, stmt: Stmt) -> bool:
        key = stmt.key.text
        if stmt.block is not None or len(stmt.args) != 1 or not _NAME.fullmatch(key):
            return False
        if any(spelt.startswith(key) for spelt in kw.SPELLINGS):
            return False  # a too-short abbreviation of a core keyword, not a plugin's
        host.extras[key] = stmt.args[0].text
        host.positions[key] = (stmt.key.line, stmt.key.col)
        return True

    # ------------------------------------------------------------- sections

    def section(self, sec: Section) -> None:
        name = sec.name.text
        if name == "options":
            self.each(sec.body, kw.OPTIONS, self.option)
        elif name == "default":
            self.each(sec.body, kw.HOST, lambda k, s: self.host_option(self.default, k, s),
                      self.default)
        else:
            self.session(sec)

    def session(self, sec: Section) -> None:
        tok = sec.name
        host = self.default.inherit(tok.text, tok.line)
        self.each(sec.body, kw.HOST, lambda k, s: self.host_option(host, k, s), host)
        if not _NAME.fullmatch(tok.text):
            self.err(
                tok,
                f"invalid session name {tok.describe()}: use letters, digits, '_' and '-'",
            )
            return
        if not host.passwd:
            self.warn(tok, f"ignored incomplete session definition '{tok.text}' (no passwd)")
            return
        first = self.hosts.get(tok.text)
        if first is not None:  # vtund's find_host() returns the last match (verified)
            self.warn(
                tok,
                f"session '{tok.text}' redefined (previous definition at line {first.line}); "
                "the last definition is used, as in vtund",
            )
        self.hosts[tok.text] = host

    # ------------------------------------------------------------- options

    def option(self, name: str, stmt: Stmt) -> None:
        o = self.options
        if name in ("ipv4", "ipv6"):
            _bare(stmt, name)
            o.family = name
        elif name == "bindaddr":
            o.bindaddr = self.addr_block(stmt, name, kw.BINDADDR, o.bindaddr)
        elif name in ("ppp", "ifconfig", "route", "firewall", "ip", "lockdir", "statdir"):
            setattr(o, name, _path(_one(stmt, name, strings=True), name))
        elif name == "syslog":
            o.syslog = self.syslog(_one(stmt, name))
        elif name == "metrics":
            o.metrics = _address_port(_one(stmt, name, strings=True), name)
        else:
            first = o.positions.get(name)
            if first is not None:
                self.warn(
                    stmt.key,
                    f"'{name}' was already set on line {first[0]}; vtund keeps the "
                    "first value, so this one is ignored",
                )
                return
            if name == "port":
                o.port = _number(_one(stmt, name), name, 1, 65535)
            elif name == "iface":
                o.iface = _one(stmt, name, strings=True).text
            elif name == "type":
                o.type = _choice(_one(stmt, name), name, SERVER_TYPE)
            elif name == "timeout":
                o.timeout = _number(_one(stmt, name), name)
            elif name == "workers":
                o.workers = _number(_one(stmt, name), name, 0, MAX_WORKERS)
            elif name in ("user", "group"):
                tok = _one(stmt, name, strings=True)
                if not _ACCOUNT.fullmatch(tok.text):
                    raise _Bad(tok, f"invalid {name} name {tok.describe()}")
                setattr(o, name, tok.text)
        o.positions[name] = (stmt.key.line, stmt.key.col)

    def syslog(self, tok: Token) -> str:
        if _NUM.fullmatch(tok.text):
            name = SYSLOG_BY_CODE.get(int(tok.text))
            if name is None:
                codes = ", ".join(f"{v} ({k})" for k, v in SYSLOG.items())
                raise _Bad(tok, f"unknown syslog facility number {tok.text}; known: {codes}")
            return name
        if tok.text not in SYSLOG:
            raise _Bad(
                tok,
                f"unknown syslog facility {tok.describe()}; known: " + ", ".join(SYSLOG),
            )
        return tok.text

    def addr_block(
        self, stmt: Stmt, name: str, allowed: frozenset[str], current: Addr | None
    ) -> Addr:
        addr = replace(current) if current else Addr()

        def entry(key: str, sub: Stmt) -> None:
            if key == "addr":
                addr.addr, addr.iface = _one(sub, key).text, None
            elif key == "iface":
                addr.iface, addr.addr = _one(sub, key, strings=True).text, None
            elif key == "port":
                addr.port = _number(_one(sub, key), key, 0, 65535)

        self.each(_block(stmt, name), allowed, entry)
        return addr

    def beside_config(self, path: str) -> str:
        """A relative path is read from the config file's directory, not the cwd."""
        if os.path.isabs(path) or self.path.startswith("<"):
            return path
        return os.path.join(os.path.dirname(self.path), path)

    # ------------------------------------------------------------- host options

    def host_option(self, host: Host, name: str, stmt: Stmt) -> None:
        if name in ("up", "down"):
            setattr(host, name, self.commands(_block(stmt, name)))
        elif name == "srcaddr":
            host.srcaddr = self.addr_block(stmt, name, kw.SRCADDR, host.srcaddr)
        else:
            tok = _one(stmt, name, strings=name in ("passwd", "device", "passwd_file"))
            self.host_value(host, name, tok)
            if name != "passwd":
                host.raw[name] = tok.text
        host.positions[name] = (stmt.key.line, stmt.key.col)

    def host_value(self, host: Host, name: str, tok: Token) -> None:
        if name in ("passwd", "passwd_file") and ({"passwd", "passwd_file"} - {name}) & \
                set(host.positions):
            raise _Bad(tok, "both passwd and passwd_file in one host: keep one")
        if name == "passwd":
            if not tok.text:
                raise _Bad(tok, "empty password")
            host.passwd = tok.text
        elif name == "passwd_file":
            try:
                host.passwd = read_password_file(self.beside_config(tok.text))
            except PasswordFileError as exc:
                raise _Bad(tok, str(exc)) from None
            host.passwd_file = tok.text
        elif name == "device":
            if not tok.text:
                raise _Bad(tok, "empty device name")
            host.device = tok.text
        elif name == "type":
            host.type = _plugin_word(tok, name)
        elif name == "proto":
            host.proto = _plugin_word(tok, name)
        elif name == "compress":
            host.compress = compress_value(tok)
        elif name == "encrypt":
            host.encrypt = encrypt_value(tok)
        elif name == "keepalive":
            host.keepalive = keepalive_value(tok, host.keepalive)
        elif name == "speed":
            host.speed = speed_value(tok)
        elif name == "timeout":
            host.timeout = _number(tok, name)
        elif name == "persist":
            host.persist = _choice(tok, name, PERSIST)
            if self.options.persist is None:  # vtund: the global flag takes the first one
                self.options.persist = host.persist
        elif name == "multi":
            host.multi = _choice(tok, name, MULTI)
        elif name == "nat_hack":
            host.nat_hack = _choice(tok, name, NAT_HACK)
        elif name in ("stat", "sslauth", "vtmode"):
            setattr(host, name, _bool(tok, name))

    # ------------------------------------------------------------- up / down

    def commands(self, body: list[Stmt]) -> list[Command]:
        cmds: list[Command] = []

        def entry(key: str, stmt: Stmt) -> None:
            cmds.append(self.command(key, stmt))

        self.each(body, kw.COMMANDS, entry)
        return cmds

    def command(self, key: str, stmt: Stmt) -> Command:
        line = stmt.key.line
        if key != "program":
            tok = _one(stmt, key, strings=True)
            if tok.kind is not Kind.STRING:
                raise _Bad(tok, f"'{key}' needs its arguments in double quotes")
            tool = getattr(self.options, key)  # as set above this line, like vtund
            return Command(key, tool, tok.text, wait=key != "ppp", line=line)
        if stmt.block is not None:
            raise _Bad(stmt.key, "'program' does not take a { } block")
        if not stmt.args:
            raise _Bad(stmt.key, "'program' needs a /path and/or a \"command\"")
        path: str | None = None
        args: str | None = None
        wait = False
        for tok in stmt.args:
            text = tok.text
            if tok.kind is Kind.STRING:
                if args is not None:
                    raise _Bad(tok, "'program' takes one quoted argument string")
                args = text
            elif text.startswith("/"):
                if path is not None:
                    raise _Bad(tok, "'program' takes one path")
                path = text
            elif text == "wait" or text in YES:
                wait = True
            elif text in NO:
                wait = False
            elif _NUM.fullmatch(text):  # vtund reads the flags as a number; 1 = wait
                wait = bool(int(text) & 1)
            else:
                raise _Bad(
                    tok,
                    f"unexpected {tok.describe()} in 'program' "
                    '(expected a /path, a "string" or wait)',
                )
        return Command("program", path, args or "", wait=wait, line=line)


def build(sections: list[Section], path: str, errors: list[ConfigError]) -> Config:
    """Apply the parsed sections in file order (order matters: see ``default``)."""
    b = _Builder(path, errors)
    for sec in sections:
        b.section(sec)
    return Config(path, b.options, b.default, b.hosts, b.warnings)
