"""``nat_hack`` (alias ``delay_udp``) through a real NAT, vt and vtund in both roles.

Over UDP each end learns the other's port from the TCP port exchange: the port the client
*bound*.  Behind a NAT that rewrites the client's UDP source port, that port is wrong, and
a server that connects its socket to it never hears the client.  With ``nat_hack server``
the server waits for the client's first datagram and connects to where it came from
(spec section 3.3).  Here host B masquerades its UDP to the server onto other ports, so a
tunnel only works if the server really takes the client's address from the datagram.
``nat_hack client`` is the mirror image: a server whose replies leave from another port.
"""

from __future__ import annotations

import re

import pytest
from behaviour import HOST, assert_no_secret, conf, status_docs
from netns import Netns, Pair, ping, two_hosts, wait_ping
from peers import CLIENTS, SERVERS

V = pytest.mark.vtund
NAT_PORTS = (41000, 41099)
SERVER_NAT_PORTS = (42000, 42099)


def masquerade_udp(ns: Netns, match: str, ports: tuple[int, int],
                   unsolicited: str | None = None) -> None:
    """Make ``ns`` a NAT for the UDP it sends that ``match``es (an nft expression): the
    source port is rewritten into ``ports``.  With ``unsolicited`` (another), a datagram
    that matches it and starts a flow (one the NAT has no mapping for) is dropped, as a
    real NAT drops it."""
    lo, hi = ports
    drop = "" if unsolicited is None else (
        "  chain pre { type filter hook prerouting priority -150; policy accept;\n"
        f"    {unsolicited} ct state new drop\n  }}\n"
    )
    ns.run("nft", "-f", "-", input=(
        "table ip vtnat {\n"
        "  chain post { type nat hook postrouting priority srcnat; policy accept;\n"
        f"    {match} masquerade to :{lo}-{hi}\n  }}\n"
        f"{drop}}}\n"
    ))  # fmt: skip


def client_behind_nat(p: Pair) -> None:
    """Host B behind a NAT, as seen by the server on A at port 5000."""
    masquerade_udp(p.b, f"ip daddr {p.a_addr} udp dport 5000", NAT_PORTS,
                   unsolicited=f"ip saddr {p.a_addr} udp sport 5000")


@pytest.mark.netns
@pytest.mark.parametrize("server, client, encrypt", [
    ("vt", "vt", None),
    ("vt", "vt", "aead"),  # secure mode: the peer comes from a datagram that authenticates
    pytest.param("vt", "vtund", None, marks=V),
    pytest.param("vtund", "vt", None, marks=V),
])  # fmt: skip
def test_nat_hack_server_finds_a_client_behind_nat(
    server: str, client: str, encrypt: str | None, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("VT_RUN_DIR", str(tmp_path))
    enc = {"encrypt": encrypt} if encrypt else {}
    with two_hosts() as p:
        ta, tb = p.add_tunnel_devices()
        client_behind_nat(p)
        scfg = conf(HOST, type="tun", proto="udp", device="tsrv", nat_hack="server", **enc)
        ccfg = conf(HOST, device="tcli", **enc)
        with SERVERS[server](p.a, scfg) as s, CLIENTS[client](p.b, ccfg, HOST, p.a_addr) as c:
            wait_ping(p.b, ta, timeout=15)
            assert ping(p.a, tb, count=5, interval=0.1).received == 5
            if server == "vt":
                # The session's UDP peer is the NAT's port, not the one the client bound.
                line = s.wait_log(r"udp peer learnt[^\n]*", timeout=2).group(0)
                port = int(re.search(r"port=(\d+)", line).group(1))
                assert NAT_PORTS[0] <= port <= NAT_PORTS[1], line
                (session,) = status_docs()[s.proc.pid]["sessions"]
                assert session["udp_peer"] == f"{p.b_addr}:{port}", session
            if encrypt:
                s.wait_log(r"secure mode established", timeout=2)
            assert s.alive() and c.alive()
            assert_no_secret(s, c)


@pytest.mark.netns
def test_without_nat_hack_the_same_nat_breaks_the_tunnel() -> None:
    """The control: the NAT above really hides the client's bound port, so the test above
    fails if a server ignores ``nat_hack``."""
    with two_hosts() as p:
        ta, tb = p.add_tunnel_devices()
        client_behind_nat(p)
        scfg = conf(HOST, type="tun", proto="udp", device="tsrv")
        ccfg = conf(HOST, device="tcli")
        with SERVERS["vt"](p.a, scfg) as s, CLIENTS["vt"](p.b, ccfg, HOST, p.a_addr) as c:
            s.wait_log(r"session up", timeout=15)
            assert ping(p.b, ta, count=3, interval=0.2, timeout=3).received == 0
            # Neither crashes.  The server's datagrams hit the NAT's closed port and its
            # ICMP errors start dead-peer probes: the client (not persistent) may have
            # ended its session already, cleanly, as its peer did not answer.
            assert s.alive()
            assert c.alive() or "peer did not answer a probe" in c.log(), c.log()[-2000:]


@pytest.mark.netns
@pytest.mark.parametrize("server", ["vt", pytest.param("vtund", marks=V)])
def test_nat_hack_client_finds_a_server_behind_nat(server: str) -> None:
    with two_hosts() as p:
        ta, tb = p.add_tunnel_devices()
        lo, hi = SERVER_NAT_PORTS
        # The server's host sends its UDP to the client from another port.
        masquerade_udp(p.a, f"ip daddr {p.b_addr} udp sport 5000", SERVER_NAT_PORTS)
        scfg = conf(HOST, type="tun", proto="udp", device="tsrv")
        ccfg = conf(HOST, device="tcli", nat_hack="client")
        with SERVERS[server](p.a, scfg) as s, CLIENTS["vt"](p.b, ccfg, HOST, p.a_addr) as c:
            wait_ping(p.b, ta, timeout=15)
            assert ping(p.a, tb, count=5, interval=0.1).received == 5
            line = c.wait_log(r"udp peer learnt[^\n]*", timeout=2).group(0)
            port = int(re.search(r"port=(\d+)", line).group(1))
            assert lo <= port <= hi, line
            assert s.alive() and c.alive()
