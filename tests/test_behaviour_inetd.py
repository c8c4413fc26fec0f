"""``vt serve -i``: the connection arrives as stdin, as from inetd; one session, then exit.

A tiny acceptor plays inetd inside the namespace: it accepts one connection and execs vt
with the socket as fd 0 (stdout/stderr go to the log file, not the socket).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from behaviour import HOST, assert_no_secret, conf, wait_for
from netns import ping, two_hosts, wait_listening, wait_ping
from peers import CLIENTS, VtClient

ACCEPTOR = r"""
import os, socket, sys
port = int(sys.argv[1])
ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("0.0.0.0", port))
ls.listen(1)
ls.settimeout(30)
conn, _ = ls.accept()
ls.close()
if sys.argv[3] == "all":
    # Real inetd: the connection is stdin, stdout and stderr; vt logs to syslog.
    for fd in (0, 1, 2):
        os.dup2(conn.fileno(), fd)
    conn.close()
    os.execv(sys.executable, [sys.executable, "-m", "vtcore", "serve", "-i", "-f", sys.argv[2]])
os.dup2(conn.fileno(), 0)
conn.close()
os.execv(sys.executable, [sys.executable, "-m", "vtcore", "--log-format", "console",
                          "serve", "-i", "-f", sys.argv[2]])
"""


@pytest.mark.netns
@pytest.mark.parametrize("client, proto, workers", [
    ("vt", "tcp", 0), ("vt", "udp", 0), pytest.param("vtund", "udp", 0, marks=pytest.mark.vtund),
    # options { workers N; }: one unprivileged worker carries the one session (issue 18).
    ("vt", "udp", 2), pytest.param("vtund", "tcp", 2, marks=pytest.mark.vtund),
])
def test_inetd_mode_serves_one_session(client: str, proto: str, workers: int) -> None:
    with two_hosts() as p, tempfile.TemporaryDirectory(prefix="vt-inetd-") as d:
        ta, tb = p.add_tunnel_devices()
        cfg = Path(d) / "serv.conf"
        extra = {"vt_options": {"workers": workers, "user": "nobody"}} if workers else {}
        cfg.write_text(conf(HOST, type="tun", proto=proto, device="tsrv", **extra))
        logfile = Path(d) / "inetd.log"
        with open(logfile, "wb") as log:
            srv = p.a.popen(sys.executable, "-c", ACCEPTOR, 5000, cfg, "stdin",
                            stdout=log, stderr=subprocess.STDOUT)
        wait_listening(p.a, 5000, proc=srv)
        ccfg = conf(HOST, device="tcli")
        with CLIENTS[client](p.b, ccfg, HOST, p.a_addr) as c:
            wait_ping(p.b, ta, timeout=15)
            assert srv.poll() is None
            log_text = logfile.read_text()
            assert "session up" in log_text and "host=bt1" in log_text
            if workers:  # the session runs in the one worker, not in root's process
                assert "worker started" in log_text and "worker=" in log_text
                (worker,) = {int(w) for w in re.findall(r"session up.* worker=(\d+)",
                                                        log_text)}
                status = Path(f"/proc/{worker}/status").read_text()
                assert re.search(r"^Uid:\s+65534\s", status, re.M), status
        # The client is gone: the inetd-mode server ends its one session and exits.
        wait_for(lambda: srv.poll() is not None, 20, "inetd server exit")
        assert srv.returncode == 0, logfile.read_text()
        assert "session closed" in logfile.read_text()

        class _Log:
            kind = "vt-inetd"

            def log(self) -> str:
                return logfile.read_text()

        assert_no_secret(_Log(), c)


@pytest.mark.netns
def test_inetd_command_output_never_reaches_the_connection() -> None:
    """As from a real inetd (fds 0, 1 and 2 all the connection): what ``up`` commands print
    must not be written into the tunnel's TCP stream (vtund points stdio at /dev/null)."""
    with two_hosts() as p, tempfile.TemporaryDirectory(prefix="vt-inetd-") as d:
        ta, tb = p.add_tunnel_devices()
        cfg = Path(d) / "serv.conf"
        noisy = "program /bin/sh \"-c 'echo junk-on-stdout; echo junk-on-stderr >&2'\" wait"
        cfg.write_text(conf(HOST, type="tun", proto="tcp", device="tsrv", up=[noisy]))
        # stderr is the connection: vt logs to syslog, here a socket the test owns (without
        # one vt refuses to start rather than lose its logs).
        syslog = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        syslog.bind(str(Path(d) / "syslog"))
        syslog.settimeout(10)
        srv = p.a.popen(sys.executable, "-c", ACCEPTOR, 5000, cfg, "all",
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                        env={**os.environ, "VT_SYSLOG_SOCKET": str(Path(d) / "syslog")})
        wait_listening(p.a, 5000, proc=srv)
        with syslog, VtClient(p.b, conf(HOST, device="tcli"), HOST, p.a_addr) as c:
            wait_ping(p.b, ta, timeout=15)
            r = ping(p.b, ta, count=5, interval=0.1)
            assert r.received == 5
            assert c.alive() and "session closed" not in c.log()
            lines = [syslog.recv(4096)]  # start-up warnings may come first (bounded)
            while b"event='session opened'" not in lines[-1] and len(lines) < 10:
                lines.append(syslog.recv(4096))
            assert b"event='session opened'" in lines[-1], lines
        wait_for(lambda: srv.poll() is not None, 20, "inetd server exit")
