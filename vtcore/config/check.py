"""Check a parsed config against the installed plugins.

The parser knows vtund's language; which compressors, ciphers, shapers, devices and
transports exist depends on the plugins installed.  This is where a missing plugin
becomes an error at the line that needs it, with the ``pip install`` that fixes it, and
where cipher names become vtund codes.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable

from vt_api import HOST_TOKEN, MAX_TEXT

from vtcore.api import Registry
from vtcore.config import keywords as kw
from vtcore.config.errors import ConfigError, ConfigErrors, did_you_mean, shown
from vtcore.config.model import Config, Host

VTUND_CIPHERS = {
    "blowfish128ecb": 1, "blowfish128cbc": 2, "blowfish128cfb": 3, "blowfish128ofb": 4,
    "blowfish256ecb": 5, "blowfish256cbc": 6, "blowfish256cfb": 7, "blowfish256ofb": 8,
    "aes128ecb": 9, "aes128cbc": 10, "aes128cfb": 11, "aes128ofb": 12,
    "aes256ecb": 13, "aes256cbc": 14, "aes256cfb": 15, "aes256ofb": 16,
    "oldblowfish128ecb": 999,
}  # fmt: skip
"""vtund's cipher names (used in messages when no encryption plugin is installed)."""
SECURE_WORDS = ("aead", "chacha20poly1305", "aes256gcm")
"""vt-crypto's secure-mode words: listed among the valid values, and named as needing
that plugin, when it is not installed."""

EXTRAS = {"zlib": "zlib", "lzo": "lzo", "encrypt": "crypto", "speed": "shaper"}
"""Feature -> the ``vtcore[extra]`` that installs its plugin (distribution ``vt-<extra>``)."""


def needs(what: str, extra: str) -> str:
    return f"'{what}' needs the vt-{extra} plugin: pip install 'vtcore[{extra}]'"


def unknown_word(text: str, word: str, installed: Iterable[str]) -> str:
    """``'type foo'``: no installed plugin answers it; lists those that do, and the closest."""
    have = sorted(set(installed))
    hint = did_you_mean(word, have)
    return (f"'{shown(text)}': no installed plugin answers '{shown(word)}' "
            f"(installed: {', '.join(have) or 'none'}){hint}")


def with_plugin_errors(exc: ConfigErrors, registry: Registry) -> list[ConfigError]:
    """A config's parse errors and what the plugin check finds in what did parse, in file
    order: ``type foo`` is reported in the same run as a syntax error elsewhere."""
    errors = set(exc.errors)
    if isinstance(exc.config, Config):
        errors.update(check_config(exc.config, registry))
    return sorted(errors, key=lambda e: (e.line, e.col))


def check_config(config: Config, registry: Registry) -> list[ConfigError]:
    """Errors for a config without hosts and for features no installed plugin provides;
    resolves ``encrypt`` words to vtund codes in place.  The ``default`` section is checked
    too; an error inherited by many sessions is reported once, at the line that set it."""
    errors: list[ConfigError] = []
    if not config.hosts:
        # vtund refuses such a file ("No hosts defined"); a server would serve nobody, and a
        # file truncated to nothing must not be reloaded as "every host removed".
        errors.append(ConfigError(config.path, 1, 1, "no hosts defined (the config has no "
                                                     "host section)"))
    seen: set[ConfigError] = set()
    for host in (config.default, *config.hosts.values()):
        for err in _check_host(config.path, host, registry):
            if err not in seen:
                seen.add(err)
                errors.append(err)
    errors.sort(key=lambda e: (e.line, e.col))
    return errors


def _check_host(path: str, host: Host, registry: Registry) -> list[ConfigError]:
    out: list[ConfigError] = []

    def err(keyword: str, message: str) -> None:
        line, col = host.positions.get(keyword, (host.line, 1))
        out.append(ConfigError(path, line, col, message))

    def written(keyword: str, fallback: str) -> str:
        return f"{keyword} {shown(host.raw.get(keyword, fallback))}"

    why = _name_too_long(host.name, registry.secure_mode_for(host.encrypt) is not None)
    if why:
        out.append(ConfigError(path, host.line, 1, why))
    if host.compress is not None:
        method, level = host.compress
        text = written("compress", f"{method}:{level}")
        item = registry.answering("compress", method)
        if item is None and method not in EXTRAS:
            err("compress", unknown_word(text, method, registry.words("compress")))
        elif item is None:
            hint = (
                " (vtund reads 'compress lzo;' as zlib level 2)" if text == "compress lzo" else ""
            )
            err("compress", needs(text, EXTRAS[method]) + hint)
        elif item.levels is not None and not item.levels[0] <= level <= item.levels[1]:
            lo, hi = item.levels
            err("compress", f"'{text}': {method} level must be {lo}-{hi}")

    if host.encrypt is not None:
        _check_encrypt(host, registry, err, written)

    if host.speed != (0, 0) and not registry.answers("speed"):
        to_client, from_client = host.speed
        fallback = str(to_client) if to_client == from_client else f"{to_client}:{from_client}"
        err("speed", needs(written("speed", fallback), EXTRAS["speed"]))

    for key, value in host.extras.items():
        item = registry.answering(key)
        if item is None:
            # A typo of a core keyword ('tmeout') lands here too: suggest from both.
            keywords = {m.keyword for m in registry.frame_modules.values()} | kw.HOST
            hint = did_you_mean(key, keywords)
            err(key, f"unknown keyword '{shown(key)}' (no installed plugin answers "
                     f"'{shown(key)} {shown(value)}'){hint}")
        elif item.words and value not in item.words:
            err(key, unknown_word(f"{key} {value}", value, registry.words(key)))

    for keyword, table in (("type", registry.devices), ("proto", registry.transports)):
        word = getattr(host, keyword)
        if keyword in host.positions and word not in table:
            err(keyword, unknown_word(f"{keyword} {word}", word, registry.words(keyword)))
    return out


def _check_encrypt(
    host: Host,
    registry: Registry,
    err: Callable[[str, str], None],
    written: Callable[[str, str], str],
) -> None:
    mods = [m for m in registry.frame_modules.values() if m.keyword == "encrypt"]
    known: dict[str, int] = {}
    for mod in mods:
        for word, code in mod.words.items():
            known.setdefault(word, code)
    value = host.encrypt
    text = written("encrypt", str(value))
    if isinstance(value, str) and registry.secure_mode_for(value) is not None:
        return  # vt's secure mode: the word stays, the handshake negotiates it
    if isinstance(value, str):
        if value in known:
            host.encrypt = known[value]
            return
        if not mods and (value in VTUND_CIPHERS or value in SECURE_WORDS):
            err("encrypt", needs(text, EXTRAS["encrypt"]))
            return
        names = sorted({*(known or VTUND_CIPHERS), *registry.words("encrypt"),
                        *(() if mods else SECURE_WORDS)})
        hint = did_you_mean(value, names)
        err("encrypt", f"'{text}': unknown cipher '{shown(value)}'; valid names: "
                       f"{', '.join(names)}{hint}")
        return
    if not mods:
        err("encrypt", needs(text, EXTRAS["encrypt"]))
    elif value not in known.values() and all(m.words for m in mods):
        codes = ", ".join(f"{c} ({w})" for w, c in sorted(known.items(), key=lambda kv: kv[1]))
        secure = ", ".join(sorted(w for m in registry.secure_modes.values() for w in m.words))
        also = f"; or a secure-mode word: {secure}" if secure else ""
        err("encrypt", f"'{text}': unknown cipher code {value}; valid codes: {codes}{also}")


MAX_HOST_NAME = MAX_TEXT - len("HOST: ")
"""The longest name the 48-character ``HOST:`` line carries (42; its newline may be cut,
the server does not need it): vtund's limit too."""
MAX_VT_HOST_NAME = MAX_HOST_NAME - len(" " + HOST_TOKEN)
"""The longest name that leaves room for vt's token (38): secure mode needs it."""


def _name_too_long(name: str, secure: bool) -> str:
    """Why a host name cannot be announced whole, or ''.  The line is cut at 48
    characters: a longer name arrives cut (no peer finds the host), and a secure host's
    name must leave room for the token that asks for secure mode."""
    if len(name) > MAX_HOST_NAME:
        return (f"host name '{name}' is {len(name)} characters: the handshake's HOST line "
                f"carries at most {MAX_HOST_NAME} (vtund's limit too)")
    if secure and len(name) > MAX_VT_HOST_NAME:
        return (f"host name '{name}' is {len(name)} characters: with secure mode at most "
                f"{MAX_VT_HOST_NAME} (the HOST line must still carry '{HOST_TOKEN}')")
    return ""


# --------------------------------------------------------------------------- warnings


def security_warnings(config: Config, registry: Registry) -> list[ConfigError]:
    """What a recorded or observed session could give away (warnings, not errors): a
    password file others may read, hosts authenticated the vtund way, ``sslauth no``,
    compression before secure mode.  Call after :func:`check_config`."""
    out: list[ConfigError] = _readable_passwords(config)
    for host in config.hosts.values():
        for check in (_legacy_auth, _sslauth_no, _compress_with_secure_mode):
            out += check(config.path, host, registry)
    unique = list(dict.fromkeys(out))
    unique.sort(key=lambda e: (e.line, e.col))
    return unique


def _at(path: str, host: Host, keyword: str, message: str) -> ConfigError:
    line, col = host.positions.get(keyword, (host.line, 1))
    return ConfigError(path, line, col, message)


def _readable_passwords(config: Config) -> list[ConfigError]:
    """As ssh and wg-quick do: a file holding passwords is for its owner's eyes only."""
    holders = [h for h in config.hosts.values() if h.passwd and not h.passwd_file]
    try:
        mode = os.stat(config.path).st_mode
    except OSError:
        return []
    if not holders or not mode & 0o044:
        return []
    return [_at(config.path, holders[0], "passwd",
                f"this file holds passwords and is readable by group or others (mode "
                f"{stat.S_IMODE(mode):04o}); chmod 600 it")]


def _legacy_auth(path: str, host: Host, registry: Registry) -> list[ConfigError]:
    """Without a secure word a host authenticates the vtund way with any peer that does
    not offer secure mode, a man in the middle included (docs/secure-mode.md)."""
    if not registry.secure_modes or registry.secure_mode_for(host.encrypt) is not None:
        return []
    return [_at(path, host, "encrypt" if "encrypt" in host.positions else "passwd",
                f"host '{host.name}' has no secure word: it authenticates the vtund way (a "
                "recorded session allows offline password guessing); as a client it refuses "
                "that only from servers it once saw in secure mode. Between vt ends set "
                "'encrypt aead;' on both")]


def _sslauth_no(path: str, host: Host, registry: Registry) -> list[ConfigError]:
    if host.sslauth or registry.secure_mode_for(host.encrypt) is not None:
        return []
    return [_at(path, host, "sslauth",
                "'sslauth no': the response is the challenge XOR the password; one recorded "
                "session gives the password away")]


def _compress_with_secure_mode(path: str, host: Host, registry: Registry) -> list[ConfigError]:
    """Compression before an AEAD: sizes then depend on content (the VORACLE leak)."""
    if host.compress is None or registry.secure_mode_for(host.encrypt) is None:
        return []
    return [_at(path, host, "compress",
                "'compress' with secure mode: if this tunnel carries traffic an attacker "
                "can influence next to secrets (web pages, cookies), compressed sizes leak "
                "the secrets (VORACLE); use 'compress no;' there")]
