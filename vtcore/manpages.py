"""Man pages: vt(1) and one page per command from the click definitions (click-man), and
vt.conf(5) from the keyword table the parser uses (``vtcore.config.keywords``).

A keyword the parser accepts without an entry in :data:`KEYWORD_DOCS` (or an entry for a
keyword it does not accept) stops the generation, so the page cannot drift from the
parser.  The pages are committed under ``man/`` and installed with the package
(``share/man``); ``tests/test_manpages.py`` regenerates them and compares.

    python -m vtcore.manpages man/
"""

from __future__ import annotations

import copy
import os
import sys
import time
from pathlib import Path

from vtcore import __version__
from vtcore.config import keywords as kw

# Section of the file -> (heading, keyword table, {keyword: (value syntax, description)}).
KEYWORD_DOCS: dict[str, tuple[str, frozenset[str], dict[str, tuple[str, str]]]] = {
    "options": ("OPTIONS SECTION", kw.OPTIONS, {
        "port": ("PORT", "TCP port the server listens on and the client connects to "
                 "(default 5000). The first value wins, as the command line sets it first."),
        "bindaddr": ("{ addr ADDR; iface IF; }", "Local address the server listens on."),
        "iface": ("IF", "Accepted for vtund compatibility."),
        "type": ("stand|inetd", "Standalone server (default) or one session from inetd "
                 "(as \\fB\\-i\\fP)."),
        "timeout": ("SECONDS", "Connect and handshake timeout (default 30)."),
        "ppp": ("PATH", "The pppd program the \\fBppp\\fP command runs (default "
                "/usr/sbin/pppd)."),
        "ifconfig": ("PATH", "The program the \\fBifconfig\\fP command runs (default "
                     "/sbin/ifconfig); alias \\fBifcfg\\fP."),
        "route": ("PATH", "The program the \\fBroute\\fP command runs (default /sbin/route)."),
        "firewall": ("PATH", "The program the \\fBfirewall\\fP command runs (default "
                     "/sbin/ipchains)."),
        "ip": ("PATH", "The program the \\fBip\\fP command runs (default /sbin/ip)."),
        "syslog": ("FACILITY", "Syslog facility: daemon (default), user, local0..local7, "
                   "auth, cron, kern, lpr, mail, news, syslog, uucp, or its number."),
        "ipv4": ("", "Listen and connect over IPv4 (the default; as \\fB\\-4\\fP)."),
        "ipv6": ("", "Listen and connect over IPv6 (as \\fB\\-6\\fP)."),
        "lockdir": ("DIR", "vt only: host lock files for \\fBmulti\\fP (default "
                    "/var/lock/vtund)."),
        "statdir": ("DIR", "vt only: \\fBstat\\fP files (default /var/log/vtund)."),
        "metrics": ("ADDR:PORT", "vt only: serve Prometheus metrics on "
                    "http://ADDR:PORT/metrics ([ADDR]:PORT for IPv6)."),
        "workers": ("N", "vt only: run the server's sessions in N worker processes without "
                    "root or capabilities; the root master keeps the listener, the devices, "
                    "the up/down commands, the lock and stat files; \\fBvt run\\fP splits the same "
                    "way (any N > 0: one unprivileged child). Default: one per CPU the "
                    "daemon may run on, when it runs as root with CAP_SETUID and "
                    "CAP_SETGID and the workers' user exists; else 0. 0: one process "
                    "(as vtund's server before it forks). Never abbreviated."),
        "user": ("NAME", "vt only: the workers' user (default \\fBvt\\fP if it exists, "
                 "else \\fBnobody\\fP); never root. Never abbreviated."),
        "group": ("NAME", "vt only: the workers' group (default the user's). Never "
                  "abbreviated."),
    }),
    "host": ("HOST SECTIONS", kw.HOST, {
        "passwd": ("WORD", "The shared password (required); alias \\fBpassword\\fP."),
        "passwd_file": ("PATH", "vt only, instead of \\fBpasswd\\fP: read the password from "
                        "the first line of PATH (relative to the config's directory), a "
                        "regular file owned by root or the user vt runs as, mode 0600 or "
                        "stricter; else the config is refused. Never abbreviated."),
        "device": ("NAME", "Name of the tun/tap device to create or open."),
        "type": ("tun|ether|tty|pipe", "Tunnel type: IP (tun), Ethernet (ether, a tap "
                 "device), a pty, or a pipe to the up command (default tty)."),
        "proto": ("tcp|udp", "Transport of the tunnel frames (default tcp)."),
        "compress": ("no|yes|zlib:LEVEL|lzo:LEVEL", "Compression and its level (1-9)."),
        "encrypt": ("no|yes|CIPHER|aead|chacha20poly1305|aes256gcm",
                    "vtund's ciphers (blowfish128ecb, aes128cbc, ...), or vt's secure mode "
                    "(aead and its suites) between two vt ends."),
        "keepalive": ("yes|no|INTERVAL:COUNT", "Echo requests on an idle link; the link "
                      "is dead after COUNT unanswered ones (default 30:4)."),
        "speed": ("KBPS|IN:OUT", "Shape the tunnel to this rate in kbit/s; IN:OUT: IN from the "
                  "server to the client, OUT from the client to the server (each side paces what it sends)."),
        "timeout": ("SECONDS", "Connect timeout of this host's client."),
        "persist": ("yes|no|keep", "Client: reconnect when the session ends; keep: keep "
                    "the device between sessions."),
        "multi": ("yes|no|killold", "Server: allow several sessions of this host, refuse "
                  "a second one, or end the old one."),
        "stat": ("yes|no", "Append traffic counters to the stat file every 5 minutes."),
        "nat_hack": ("client|server|no", "Over UDP, learn the peer's address from its first "
                     "datagram on this side; alias \\fBdelay_udp\\fP."),
        "srcaddr": ("{ addr ADDR; iface IF; port PORT; }", "Client: local address to "
                    "connect from."),
        "sslauth": ("yes|no", "vtund's challenge response variant."),
        "up": ("{ COMMANDS }", "Commands run when the session comes up."),
        "down": ("{ COMMANDS }", "Commands run when the session ends."),
        "vtmode": ("yes|no", "vt only: the native fast path with a vt peer (default yes)."),
    }),
    "bindaddr": ("BINDADDR AND SRCADDR BLOCKS", kw.BINDADDR | kw.SRCADDR, {
        "addr": ("ADDR", "An IP address."),
        "iface": ("IF", "An interface: its first address (bindaddr) or the device to send "
                  "from (srcaddr)."),
        "port": ("PORT", "srcaddr only: the local port."),
    }),
    "commands": ("UP AND DOWN COMMANDS", kw.COMMANDS, {
        "program": ("PATH \"ARGS\" [wait]", "Run PATH with ARGS (under /bin/sh \\-c without "
                    "PATH); \\fBwait\\fP waits for it to end."),
        "ppp": ("\"ARGS\"", "Run the options' ppp program with ARGS."),
        "ifconfig": ("\"ARGS\"", "Run the options' ifconfig program with ARGS (waits)."),
        "route": ("\"ARGS\"", "Run the options' route program with ARGS (waits)."),
        "firewall": ("\"ARGS\"", "Run the options' firewall program with ARGS (waits)."),
        "ip": ("\"ARGS\"", "Run the options' ip program with ARGS (waits)."),
    }),
}


class KeywordDocsError(RuntimeError):
    """The documented keywords are not the ones the parser accepts."""


def _check_docs() -> None:
    for section, (_, table, docs) in KEYWORD_DOCS.items():
        missing, extra = sorted(table - docs.keys()), sorted(docs.keys() - table)
        if missing or extra:
            raise KeywordDocsError(f"vt.conf(5) {section}: undocumented {missing}, "
                                   f"not keywords {extra}")


def _roff(text: str) -> str:
    """A literal hyphen-minus in roff (options and values are typed as shown)."""
    return text.replace("-", "\\-")


def vt_conf_page(date: str) -> str:
    """vt.conf(5), one entry per keyword of the parser's table."""
    _check_docs()
    out = [f'.TH "VT.CONF" "5" "{date}" "{__version__}" "vt Manual"',
           ".SH NAME", "vt.conf \\- vt and vtund configuration file",
           ".SH DESCRIPTION",
           "vt reads vtund.conf(5) files (default /etc/vtund.conf): an \\fBoptions\\fP "
           "section, an optional \\fBdefault\\fP section whose settings every host section "
           "after it starts from, and one section per host, each \\fINAME\\fP \\fB{\\fP "
           "\\fIkeyword value\\fP\\fB;\\fP ... \\fB}\\fP. A keyword may be abbreviated to "
           "four or more letters if that leads to a single keyword. Comments start with "
           "\\fB#\\fP. Check a file with \\fBvt config check \\-f\\fP \\fIFILE\\fP; errors "
           "are reported as FILE:LINE:COL: message."]
    for heading, _table, docs in KEYWORD_DOCS.values():
        out.append(f".SH {heading}")
        for word in sorted(docs):
            syntax, text = docs[word]
            value = f" \\fI{_roff(syntax)}\\fP" if syntax else ""
            out += [".TP", f"\\fB{_roff(word)}\\fP{value}", text]
    aliases = ", ".join(f"\\fB{_roff(a)}\\fP for \\fB{_roff(c)}\\fP"
                        for a, c in sorted(kw.ALIASES.items()))
    out += [".SH ALIASES", f"{aliases}.", ".SH EXAMPLE", ".nf",
            "options { port 5000; timeout 30; }",
            "default { type tun; proto udp; keepalive yes; compress lzo:1; }",
            "office {", '  passwd "S3cret\\-and\\-long";',
            '  up { ip "addr add 10.3.0.1/30 dev %d"; ip "link set %d up"; };', "}", ".fi",
            ".SH SEE ALSO", "vt(1), vtund.conf(5)"]
    return "\n".join(out) + "\n"


def write_pages(target: Path, date: str | None = None) -> list[Path]:
    """Write man1/vt*.1 and man5/vt.conf.5 under ``target``; returns the files."""
    from click_man.core import write_man_pages

    from vtcore.cli import cli

    date = date or time.strftime(
        "%Y-%m-%d", time.gmtime(int(os.environ.get("SOURCE_DATE_EPOCH", time.time()))))
    man1, man5 = target / "man1", target / "man5"
    man1.mkdir(parents=True, exist_ok=True)
    man5.mkdir(parents=True, exist_ok=True)
    for old in man1.glob("vt*.1"):
        old.unlink()
    shown = copy.copy(cli)  # without the hidden ones (``vt worker``: the master's business)
    shown.commands = {name: cmd for name, cmd in cli.commands.items() if not cmd.hidden}
    write_man_pages("vt", shown, version=__version__, target_dir=str(man1), date=date)
    (man5 / "vt.conf.5").write_text(vt_conf_page(date))
    return sorted([*man1.glob("vt*.1"), man5 / "vt.conf.5"])


def main() -> None:
    for page in write_pages(Path(sys.argv[1] if len(sys.argv) > 1 else "man")):
        print(page)


if __name__ == "__main__":
    main()
