"""Typed form of a vtund.conf: what the parser produces and the runtime reads.

Values keep vtund's meaning (see section 6 of the protocol spec); vt-only additions are
marked.  Passwords are excluded from ``repr`` so a logged object never shows them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from vtcore.config.errors import ConfigError


@dataclass
class Command:
    """One statement of an ``up { }`` / ``down { }`` block.

    ``path`` is resolved when the statement is parsed, as vtund does: ``ifconfig "..."``
    takes the ``ifconfig`` path set in ``options`` *before* it in the file.
    """

    kind: str
    """``program``, ``ppp``, ``ifconfig``, ``route``, ``firewall`` or ``ip``."""
    path: str | None
    """Program to run; ``None`` means run ``args`` with ``/bin/sh -c``."""
    args: str
    wait: bool
    line: int


@dataclass
class Addr:
    """``bindaddr { }`` / ``srcaddr { }``: an address or an interface (the last one set
    wins, as in vtund), and a port (``srcaddr`` only)."""

    addr: str | None = None
    iface: str | None = None
    port: int = 0


@dataclass
class Options:
    """The ``options`` section (global settings)."""

    port: int = 5000
    bindaddr: Addr | None = None
    iface: str | None = None
    type: str = "stand"
    """``stand`` or ``inetd``."""
    timeout: int = 30
    ppp: str = "/usr/sbin/pppd"
    ifconfig: str = "/sbin/ifconfig"
    route: str = "/sbin/route"
    firewall: str = "/sbin/ipchains"
    ip: str = "/sbin/ip"
    syslog: str = "daemon"
    """Facility name (a number in the file is mapped to its name)."""
    family: str = "ipv4"
    """``ipv4`` or ``ipv6`` (Debian's bare ``ipv4;`` / ``ipv6;`` keywords)."""
    lockdir: str = "/var/lock/vtund"
    """vt-only keyword ``lockdir``."""
    statdir: str = "/var/log/vtund"
    """vt-only keyword ``statdir``."""
    metrics: tuple[str, int] | None = None
    """vt-only keyword ``metrics ADDR:PORT``: where the Prometheus endpoint listens."""
    workers: int | None = None
    """vt-only ``workers N``: sessions run in N unprivileged worker processes under a
    root master (0: all in the one process).  ``None``: not set (one per CPU where it
    can: :func:`vtcore.runtime.master.resolve_workers`)."""
    user: str | None = None
    """vt-only ``user NAME``: the workers' user (default ``vt`` if it exists, else
    ``nobody``)."""
    group: str | None = None
    """vt-only ``group NAME``: the workers' group (default: the user's)."""
    persist: str | None = None
    """Set by the first ``persist`` seen in a session or default section (as vtund's
    global persist flag); ``None`` if no section sets it."""
    positions: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False)
    """keyword -> (line, col) where it was set."""


@dataclass
class Host:
    """A session profile (also used for the ``default`` section)."""

    name: str
    passwd: str = field(default="", repr=False)
    passwd_file: str | None = None
    """Where the password came from (``passwd_file PATH;``), if not from this config."""
    device: str | None = None
    type: str = "tty"
    proto: str = "tcp"
    compress: tuple[str, int] | None = None
    """``("zlib", N)`` or ``("lzo", N)``; ``None`` when off."""
    encrypt: int | str | None = None
    """``None`` = off; int = vtund cipher code; str = a cipher word that
    :func:`vtcore.config.check.check_config` resolves to its code."""
    keepalive: tuple[int, int] | None = None
    """(interval, count); ``None`` when off."""
    speed: tuple[int, int] = (0, 0)
    """(in, out) kbit/s as vtund.conf(5) writes it: to the client, from the client;
    (0, 0) = no shaping."""
    timeout: int = 30
    persist: str = "no"
    multi: str = "yes"
    stat: bool = False
    nat_hack: str = "no"
    srcaddr: Addr | None = None
    sslauth: bool = True
    up: list[Command] = field(default_factory=list)
    down: list[Command] = field(default_factory=list)
    vtmode: bool = True
    """vt-only: allow the native vt fast path with a vt peer."""
    extras: dict[str, str] = field(default_factory=dict)
    """Keywords no core rule knows (``pcap "/tmp/x.pcap";``), for plugins to answer:
    keyword -> value as written (quotes removed).  ``check_config`` rejects the ones no
    installed plugin answers; sessions pass them to modules in ``LinkSettings.options``."""
    line: int = 0
    """Line where the section starts."""
    positions: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False)
    """Canonical keyword -> (line, col) where it was set (inherited ones point into the
    ``default`` section)."""
    raw: dict[str, str] = field(default_factory=dict, repr=False)
    """Canonical keyword -> value as written, for messages (never holds the password)."""

    def password_bytes(self) -> bytes:
        """The password as the bytes of the file (non-UTF-8 bytes survive loading)."""
        return self.passwd.encode("utf-8", "surrogateescape")

    def inherit(self, name: str, line: int) -> Host:
        """A new profile starting from this (default) one, as vtund copies its default
        host: everything including up/down and srcaddr, but not the password."""
        return replace(
            self,
            name=name,
            passwd="",
            passwd_file=None,
            line=line,
            srcaddr=replace(self.srcaddr) if self.srcaddr else None,
            up=list(self.up),
            down=list(self.down),
            positions={k: v for k, v in self.positions.items()
                       if k not in ("passwd", "passwd_file")},
            raw=dict(self.raw),
            extras=dict(self.extras),
        )


@dataclass
class Config:
    """A parsed file: options, the default profile and the sessions, in file order."""

    path: str
    options: Options
    default: Host
    hosts: dict[str, Host]
    warnings: list[ConfigError] = field(default_factory=list)
