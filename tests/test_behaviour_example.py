"""The founding example, ``serv.conf`` and ``cli.conf`` run as written, in one namespace.

``vt serve -n -f serv.conf`` and ``vt run conn 127.0.0.1 -n -f cli.conf``: udp with
keep-alive (taken by the client from the server's flags), ``ifconfig`` configures both
ends, one ``route`` fails, and the session stays up for a minute all the same.

Both tun ends live in one namespace, so a ping between 192.168.0.1 and .2 would go over
``lo``.  The tunnel is checked instead by writing IPv4 packets straight into one tun
device (an AF_PACKET socket) and counting them in the other's ``rx_packets``.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest
from behaviour import assert_no_secret, link_counters, wait_for
from netns import Netns
from peers import VtClient, VtServer

EXAMPLES_REL = Path(__file__).resolve().parents[1].parent / "shared" / "examples"
EXAMPLES = EXAMPLES_REL if (EXAMPLES_REL / "serv.conf").exists() else Path("/work/shared/examples")
SECRET = "tan5"
RUN_FOR = 60.0

INJECT = r"""
import socket, sys
from vtcore.testing import icmp_echo
dev, src, dst, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
for i in range(n):
    s.sendto(icmp_echo(src, dst, 0x7674, i, b"vt-example" * 4), (dev, 0x0800))
"""


class ExampleServer(VtServer):
    """Exactly ``vt serve -n -f serv.conf`` (the port is the default, 5000)."""

    def argv(self):
        return [sys.executable, "-m", "vtcore", "serve", "-n", "-f", self.cfg]


def _tun_with(ns: Netns, addr: str) -> str:
    out = ns.run("ip", "-o", "-4", "addr", "show").stdout
    for line in out.splitlines():
        if f"inet {addr} " in line or f"inet {addr}/" in line:
            return line.split()[1]
    return ""


def _through(ns: Netns, src_dev: str, dst_dev: str, src: str, dst: str, n: int = 20) -> None:
    """``n`` packets written into ``src_dev`` arrive on ``dst_dev`` (through vt)."""
    rx0, _ = link_counters(ns, dst_dev)
    _, tx0 = link_counters(ns, src_dev)
    ns.run(sys.executable, "-c", INJECT, src_dev, src, dst, n)
    wait_for(lambda: link_counters(ns, dst_dev)[0] - rx0 >= n, 5,
             f"{n} packets from {src_dev} to reach {dst_dev}")
    assert link_counters(ns, src_dev)[1] - tx0 >= n


@pytest.mark.netns
def test_founding_example_as_written() -> None:
    serv = (EXAMPLES / "serv.conf").read_text()
    cli = (EXAMPLES / "cli.conf").read_text()
    ns = Netns("x")
    try:
        # The peers write the texts, unchanged, to their own config files.
        with ExampleServer(ns, serv) as s, VtClient(ns, cli, "conn", "127.0.0.1") as c:
            started = time.monotonic()
            srv_dev = wait_for(lambda: _tun_with(ns, "192.168.0.2"), 15, "server ifconfig")
            cli_dev = wait_for(lambda: _tun_with(ns, "192.168.0.1"), 15, "client ifconfig")
            assert srv_dev != cli_dev
            # vtund's letters: U = udp, K = keep-alive.
            c.wait_log(r"connected.*flags=<U[^>]*K", timeout=5)
            s.wait_log(r"session up.*proto=udp", timeout=5)
            # The server's route has an unreachable gateway: logged, and the session goes on.
            s.wait_log(r"command failed.*route", timeout=10)
            _through(ns, srv_dev, cli_dev, "192.168.0.2", "192.168.0.1")
            _through(ns, cli_dev, srv_dev, "192.168.0.1", "192.168.0.2")
            # A minute later (keepalive 30:4 by default) it all still stands.
            time.sleep(max(0.0, RUN_FOR - (time.monotonic() - started)))
            assert s.alive() and c.alive()
            assert "session closed" not in s.log() + c.log()
            assert len(re.findall(r"session up", s.log())) == 1
            _through(ns, srv_dev, cli_dev, "192.168.0.2", "192.168.0.1")
            _through(ns, cli_dev, srv_dev, "192.168.0.1", "192.168.0.2")
            assert_no_secret(s, c, secret=SECRET)
    finally:
        ns.close()
