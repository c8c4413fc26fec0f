"""IPv6 underlay (``options { ipv6; }`` or ``-6``), vt and vtund in both roles, tcp and udp;
and IPv6 inside the tunnel (fdxx:: addresses on the tun devices, ping -6)."""

from __future__ import annotations

import pytest
from behaviour import HOST, assert_no_secret, conf
from netns import ping, two_hosts, wait_ping
from peers import CLIENTS, SERVERS, VtClient, VtServer

V = pytest.mark.vtund


class Vt6Server(VtServer):
    def argv(self):
        return [*super().argv(), "-6"]


class Vt6Client(VtClient):
    def argv(self):
        return [*super().argv(), "-6"]


CASES = [
    ("vt", "vt", "tcp", "flag"),
    ("vt", "vt", "udp", "config"),
    pytest.param("vtund", "vt", "tcp", "config", marks=V),
    pytest.param("vtund", "vt", "udp", "config", marks=V),
    pytest.param("vt", "vtund", "tcp", "config", marks=V),
    pytest.param("vt", "vtund", "udp", "config", marks=V),
]


@pytest.mark.netns
@pytest.mark.parametrize("server, client, proto, how", CASES)
def test_ipv6_underlay_and_inside(server: str, client: str, proto: str, how: str) -> None:
    with two_hosts(ipv6=True) as p:
        ta, tb = p.add_tunnel_devices()
        x, y = p.octets
        ia, ib = f"fd{x:02x}:{y:x}:77::1", f"fd{x:02x}:{y:x}:77::2"
        p.a.run("ip", "-6", "addr", "add", ia, "peer", ib, "nodad", "dev", "tsrv")
        p.b.run("ip", "-6", "addr", "add", ib, "peer", ia, "nodad", "dev", "tcli")
        opts = {"ipv6": True} if how == "config" else {}
        scfg = conf(HOST, options=opts, type="tun", proto=proto, device="tsrv")
        ccfg = conf(HOST, options=opts, device="tcli")
        scls = Vt6Server if how == "flag" else SERVERS[server]
        ccls = Vt6Client if how == "flag" else CLIENTS[client]
        with scls(p.a, scfg) as s, ccls(p.b, ccfg, HOST, p.a_addr) as c:
            wait_ping(p.b, ta, timeout=15)
            wait_ping(p.a, ib, timeout=5)
            r4 = ping(p.a, tb, count=5, interval=0.1)
            r6 = ping(p.b, ia, count=5, interval=0.1)
            assert (r4.received, r6.received) == (5, 5)
            if server == "vt":
                # The session really runs over the v6 underlay.
                s.wait_log(rf"session opened.*peer=\[{p.b_addr}\]", timeout=2)
            assert_no_secret(s, c)
