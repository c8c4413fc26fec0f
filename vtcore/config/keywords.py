"""Keyword tables and abbreviation.

vtund.conf(5) says keywords may be abbreviated to four characters; vtund 3.0.4 itself
only matches them in full.  vt accepts both: an exact spelling wins, otherwise a prefix
of four or more characters must lead to a single keyword (aliases such as ``passwd`` /
``password`` count as one).  Values (``persist keep``) and section names (``options``,
``default``) are never abbreviated: a session called ``opti`` stays a session.
"""

from __future__ import annotations

from collections.abc import Mapping

from vtcore.config.errors import shown

MIN_ABBREV = 4

# Which canonical keywords each kind of block accepts.
OPTIONS = frozenset(
    {
        "port", "bindaddr", "iface", "type", "timeout", "ppp", "ifconfig", "route",
        "firewall", "ip", "syslog", "ipv4", "ipv6", "lockdir", "statdir", "metrics",
        "workers", "user", "group",
    }
)  # fmt: skip
HOST = frozenset(
    {
        "passwd", "device", "type", "proto", "compress", "encrypt", "keepalive", "speed",
        "timeout", "persist", "multi", "stat", "nat_hack", "srcaddr", "sslauth", "up",
        "down", "vtmode", "passwd_file",
    }
)  # fmt: skip
FULL_ONLY = frozenset({"passwd_file", "workers", "user", "group"})
"""vt-only keywords never reached by abbreviation: ``pass`` must stay vtund's ``passwd``."""
BINDADDR = frozenset({"addr", "iface"})
SRCADDR = frozenset({"addr", "iface", "port"})
COMMANDS = frozenset({"program", "ppp", "ifconfig", "route", "firewall", "ip"})

ALIASES = {"password": "passwd", "ifcfg": "ifconfig", "delay_udp": "nat_hack"}

# spelling -> canonical keyword
SPELLINGS: dict[str, str] = {
    **{k: k for k in OPTIONS | HOST | BINDADDR | SRCADDR | COMMANDS},
    **ALIASES,
}


class KeywordError(ValueError):
    """A word that is not a keyword, or an ambiguous abbreviation."""


def resolve_keyword(word: str, spellings: Mapping[str, str] = SPELLINGS) -> str:
    """The canonical keyword ``word`` stands for (exact spelling or unique prefix)."""
    exact = spellings.get(word)
    if exact is not None:
        return exact
    if len(word) >= MIN_ABBREV:
        found = sorted({canon for spelt, canon in spellings.items()
                        if spelt.startswith(word) and spelt not in FULL_ONLY})
        if len(found) == 1:
            return found[0]
        if found:
            raise KeywordError(
                f"ambiguous keyword '{shown(word)}': could be " + ", ".join(f"'{c}'" for c in found)
            )
    raise KeywordError(f"unknown keyword '{shown(word)}'")
