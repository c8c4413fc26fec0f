"""Logs never vanish: the journal under systemd, syslog for a daemon, stderr, or a file;
a destination that cannot be reached, like any start-up failure, is reported on the
terminal with a non-zero exit status before vt detaches."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from behaviour import HOST, conf

VT = [sys.executable, "-m", "vtcore"]


@pytest.fixture
def good(tmp_path: Path) -> Path:
    cfg = tmp_path / "vtund.conf"
    cfg.write_text(conf(HOST, type="tun", vt_options={"lockdir": tmp_path, "statdir": tmp_path}))
    return cfg


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "VT_RUN_DIR": str(tmp_path / "run"),
           "VT_SYSLOG_SOCKET": str(tmp_path / "no-syslog-here")}
    env.pop("JOURNAL_STREAM", None)
    return {**env, **extra}


def _vt(*args: object, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([*VT, *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL)


def test_daemonised_run_with_unreachable_syslog_fails_on_the_terminal(tmp_path, good) -> None:
    res = _vt("run", HOST, "127.0.0.1", "-P", _free_port(), "-f", good, env=_env(tmp_path))
    assert res.returncode != 0
    assert "syslog is unreachable" in res.stderr and "--log-file" in res.stderr, res.stderr


def test_log_format_syslog_with_unreachable_syslog_fails_on_the_terminal(tmp_path, good) -> None:
    res = _vt("--log-format", "syslog", "serve", "-n", "-f", good, "-L", "127.0.0.1",
              "-P", _free_port(), env=_env(tmp_path))
    assert res.returncode != 0
    assert "cannot log: syslog is unreachable" in res.stderr, res.stderr


def test_detached_console_log_format_is_refused(tmp_path, good) -> None:
    res = _vt("--log-format", "json", "serve", "-f", good, "-L", "127.0.0.1",
              "-P", _free_port(), env=_env(tmp_path))
    assert res.returncode != 0 and "--log-file" in res.stderr, res.stderr


@pytest.mark.parametrize("daemonised", [True, False])
def test_startup_failures_reach_stderr_with_nonzero_status(tmp_path, good, daemonised) -> None:
    detach = [] if daemonised else ["-n"]
    bad = tmp_path / "bad.conf"
    bad.write_text("options {\n  port nonsense;\n}\n")
    syslog = tmp_path / "syslog"
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(str(syslog))  # reachable: the failure must not hide behind a working syslog
    env = _env(tmp_path, VT_SYSLOG_SOCKET=str(syslog))
    try:
        res = _vt("serve", *detach, "-f", bad, env=env)
        assert res.returncode != 0 and re.search(rf"{bad}:2:\d+: ", res.stderr), res.stderr
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen(1)
            port = busy.getsockname()[1]
            res = _vt("serve", *detach, "-f", good, "-L", "127.0.0.1", "-P", port, env=env)
        assert res.returncode != 0 and "cannot listen" in res.stderr, res.stderr
    finally:
        sink.close()


def _stop_daemon(run_dir: Path) -> int:
    """End the detached server this test started: its PID is in its status socket's name
    (serve-PORT-PID.sock); waits (bounded) for the socket to appear."""
    deadline = time.monotonic() + 10
    socks: list[Path] = []
    while time.monotonic() < deadline and not socks:
        socks = list(run_dir.glob("serve-*.sock"))
        time.sleep(0.05)
    assert len(socks) == 1, socks
    pid = int(socks[0].name.rsplit("-", 1)[1].removesuffix(".sock"))
    os.kill(pid, signal.SIGTERM)
    return pid


def _recv_upto(sink: socket.socket, word: str, limit: int = 10) -> list[str]:
    """Syslog datagrams up to the first holding ``word``: start-up warnings about the
    config may come first (bounded in count; the socket's timeout bounds each wait)."""
    lines: list[str] = []
    while len(lines) < limit:
        lines.append(sink.recv(4096).decode().rstrip("\0"))
        if word in lines[-1]:
            return lines
    raise AssertionError(f"no {word!r} in {lines}")


def test_daemon_logs_reach_syslog(tmp_path, good) -> None:
    """Detached, with syslog reachable: lines arrive as ``<PRI>vt[PID]: event=...``."""
    path = tmp_path / "syslog"
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(str(path))
    sink.settimeout(10)
    try:
        res = _vt("serve", "-f", good, "-L", "127.0.0.1", "-P", _free_port(),
                  env=_env(tmp_path, VT_SYSLOG_SOCKET=str(path)))
        assert res.returncode == 0 and res.stderr == "", res.stderr
        try:
            lines = _recv_upto(sink, "event='listening'")
        finally:
            pid = _stop_daemon(tmp_path / "run")
        # daemon (3) * 8 + info (6); the PID is the daemon's, after the fork.
        m = re.match(r"<30>vt\[(\d+)\]: event='listening' address='127\.0\.0\.1:\d+'",
                     lines[-1])
        assert m and int(m.group(1)) == pid, lines
        assert all(re.match(r"<\d+>vt\[\d+\]: event=", line) for line in lines), lines
    finally:
        sink.close()


def test_under_systemd_logs_go_to_the_journal_stream_with_priorities(tmp_path, good) -> None:
    read_end, write_end = os.pipe()
    st = os.fstat(write_end)
    env = _env(tmp_path, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
    proc = subprocess.Popen([*VT, "serve", "-n", "-f", good, "-L", "127.0.0.1",
                             "-P", str(_free_port())], env=env, stderr=write_end,
                            stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    os.close(write_end)
    try:
        with os.fdopen(read_end) as journal:
            lines: list[str] = []
            while len(lines) < 10 and not (lines and "listening" in lines[-1]):
                lines.append(journal.readline())  # warnings may come first; "" at exit
                if not lines[-1]:
                    break
            assert all(re.match(r"<[0-7]>event=", line) for line in lines), lines
            assert lines[-1].startswith("<6>event='listening' address='127.0.0.1:"), lines
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_log_file_takes_the_lines_of_a_daemon(tmp_path, good) -> None:
    logfile = tmp_path / "vt.log"
    res = _vt("--log-file", logfile, "serve", "-f", good, "-L", "127.0.0.1",
              "-P", _free_port(), env=_env(tmp_path))
    assert res.returncode == 0, res.stderr
    _stop_daemon(tmp_path / "run")
    assert re.search(r"\[info +\] listening +address=127\.0\.0\.1:", logfile.read_text())


def test_inetd_without_syslog_logs_to_a_stderr_that_is_not_the_connection(tmp_path, good):
    ours, theirs = socket.socketpair()
    with ours:
        proc = subprocess.Popen([*VT, "serve", "-i", "-f", good], env=_env(tmp_path),
                                stdin=theirs, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        theirs.close()
        ours.settimeout(10)
        assert ours.recv(64).startswith(b"VTUN server")
        ours.shutdown(socket.SHUT_WR)
        _, err = proc.communicate(timeout=15)
    assert "syslog is unreachable" in err and "logging to stderr" in err, err
    assert "handshake aborted by peer" in err, err


DETACH = """
import sys
from vtcore import notify
from vtcore.cli import _daemonize
_daemonize()
if sys.argv[1] == "ready":
    notify._tell_parent(b"ready")
elif sys.argv[1] == "fail":
    notify.startup_failed("OSError: no tun device")
"""


@pytest.mark.parametrize("daemon, status, said", [
    ("ready", 0, ""),
    ("fail", 1, "vt: OSError: no tun device\n"),
    ("exit", 1, "vt: the daemon exited while starting; see its logs\n"),
])
def test_the_terminal_waits_for_the_detached_daemon(daemon, status, said) -> None:
    """The process on the terminal exits only once the daemon is up, with its status and
    reason if it could not start after the fork."""
    res = subprocess.run([sys.executable, "-c", DETACH, daemon], capture_output=True,
                         text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert (res.returncode, res.stderr) == (status, said)


def test_a_detached_server_is_up_when_the_terminal_returns(tmp_path, good) -> None:
    syslog = tmp_path / "syslog"
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(str(syslog))
    try:
        res = _vt("serve", "-f", good, "-L", "127.0.0.1", "-P", _free_port(),
                  env=_env(tmp_path, VT_SYSLOG_SOCKET=str(syslog)))
        assert res.returncode == 0, res.stderr
        # READY comes after the status socket is up: no wait needed here.
        assert len(list((tmp_path / "run").glob("serve-*.sock"))) == 1
    finally:
        _stop_daemon(tmp_path / "run")
        sink.close()


def test_inetd_without_syslog_exits_without_writing_into_the_connection(tmp_path, good):
    """As from a real inetd (fds 0-2 the connection) with no syslog: exit 1, and not a
    byte of an error message in the client's stream."""
    ours, theirs = socket.socketpair()
    with ours:
        proc = subprocess.Popen([*VT, "serve", "-i", "-f", good], env=_env(tmp_path),
                                stdin=theirs, stdout=theirs, stderr=theirs)
        theirs.close()
        ours.settimeout(15)
        assert ours.recv(4096) == b""
        assert proc.wait(15) == 1


ROOT = Path(__file__).resolve().parents[1]
LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical", "msg"}
EVENT_STYLE = re.compile(r"[a-z0-9][a-z0-9 ,:'-]*")


def test_every_log_event_is_a_fixed_name_in_one_style() -> None:
    """Issue 17.10: a log line's event is a constant of lowercase words (``session up``,
    ``denied: secure mode``), so that JSON consumers can filter on it; what varies goes
    in fields (``detail=``), never a sentence or a dotted name as the event."""
    import ast

    bad = []
    sources = [*(ROOT / "vtcore").rglob("*.py"), *(ROOT / "devices" / "vt_devices").rglob("*.py"),
               *(p for p in (ROOT / "plugins").rglob("*.py") if "tests" not in p.parts)]
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in LOG_METHODS and node.args
                    and "log" in ast.unparse(node.func.value).lower()):
                continue
            event = node.args[0]
            if not (isinstance(event, ast.Constant) and isinstance(event.value, str)
                    and EVENT_STYLE.fullmatch(event.value)):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(event)}")
    assert not bad, "\n".join(bad)
