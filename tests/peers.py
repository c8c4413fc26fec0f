"""Drivers for tunnel peers inside test namespaces: the reference vtund, and vt itself.

Each peer is a context manager: it writes its config to a temp file, starts the daemon in the
foreground inside a :class:`netns.Netns`, waits until it is ready (bounded), and stops it by
PID (SIGTERM, then SIGKILL) on the way out. Its output is kept for diagnostics: vtund opens
syslog with ``LOG_PERROR``, so every syslog line also lands on stderr, which we capture.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from netns import HarnessError, Netns, _skip_or_fail, wait_listening

VTUND = os.environ.get("VT_VTUND", "/usr/sbin/vtund")
VTUND_DIRS = ("/var/lock/vtund", "/var/log/vtund", "/var/run")
DEFAULT_PASSWD = "Vt-test-pw1"


def vtund_available() -> bool:
    return os.path.isfile(VTUND) and os.access(VTUND, os.X_OK)


def requires_vtund() -> None:
    """Skip without the reference vtund binary (fail instead when VT_REQUIRE_NETNS=1)."""
    if not vtund_available():
        _skip_or_fail(f"needs the reference vtund at {VTUND} (apt-get install vtun)")


def ensure_vtund_dirs() -> None:
    """vtund needs its lock, log and pid directories; a fresh container may lack them."""
    for d in VTUND_DIRS:
        os.makedirs(d, exist_ok=True)


# --------------------------------------------------------------------------------------------
# Config building

OPTION_KEYWORDS = frozenset(
    "port bindaddr iface type timeout ppp ifconfig route firewall ip syslog ipv4 ipv6".split()
)
PROFILE_KEYWORDS = frozenset(
    "passwd password device type proto compress encrypt keepalive speed timeout persist multi "
    "stat nat_hack delay_udp srcaddr sslauth up down".split()
)
_WORD = re.compile(r"^[A-Za-z0-9\-_+=!$#%&*^@~.:/]+$")


class ConfigBuildError(ValueError):
    """A setting vtund would reject or misread (abbreviation, numeric password, bad value)."""


def _value(key: str, v: object) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    s = str(v)
    if s.startswith('"') and s.endswith('"') and len(s) >= 2:
        return s
    if not _WORD.match(s):
        raise ConfigBuildError(f"{key}: value {s!r} is not a single vtund word")
    return s


def _block(key: str, body: object) -> list[str]:
    if isinstance(body, dict):
        stmts = [f"{k} {_value(k, v)}" for k, v in body.items()]
    elif isinstance(body, str):
        stmts = [body]
    else:
        stmts = [str(s) for s in body]
    lines = [f"  {key} {{"]
    lines += [f"    {s.rstrip().rstrip(';')};" for s in stmts]
    lines.append("  };")
    return lines


def vtund_conf(host: str, options: dict | None = None, **settings: object) -> str:
    """A vtund.conf with an ``options`` section and one profile ``host``.

    Settings are full keywords (vtund does not accept abbreviations): ``type="tun"``,
    ``proto="udp"``, ``device="tvA"``, ``compress="lzo:9"``, ``encrypt="aes128cbc"``,
    ``keepalive=True``... ``up``/``down`` take statements, one per line
    (``['ip "link set %d up"']``); ``srcaddr`` a dict. ``passwd`` defaults to a non-numeric
    test password (a numeric one is lexed as a number and the profile is dropped).
    """
    if not _WORD.match(host):
        raise ConfigBuildError(f"bad profile name {host!r}")
    if host in OPTION_KEYWORDS | PROFILE_KEYWORDS:
        raise ConfigBuildError(f"profile name {host!r} is a vtund keyword")
    opts = {"timeout": 10}
    opts.update(options or {})
    lines = ["options {"]
    for k, v in opts.items():
        if k not in OPTION_KEYWORDS:
            raise ConfigBuildError(f"unknown options keyword {k!r}")
        if k == "bindaddr":
            lines += _block(k, v)
        elif v is True and k in ("ipv4", "ipv6"):
            lines.append(f"  {k};")
        else:
            lines.append(f"  {k} {_value(k, v)};")
    lines += ["}", "", f"{host} {{"]
    settings.setdefault("passwd", DEFAULT_PASSWD)
    for k, v in settings.items():
        if k not in PROFILE_KEYWORDS:
            raise ConfigBuildError(f"unknown profile keyword {k!r} (no abbreviations)")
        if k in ("passwd", "password") and str(v).isdigit():
            raise ConfigBuildError("numeric passwords are lexed as numbers by vtund")
        if k in ("up", "down", "srcaddr"):
            lines += _block(k, v)
        else:
            lines.append(f"  {k} {_value(k, v)};")
    lines += ["}", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Peer processes


class _Peer:
    """Base for a daemon run in a namespace with its config in a temp dir."""

    kind = "peer"

    def __init__(
        self, ns: Netns, config_text: str, port: int = 5000, *, expect_exit: bool = False
    ) -> None:
        self.ns = ns
        # A peer the test expects to exit (refused, denied, failing) is started without the
        # "still alive shortly after start" check: its exit is the test's to assert, and a
        # fast refusal must not read as a harness error (issue 20).
        self.expect_exit = expect_exit
        self.config_text = config_text
        self.port = int(port)
        self.proc: subprocess.Popen | None = None
        self._dir = tempfile.TemporaryDirectory(prefix=f"vt-{self.kind}-")
        self.cfg = Path(self._dir.name) / "vtund.conf"
        self.logfile = Path(self._dir.name) / "peer.log"

    def argv(self) -> list[object]:
        raise NotImplementedError

    def wait_ready(self, timeout: float) -> None:
        """Default: the process is still alive shortly after start."""
        time.sleep(0.2)
        self._check_alive()

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise HarnessError(
                f"{self.kind} exited with {self.proc.returncode}; log:\n{self.log()}"
            )

    def start(self, timeout: float = 10) -> _Peer:
        ensure_vtund_dirs()
        self.cfg.write_text(self.config_text)
        self.cfg.chmod(0o600)
        with open(self.logfile, "wb") as log:
            self.proc = self.ns.popen(*self.argv(), stdout=log, stderr=subprocess.STDOUT)
        if not self.expect_exit:
            self.wait_ready(timeout)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern: str, timeout: float = 10) -> re.Match:
        """Wait (bounded) until a log line matches ``pattern``; returns the match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = rx.search(self.log())
            if m:
                return m
            self._check_alive()
            time.sleep(0.05)
        raise HarnessError(f"{self.kind}: no log line matching {pattern!r}; log:\n{self.log()}")

    def stop(self, timeout: float = 3) -> int | None:
        """SIGTERM the process group, then SIGKILL; returns the exit code."""
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            _killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=timeout)
        _killpg(p.pid, signal.SIGKILL)  # forked session children share the group
        return p.returncode

    def __enter__(self) -> _Peer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            self._dir.cleanup()
            raise

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.stop()
            if exc_type is not None:
                # Shown by pytest next to the failure: the peer's own view of what happened.
                sys.stderr.write(f"--- {self.kind} log ({self.ns.name}) ---\n{self.log()}\n")
        finally:
            self._dir.cleanup()


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class _Server(_Peer):
    def wait_ready(self, timeout: float) -> None:
        try:
            wait_listening(self.ns, self.port, timeout=timeout, proc=self.proc)
        except HarnessError as e:
            raise HarnessError(f"{self.kind}: {e}; log:\n{self.log()}") from None


class _Client(_Peer):
    def __init__(
        self,
        ns: Netns,
        config_text: str,
        host: str,
        server_addr: str,
        port: int = 5000,
        *,
        expect_exit: bool = False,
    ) -> None:
        super().__init__(ns, config_text, port, expect_exit=expect_exit)
        self.host = host
        self.server_addr = server_addr


class VtundServer(_Server):
    """Reference ``vtund -n -s -f CFG -P PORT`` in ``ns``."""

    kind = "vtund-server"

    def argv(self) -> list[object]:
        return [VTUND, "-n", "-s", "-f", self.cfg, "-P", self.port]


class VtundClient(_Client):
    """Reference ``vtund -n -f CFG -P PORT HOST SERVER`` in ``ns``."""

    kind = "vtund-client"

    def argv(self) -> list[object]:
        return [VTUND, "-n", "-f", self.cfg, "-P", self.port, self.host, self.server_addr]


TEST_WORKERS = os.environ.get("VT_TEST_WORKERS", "1")
"""How many workers each vt peer of the run gets unless its config says (``workers N;``):
``1`` by default -- the shipped split (a root master, an unprivileged worker) at the
least start-up cost per daemon; ``auto``: vt's own default (one per CPU); ``0``: one
process; any N: ``VT_TEST_WORKERS=2 make flakes``.  tests/test_workers.py covers more
than one worker and the default itself."""


def _with_workers(text: str) -> str:
    """The config with ``workers`` set as :data:`TEST_WORKERS` says, if it sets none."""
    if TEST_WORKERS == "auto" or re.search(r"\bworkers\b", text):
        return text
    split = f"workers {int(TEST_WORKERS)};"
    out, n = re.subn(r"^options\s*\{", lambda m: f"{m.group(0)} {split}", text, count=1,
                     flags=re.M)
    return out if n else f"options {{ {split} }}\n{text}"


class VtServer(_Server):
    """vt's server: ``python -m vtcore serve -n -f CFG -P PORT`` in ``ns``."""

    kind = "vt-server"

    def start(self, timeout: float = 10) -> _Peer:
        self.config_text = _with_workers(self.config_text)
        return super().start(timeout)

    def wait_ready(self, timeout: float) -> None:
        """Its port listens (bound before anything else), then its ``listening`` line:
        with workers, logged once every worker has loaded the config."""
        start = time.monotonic()
        super().wait_ready(timeout)
        self.wait_log(r"listening\s+address=", max(1.0, timeout - (time.monotonic() - start)))

    def argv(self) -> list[object]:
        return [sys.executable, "-m", "vtcore", "serve", "-n", "-f", self.cfg, "-P", self.port]


class VtClient(_Client):
    """vt's client: ``python -m vtcore run HOST SERVER -n -f CFG [-P PORT]`` in ``ns``."""

    kind = "vt-client"

    def start(self, timeout: float = 10) -> _Peer:
        """Each client gets its own ``statdir`` unless the test names one: what a client
        remembers about a server (secure mode, vtcore/runtime/trust.py) stays in its test."""
        if not re.search(r"\bstatdir\b", self.config_text):
            statdir = f"statdir {Path(self._dir.name) / 'stat'};"
            text, n = re.subn(r"^options\s*\{", lambda m: f"{m.group(0)} {statdir}",
                              self.config_text, count=1, flags=re.M)
            self.config_text = text if n else f"options {{ {statdir} }}\n{text}"
        self.config_text = _with_workers(self.config_text)
        return super().start(timeout)

    def argv(self) -> list[object]:
        argv: list[object] = [
            sys.executable, "-m", "vtcore", "run", self.host, self.server_addr,
            "-n", "-f", self.cfg,
        ]  # fmt: skip
        if self.port != 5000:
            argv += ["-P", self.port]
        return argv


SERVERS = {"vtund": VtundServer, "vt": VtServer}
CLIENTS = {"vtund": VtundClient, "vt": VtClient}
