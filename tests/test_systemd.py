"""The shipped systemd units, sd_notify and socket activation, run for real.

systemd is not PID 1 here: ``systemd-analyze`` checks the units offline, a datagram
socket the test owns plays the service manager's ``NOTIFY_SOCKET``, and
``systemd-socket-activate`` passes the listening socket as systemd does.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from behaviour import HOST, conf
from netns import two_hosts, wait_listening, wait_ping
from peers import VtClient, VtServer, _Server

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "systemd"
SCORES_DOC = ROOT / "docs" / "operations.md"
VT = Path(sys.executable).parent / "vt"


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} missing: scripts/setup-system installs systemd's tools")
    return path


@pytest.fixture
def unit_dir(tmp_path: Path) -> Path:
    """The units with ExecStart pointing at this venv's vt (verify wants it to exist),
    and the client template instantiated as vt-client@office.service."""
    for unit in UNITS.iterdir():
        (tmp_path / unit.name).write_text(unit.read_text().replace("/usr/bin/vt", str(VT)))
    shutil.copy(tmp_path / "vt-client@.service", tmp_path / "vt-client@office.service")
    return tmp_path


def test_units_pass_systemd_analyze_verify(unit_dir: Path) -> None:
    units = ["vt-server.service", "vt-server.socket", "vt-client@office.service"]
    res = subprocess.run([_need("systemd-analyze"), "verify", "--man=no", *units],
                         cwd=unit_dir, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and not res.stderr.strip(), res.stderr


def _documented_scores() -> dict[str, float]:
    rows = re.findall(r"^\| (vt-[\w@.-]+\.service) \| ([\d.]+) \|$", SCORES_DOC.read_text(), re.M)
    return {unit: float(score) for unit, score in rows}


def test_security_scores_are_no_worse_than_documented(unit_dir: Path) -> None:
    documented = _documented_scores()
    assert set(documented) == {"vt-server.service", "vt-client@.service"}
    for unit, limit in documented.items():
        name = unit.replace("@.", "@office.")
        res = subprocess.run([_need("systemd-analyze"), "security", "--offline=yes", name],
                             cwd=unit_dir, capture_output=True, text=True, timeout=60)
        m = re.search(rf"Overall exposure level for {re.escape(name)}: ([\d.]+)", res.stdout)
        assert m, res.stdout + res.stderr
        assert float(m.group(1)) <= limit, f"{unit}: exposure {m.group(1)} > documented {limit}"


def _recv_until(sock: socket.socket, want: str, timeout: float) -> list[str]:
    """Notifications received until one carries ``want`` (bounded)."""
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            msg = sock.recv(4096).decode()
        except TimeoutError:
            break
        got.append(msg)
        if want in msg.split("\n"):
            return got
    raise AssertionError(f"no {want} within {timeout}s; got {got}")


def _free_port() -> int:
    with socket.socket() as probe:  # loopback; nothing listens there once closed
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def notified(tmp_path: Path, *args: object, **env: str):
    """``vt ARGS`` with NOTIFY_SOCKET on a datagram socket this test owns (the service
    manager's part); yields (process, socket).  The process is ended on the way out."""
    cfg = tmp_path / "vtund.conf"
    cfg.write_text(conf(HOST, vt_options={"lockdir": tmp_path, "statdir": tmp_path}))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify"),
           "VT_RUN_DIR": str(tmp_path / "run"), **env}
    proc = subprocess.Popen([sys.executable, "-m", "vtcore", *map(str, args), "-n", "-f", cfg],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc, notify
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()


def test_serve_speaks_sd_notify_ready_status_watchdog_stopping(tmp_path: Path) -> None:
    port = _free_port()
    with notified(tmp_path, "serve", "-L", "127.0.0.1", "-P", port,
                  WATCHDOG_USEC="200000") as (proc, notify):
        first = _recv_until(notify, "READY=1", 15)[-1].split("\n")
        # As root: one worker per CPU (the default) -- "N workers, " -- or none.
        workers = len(os.sched_getaffinity(0)) if os.geteuid() == 0 else 0
        shown = f"{workers} workers, " if workers else ""
        assert f"STATUS=listening on 127.0.0.1:{port}, {shown}0 session(s)" in first
        # WATCHDOG_USEC=0.2 s: a ping every 0.1 s, from the event loop.
        start = time.monotonic()
        _recv_until(notify, "WATCHDOG=1", 2)
        _recv_until(notify, "WATCHDOG=1", 2)
        assert time.monotonic() - start < 1.5
        proc.send_signal(signal.SIGTERM)
        _recv_until(notify, "STOPPING=1", 10)
        assert proc.wait(10) == 0


def test_run_speaks_sd_notify_while_it_reconnects(tmp_path: Path) -> None:
    """A persistent client is READY at once (systemd must not wait for a server that may
    be down) and says in STATUS what it is doing."""
    port = _free_port()  # nothing listens: refused at once, and again
    with notified(tmp_path, "run", HOST, "127.0.0.1", "-p", "-P", port) as (proc, notify):
        ready = _recv_until(notify, "READY=1", 15)[-1].split("\n")
        assert f"STATUS={HOST}: connecting to 127.0.0.1:{port}" in ready
        proc.send_signal(signal.SIGTERM)
        _recv_until(notify, "STOPPING=1", 10)
        assert proc.wait(10) == 0


class SocketActivatedServer(VtServer):
    """``systemd-socket-activate -l 0.0.0.0:PORT vt serve -n -f CFG``: vt gets the socket."""

    kind = "vt-socket-activated"

    def wait_ready(self, timeout: float) -> None:
        """systemd's port: vt itself starts on the first connection."""
        _Server.wait_ready(self, timeout)

    def argv(self) -> list[object]:
        return [_need("systemd-socket-activate"), "-l", f"0.0.0.0:{self.port}",
                sys.executable, "-m", "vtcore", "serve", "-n", "-f", self.cfg]


@pytest.mark.netns
def test_serve_under_systemd_socket_activate_carries_a_tunnel() -> None:
    with two_hosts() as p, tempfile.TemporaryDirectory(prefix="vt-sa-") as d:
        ta, _tb = p.add_tunnel_devices()
        srv_conf = conf(HOST, type="tun", proto="tcp", device="tsrv",
                        vt_options={"lockdir": d, "statdir": d})
        with SocketActivatedServer(p.a, srv_conf) as srv:
            wait_listening(p.a, 5000, proc=srv.proc)
            with VtClient(p.b, conf(HOST, device="tcli"), HOST, p.a_addr):
                wait_ping(p.b, ta, timeout=15)
            # vt took systemd's socket rather than binding its own (that would fail:
            # the passed socket holds the port).
            assert "listening" in srv.log() and "cannot listen" not in srv.log()
