"""Either end dies (SIGKILL) and restarts: the tunnel is back within seconds, not minutes.

* The server dies mid-traffic and is back 2 s later: a persistent client over UDP hears
  ICMP port-unreachable, probes, gets no answer within ~3 s, reconnects at once (over
  TCP it sees the connection reset).  Pings pass again within 5 s of the restart.
* The client dies and restarts: the server probes the old session of that host when the
  new, authenticated connection comes; the dead peer does not answer, so the old session
  ends (``down`` once, device and lock released) before the new one comes ``up``,
  whatever ``multi`` says.
* A forged ICMP port-unreachable alone ends nothing: it only starts a probe that a live
  peer (vt or vtund) answers.

Before this (issue 16): 179.7 s after a server restart and 187.4 s after a client
restart over UDP, the keep-alive's (4+2)*31 s.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import time

import pytest
from behaviour import HOST, assert_no_secret, conf, status_docs, tmpdir, wait_for
from netns import HarnessError, Netns, two_hosts, wait_ping
from peers import VtClient, VtServer, VtundClient, VtundServer

BACK_WITHIN = 5.0
"""Seconds after the restart by which pings must pass again (the issue's target)."""


def _updown(path) -> dict[str, list[str]]:
    return {
        "up": [f"program /bin/sh \"-c 'echo up >> {path}'\" wait"],
        "down": [f"program /bin/sh \"-c 'echo down >> {path}'\" wait"],
    }


def _marks(path) -> list[str]:
    try:
        return path.read_text().split()
    except FileNotFoundError:
        return []


def _kill9(peer) -> None:
    """SIGKILL the daemon and everything in its process group (vtund's session child)."""
    os.killpg(peer.proc.pid, signal.SIGKILL)
    peer.proc.wait(timeout=5)


def _traffic(ns: Netns, addr: str):
    """Pings every 0.2 s in the background: the tunnel is carrying traffic."""
    return ns.popen("ping", "-n", "-q", "-i", "0.2", "-w", "60", addr,
                    stdout=open(os.devnull, "wb"), stderr=open(os.devnull, "wb"))


def _wait_back(ns: Netns, addr: str, since: float, timeout: float = BACK_WITHIN + 10) -> float:
    """Seconds from ``since`` to the first ping answered through the tunnel; pings every
    0.1 s (``wait_ping``'s one-second attempts would blur the figure)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        res = ns.run("ping", "-n", "-c", 1, "-W", 0.3, addr, check=False, timeout=5)
        if res.returncode == 0:
            return time.monotonic() - since
        time.sleep(0.05)
    raise HarnessError(f"[{ns.name}] no ping reply from {addr} within {timeout}s")


def _connecting(ns: Netns, server_addr: str) -> float | None:
    """When a TCP connection to the server's port 5000 is seen from ``ns`` (else None)."""
    out = ns.run("ss", "-Htn", "state", "established", "dst", f"{server_addr}:5000").stdout
    return time.monotonic() if out.strip() else None


def _stop(proc) -> None:
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=5)


class PersistClient(VtClient):
    def argv(self):
        return [*super().argv(), "-p"]


@pytest.mark.netns
@pytest.mark.parametrize(("server", "proto"), [
    ("vt", "udp"), ("vt", "tcp"), ("vt-secure", "udp"),
    pytest.param("vtund", "udp", marks=pytest.mark.vtund)])
def test_server_killed_mid_traffic_client_back_within_seconds(server: str, proto: str) -> None:
    """The vt client's probe works against vtund too (it answers echo requests), and in
    secure mode (sealed echo requests and answers)."""
    server_cls = VtundServer if server == "vtund" else VtServer
    secure = {"encrypt": "aead"} if server == "vt-secure" else {}
    with two_hosts() as p:
        ta, tb = p.add_tunnel_devices()
        scfg = conf(HOST, type="tun", proto=proto, device="tsrv", keepalive="yes", **secure)
        ccfg = conf(HOST, device="tcli", keepalive="yes", **secure)
        s = server_cls(p.a, scfg).start()
        try:
            with PersistClient(p.b, ccfg, HOST, p.a_addr) as c:
                wait_ping(p.b, ta, timeout=10)
                pings = _traffic(p.b, ta)
                try:
                    _kill9(s)
                    time.sleep(2.0)
                    s.stop()
                    s._dir.cleanup()
                    restarted = time.monotonic()
                    s = server_cls(p.a, scfg).start()
                    back_after = _wait_back(p.b, ta, restarted)
                finally:
                    _stop(pings)
                print(f"{server} {proto}: back {back_after:.2f} s after the restart")
                assert back_after < BACK_WITHIN, back_after
                if proto == "udp":
                    assert re.search(r"session closed.*did not answer a probe", c.log())
                assert len(re.findall(r"session up", c.log())) == 2
                assert len(re.findall(r"secure mode established", c.log())) == (2 if secure else 0)
                assert_no_secret(s, c)
        finally:
            s.stop()
            s._dir.cleanup()


@pytest.mark.netns
@pytest.mark.parametrize(("client", "proto", "multi"), [
    ("vt", "udp", "yes"), ("vt", "udp", "no"), ("vt", "tcp", "no"),
    pytest.param("vtund", "udp", "no", marks=pytest.mark.vtund)])
def test_client_killed_server_replaces_dead_session(client: str, proto: str, multi: str) -> None:
    client_cls = VtundClient if client == "vtund" else VtClient
    d = tmpdir()
    marks = d / "server-updown"
    lock = d / "locks" / HOST
    try:
        with two_hosts() as p:
            ta, tb = p.add_tunnel_devices()
            scfg = conf(HOST, vt_options={"lockdir": d / "locks"}, type="tun", proto=proto,
                        device="tsrv", keepalive="yes", multi=multi, **_updown(marks))
            ccfg = conf(HOST, device="tcli", keepalive="yes")
            with VtServer(p.a, scfg) as s:
                c = client_cls(p.b, ccfg, HOST, p.a_addr).start()
                try:
                    wait_ping(p.b, ta, timeout=10)
                    assert _marks(marks) == ["up"]
                    if multi == "no":
                        assert lock.read_text().strip() == str(s.proc.pid)
                    _kill9(c)
                    c.stop()
                    c._dir.cleanup()
                    started = time.monotonic()
                    c = client_cls(p.b, ccfg, HOST, p.a_addr).start()
                    # From the moment the new client reaches the server: the interpreter's
                    # start-up (1-2 s on a loaded machine) is not the server's doing.
                    connected = wait_for(lambda: _connecting(p.b, p.a_addr), 10,
                                         "the new client's connection")
                    back_after = _wait_back(p.b, ta, connected)
                    print(f"{client} {proto} multi {multi}: back {back_after:.2f} s after the new "
                          f"client connected, {connected - started:.2f} s start-up")
                    assert back_after < BACK_WITHIN, back_after
                    # The old session ended first (down once), then the new one came up.
                    wait_for(lambda: _marks(marks) == ["up", "down", "up"], 5,
                             "down then up")
                    log = s.log()
                    assert "Device or resource busy" not in log
                    assert "denied" not in log
                    if proto == "udp":
                        assert "replacing a session whose peer does not answer" in log
                    if multi == "no":
                        assert lock.read_text().strip() == str(s.proc.pid)
                    assert len(re.findall(r"session closed", log)) == 1
                    assert c.alive()
                    assert_no_secret(s, c)
                finally:
                    c.stop()
                    c._dir.cleanup()
                # The second session ends with the client: down once more, lock gone.
                wait_for(lambda: _marks(marks) == ["up", "down", "up", "down"], 5,
                         "second down")
                wait_for(lambda: not lock.exists(), 5, "lock released")
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------------ forged ICMP errors

FORGE_ICMP = r"""
import socket, struct, sys, time
src, sport, dst, dport, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])

def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF

# The datagram the victim "sent": its own socket's address to its peer's.
inner = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, 17, 0,
                    socket.inet_aton(src), socket.inet_aton(dst))
inner += struct.pack("!HHHH", sport, dport, 8, 0)
body = struct.pack("!BBHI", 3, 3, 0, 0) + inner  # destination unreachable, port
icmp = body[:2] + struct.pack("!H", csum(body)) + body[4:]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
for _ in range(count):
    s.sendto(icmp, (src, 0))
    time.sleep(0.2)
"""


def _udp_ends(ns: Netns, peer_addr: str) -> tuple[str, int]:
    """The local address and port of the connected UDP socket talking to ``peer_addr``."""
    out = ns.run("ss", "-Hnu", "state", "established").stdout
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[-1].startswith(f"{peer_addr}:"):
            addr, port = fields[-2].rsplit(":", 1)
            return addr, int(port)
    raise HarnessError(f"no connected UDP socket to {peer_addr}: {out}")


def _client_counters(c) -> dict:
    for doc in status_docs().values():
        if doc.get("role") == "client" and doc.get("pid") == c.proc.pid:
            return doc["sessions"][0]["counters"] if doc["sessions"] else {}
    return {}


@pytest.mark.netns
@pytest.mark.parametrize("server", ["vt", pytest.param("vtund", marks=pytest.mark.vtund)])
def test_forged_icmp_alone_does_not_end_a_live_session(server: str) -> None:
    with two_hosts() as p:
        ta, tb = p.add_tunnel_devices()
        scfg = conf(HOST, type="tun", proto="udp", device="tsrv", keepalive="yes")
        ccfg = conf(HOST, device="tcli", keepalive="yes", persist="yes")
        server_cls = VtundServer if server == "vtund" else VtServer
        with server_cls(p.a, scfg) as s, VtClient(p.b, ccfg, HOST, p.a_addr) as c:
            wait_ping(p.b, ta, timeout=10)
            addr, port = _udp_ends(p.b, p.a_addr)
            # 30 forged errors over 6 s, from the server's host (anyone could send them):
            # twice the probe's time-out, so a probe that the peer's answers did not end
            # would end the session.
            p.a.run(sys.executable, "-c", FORGE_ICMP, addr, port, p.a_addr, 5000, 30,
                    timeout=20)
            wait_ping(p.b, ta, timeout=3)
            counters = _client_counters(c)
            assert counters.get("probes", 0) >= 2, counters
            log = c.log()
            assert "session closed" not in log, log
            assert len(re.findall(r"session up", log)) == 1
            assert s.alive() and c.alive()
            assert_no_secret(c)
