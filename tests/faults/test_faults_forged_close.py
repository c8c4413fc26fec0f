"""A forged CONN_CLOSE datagram from the session's own addresses (issue 16, "also seen").

vtun's UDP frames carry no authentication: one close datagram with the client's address
and port ends the server's session, with vtund as with vt (docs/vtund-facts.md).  Secure
mode seals control frames too, so there the same datagram is counted and ignored.  The
forger binds the client's very address and port (the client's socket allows it with
``SO_REUSEADDR``), as an on-path attacker who spoofs them would send.
"""

from __future__ import annotations

import sys

import pytest
from behaviour import HOST, conf, status_docs, wait_for
from netns import ping, two_hosts, wait_ping
from peers import VtClient, VtServer
from secure_tools import client_conf, server_conf

from vtcore.protocol.frames import CONN_CLOSE
from vtcore.transports.base import VTUN_FRAMING

FORGER = """
import socket, sys
src, port, dst = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((src, port))
for d in (bytes.fromhex(sys.argv[4]), bytes(40), b"\\x10\\x00" + bytes(30)):
    s.sendto(d, (dst, 5000))
"""


@pytest.mark.netns
@pytest.mark.parametrize("secure", [False, True], ids=["vtun", "secure"])
def test_forged_close_datagram(secure, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("VT_RUN_DIR", str(tmp_path / "run"))
    with two_hosts() as p:
        ta, tb = p.add_tunnel_devices()
        if secure:
            host = "t1"
            scfg = server_conf(host, proto="udp", device="tsrv")
            ccfg = client_conf(host, device="tcli")
        else:
            host = HOST
            scfg = conf(HOST, type="tun", proto="udp", device="tsrv")
            ccfg = conf(HOST, device="tcli")
        with VtServer(p.a, scfg) as s, VtClient(p.b, ccfg, host, p.a_addr):
            wait_ping(p.b, ta, timeout=15)
            (sess,) = status_docs()[s.proc.pid]["sessions"]
            addr, port = sess["peer"].rsplit(":", 1)
            assert addr == p.b_addr
            p.b.run(sys.executable, "-c", FORGER, p.b_addr, port, p.a_addr, VTUN_FRAMING.control(CONN_CLOSE).hex())
            if not secure:
                # The vtun protocol cannot tell: the server's session ends.
                s.wait_log(r"session closed", timeout=5)
                return
            r = ping(p.b, ta, count=5, interval=0.1)
            assert r.received == 5, r
            assert "session closed" not in s.log()
            counters = wait_for(
                lambda: status_docs()[s.proc.pid]["sessions"][0]["counters"], 5, "status")
            assert counters["bad_frames"] == 3, counters
