"""``vt serve -i``: the connection arrives as stdin, as from inetd; one session, then exit.

A tiny acceptor plays inetd inside the namespace: it accepts one connection and execs vt
with the socket as fd 0 (stdout/stderr go to the log file, not the socket).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from behaviour import HOST, assert_no_secret, conf, wait_for
from netns import two_hosts, wait_listening, wait_ping
from peers import CLIENTS

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
os.dup2(conn.fileno(), 0)
conn.close()
os.execv(sys.executable, [sys.executable, "-m", "vtcore", "--log-format", "console",
                          "serve", "-i", "-f", sys.argv[2]])
"""


@pytest.mark.netns
@pytest.mark.parametrize("client", ["vt", pytest.param("vtund", marks=pytest.mark.vtund)])
def test_inetd_mode_serves_one_session(client: str) -> None:
    with two_hosts() as p, tempfile.TemporaryDirectory(prefix="vt-inetd-") as d:
        ta, tb = p.tunnel_addrs()
        p.a.add_tun("tsrv", addr=ta, peer=tb)
        p.b.add_tun("tcli", addr=tb, peer=ta)
        cfg = Path(d) / "serv.conf"
        cfg.write_text(conf(HOST, type="tun", proto="udp", device="tsrv"))
        logfile = Path(d) / "inetd.log"
        with open(logfile, "wb") as log:
            srv = p.a.popen(sys.executable, "-c", ACCEPTOR, 5000, cfg,
                            stdout=log, stderr=subprocess.STDOUT)
        wait_listening(p.a, 5000, proc=srv)
        ccfg = conf(HOST, device="tcli")
        with CLIENTS[client](p.b, ccfg, HOST, p.a_addr) as c:
            wait_ping(p.b, ta, timeout=15)
            assert srv.poll() is None
            log_text = logfile.read_text()
            assert "session up" in log_text and "host=bt1" in log_text
        # The client is gone: the inetd-mode server ends its one session and exits.
        wait_for(lambda: srv.poll() is not None, 20, "inetd server exit")
        assert srv.returncode == 0, logfile.read_text()
        assert "session closed" in logfile.read_text()

        class _Log:
            kind = "vt-inetd"

            def log(self) -> str:
                return logfile.read_text()

        assert_no_secret(_Log(), c)
