"""vt <-> vt over UDP cuts TCP super-packets in user space (issue 19, feature ``g``).

Both ends open their tun with segmentation offload (``split=True`` on both ``session up``
lines), each datagram still carries one packet: iperf3 runs both ways, a 20 MB file
crosses byte-identical over an underlay that loses 5 % of its packets (nftables
``numgen random``) and over one that loses and reorders (``tests/faults/reorder.py`` on
NFQUEUE), in plain and secure mode, and tcpdump on the underlay sees no IP fragment.
An old vt client (no ``gso`` token) gets the old path.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from netns import HarnessError, iperf3, loss, transfer_file, two_hosts, wait_ping
from peers import VtClient, VtServer
from secure_tools import add_devices, client_conf, log_lines, no_crash, server_conf

pytestmark = pytest.mark.netns

REORDER = Path(__file__).resolve().parent / "faults" / "reorder.py"
FILE = 20 << 20


def _field(line: str, key: str) -> str:
    m = re.search(rf"\b{key}=(\S+)", line)
    assert m, f"no {key}= in {line!r}"
    return m.group(1)


def _session_up(peers, **want: str) -> None:
    """Each peer's "session up" line has these fields."""
    for peer in peers:
        line = peer.wait_log(r"session up.*").group(0)
        for key, value in want.items():
            assert _field(line, key) == value, line


class Fragments:
    """IPv4 fragments arriving on a namespace's veth0, counted by an nftables rule on the
    netdev ingress hook (before any reassembly): ``ip frag-off & 0x3fff != 0`` (MF or an
    offset), and every UDP packet beside it, so that a count of 0 means something."""

    TABLE = "vtfrag"

    def __init__(self, ns) -> None:
        self.ns = ns
        ns.run("nft", "-f", "-", input=(
            f"table netdev {self.TABLE} {{\n"
            f'  chain in {{ type filter hook ingress device "veth0" priority -500; '
            f"policy accept;\n"
            f"    ip frag-off & 0x3fff != 0 counter\n"
            f"    meta l4proto udp counter\n  }}\n}}\n"))

    def counts(self) -> tuple[int, int]:
        """(fragments, UDP packets) seen so far."""
        out = self.ns.run("nft", "-j", "list", "table", "netdev", self.TABLE).stdout
        counters = [e["rule"]["expr"][-1]["counter"]["packets"]
                    for e in json.loads(out)["nftables"] if "rule" in e]
        return counters[0], counters[1]


def _reorder(ns, seed: int) -> subprocess.Popen:
    proc = ns.popen(sys.executable, REORDER, "--dev", "veth0", "--loss", 0.05,
                    "--reorder", 0.25, "--seed", seed, "--seconds", 300,
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    text=True)
    line = proc.stdout.readline()
    if '"ready"' not in line:
        proc.kill()
        raise HarnessError(f"reorder.py did not start: {line!r} {proc.stderr.read()!r}")
    return proc


def _stop_reorder(proc: subprocess.Popen) -> str:
    try:
        proc.stdin.close()
        out = proc.stdout.readline()
        proc.wait(timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        proc.kill()
        proc.wait(timeout=5)
        out = ""
    return out.strip()


@pytest.mark.parametrize("encrypt", [None, "aead"], ids=["plain", "aead"])
def test_udp_cuts_super_packets_and_survives_loss_and_reordering(encrypt: str | None) -> None:
    with two_hosts() as p:
        ta, tb = add_devices(p, "tun", mtu=1400)
        with VtServer(p.a, server_conf(proto="udp", encrypt=encrypt)) as s, \
                VtClient(p.b, client_conf(encrypt=encrypt), "t1", p.a_addr) as c:
            wait_ping(p.b, ta, timeout=15)
            _session_up((s, c), split="True", runs="True", proto="udp")
            frags = [Fragments(p.a), Fragments(p.b)]
            for rev in (False, True):
                r = iperf3(p.a, p.b, ta, seconds=2, reverse=rev)
                print(f"iperf3 {encrypt or 'plain'} {'rev' if rev else 'fwd'}: "
                      f"{r['bits_per_second'] / 1e6:.0f} Mbit/s")
                assert r["bits_per_second"] > 50e6
            assert transfer_file(p.b, p.a, ta, nbytes=3 << 20)
            for f in frags:
                fragments, udp = f.counts()
                assert udp > 1000 and fragments == 0, (fragments, udp)
            # The rule does see fragments: one datagram larger than the veth's MTU.
            p.b.run(sys.executable, "-c", "import socket, sys; socket.socket(socket.AF_INET, "
                    "socket.SOCK_DGRAM).sendto(bytes(3000), (sys.argv[1], 9))", p.a_addr)
            assert frags[0].counts()[0] >= 2
            loss(p.a, "veth0", 5)
            try:
                assert transfer_file(p.b, p.a, ta, nbytes=FILE, timeout=150)
                assert transfer_file(p.a, p.b, tb, nbytes=FILE, timeout=150)
            finally:
                loss(p.a, "veth0", 0)
            procs = [_reorder(p.a, 1), _reorder(p.b, 2)]
            try:
                assert transfer_file(p.b, p.a, ta, nbytes=FILE, timeout=150)
            finally:
                counts = [_stop_reorder(proc) for proc in procs]
            print("reorder.py:", counts)
            assert all('"reordered"' in c for c in counts), counts
            assert s.alive() and c.alive()
            c.stop()
            line = log_lines(c.log(), "session closed")[-1]
            assert int(_field(line, "dropped_device")) == 0, line
            no_crash(s, c)


@pytest.mark.parametrize("encrypt", [None, "aead"], ids=["plain", "aead"])
def test_ether_over_udp_goes_as_marked_segments(encrypt: str | None) -> None:
    """tap: the marks sit after the Ethernet header; ARP and the rest pass as frames."""
    with two_hosts() as p:
        ta, tb = add_devices(p, "ether", mtu=1400)
        with VtServer(p.a, server_conf(proto="udp", type_="ether", encrypt=encrypt)) as s, \
                VtClient(p.b, client_conf(encrypt=encrypt), "t1", p.a_addr) as c:
            wait_ping(p.b, ta, timeout=15)
            _session_up((s, c), type="ether", runs="True")
            assert transfer_file(p.b, p.a, ta, nbytes=4 << 20)
            assert transfer_file(p.a, p.b, tb, nbytes=4 << 20)
            assert s.alive() and c.alive()
            c.stop()
            line = log_lines(c.log(), "session closed")[-1]
            assert int(_field(line, "dropped_device")) == 0, line
            no_crash(s, c)


@pytest.mark.parametrize(("encrypt", "fits"), [(None, 1270), ("aead", 1246)],
                         ids=["plain", "aead"])
def test_a_path_mtu_below_the_tunnels_is_learnt_never_fragmented(encrypt: str | None,
                                                                 fits: int) -> None:
    """The veths carry 1300-byte packets under a 1400-byte tunnel.  Between vt ends the
    datagrams go with DF: none is fragmented on the wire.  A packet that does not fit is
    answered "too big" into the device with the size that fits (1300 less the outer IP
    and UDP headers and the frame's header, 2 bytes, or the seal's 26), the inner TCP
    lowers its segments, and files cross both ways; an IPv4 packet without DF is cut into
    fragments inside the tunnel, as a router would."""
    with two_hosts() as p:
        for ns in (p.a, p.b):
            ns.run("ip", "link", "set", "veth0", "mtu", "1300")
        ta, tb = add_devices(p, "tun", mtu=1400)
        with VtServer(p.a, server_conf(proto="udp", encrypt=encrypt)) as s, \
                VtClient(p.b, client_conf(encrypt=encrypt), "t1", p.a_addr) as c:
            wait_ping(p.b, ta, timeout=15)
            frags = [Fragments(p.a), Fragments(p.b)]
            # Without DF, a packet that does not fit is cut into fragments inside the
            # tunnel, as a router would: the peer's kernel joins them, and its answer (no
            # DF either) comes back so.  (First: once told "too big" below, the kernel
            # fragments before the tunnel.)
            ping = p.b.run("ping", "-c", "3", "-i", "0.2", "-M", "dont", "-s", "1372",
                           "-W", "2", ta, check=False)
            assert " 0% packet loss" in ping.stdout, ping.stdout + ping.stderr
            # A ping with DF that does not fit: a router's answer, with the size that fits.
            ping = p.b.run("ping", "-c", "1", "-M", "do", "-s", "1372", "-W", "2", ta,
                           check=False)
            said = ping.stdout + ping.stderr
            assert f"mtu = {fits}" in said or f"mtu={fits}" in said, said
            assert transfer_file(p.b, p.a, ta, nbytes=3 << 20, timeout=60)
            assert transfer_file(p.a, p.b, tb, nbytes=3 << 20, timeout=60)
            for f in frags:  # (UDP GSO: a run of datagrams passes the veth as one packet)
                fragments, udp = f.counts()
                assert udp > 50 and fragments == 0, (fragments, udp)
            # The rule does see fragments: a datagram over the veth's MTU, without DF.
            p.b.run(sys.executable, "-c", "import socket, sys; socket.socket(socket.AF_INET, "
                    "socket.SOCK_DGRAM).sendto(bytes(3000), (sys.argv[1], 9))", p.a_addr)
            assert frags[0].counts()[0] >= 2
            assert s.alive() and c.alive()
            c.stop()
            line = log_lines(c.log(), "session closed")[-1]
            assert int(_field(line, "too_big")) >= 1, line
            assert int(_field(line, "fragmented")) >= 3, line
            no_crash(s, c)


MTU_FOLLOWER = r"""
import socket, subprocess, sys
import vtcore.transports.udp as udp
peer = (sys.argv[1], 9)
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.connect(peer)
link = udp.UdpLink(sock, udp.Endpoints("a", 1, "b", 9), connected=True, vt_peer=True)
seen = [link.max_payload]  # until asked, vtund's way: the framing's limit
assert link.follow_path_mtu()
seen.append(link.max_payload)
subprocess.run(["ip", "link", "set", "veth0", "mtu", "1200"], check=True)
udp.MTU_RECHECK = 0.0  # read it at the next send
link.send([b"x" * 100])
seen.append(link.max_payload)
subprocess.run(["ip", "link", "set", "veth0", "mtu", "1500"], check=True)
link.send([b"x" * 100])
seen.append(link.max_payload)
print(*seen)
"""


def test_the_path_mtu_is_followed_down_and_back_up() -> None:
    """A DF link reads the path MTU at the start and again while it sends: a lowered one
    shrinks ``max_payload``, and once the path takes more again, the session grows back
    (it never keeps the smallest it saw).  1300/1200/1500 less 28 (IP, UDP) and 2 (the
    frame's header)."""
    with two_hosts() as p:
        p.b.run("ip", "link", "set", "veth0", "mtu", "1300")
        out = p.b.run(sys.executable, "-c", MTU_FOLLOWER, p.a_addr).stdout.split()
        assert out == ["4095", "1270", "1170", "1470"], out


@pytest.mark.parametrize("extra", ["  compress zlib:2;\n", ""], ids=["zlib", "none"])
def test_after_a_frame_module_or_to_a_stream_device_datagrams_may_fragment(extra: str) -> None:
    """A tun whose MTU (1500) is the veth's: its full packets need datagrams over the path
    MTU.  With a module in the chain (a zlib stream: a frame it encoded must never be
    dropped) the link is not asked to keep within the path MTU: the kernel fragments, as
    for vtund, and the file crosses; without one, DF and "too big" (the sender adapts)."""
    with two_hosts() as p:
        ta, _ = add_devices(p, "tun")
        with VtServer(p.a, server_conf(proto="udp", encrypt=None, extra=extra)) as s, \
                VtClient(p.b, client_conf(encrypt=None), "t1", p.a_addr) as c:
            wait_ping(p.b, ta, timeout=15)
            frags = Fragments(p.a)
            assert transfer_file(p.b, p.a, ta, nbytes=1 << 20, timeout=30)
            fragments, _ = frags.counts()
            assert (fragments > 0) if extra else fragments == 0
            c.stop()
            line = log_lines(c.log(), "session closed")[-1]
            assert (int(_field(line, "too_big")) == 0) if extra else int(_field(line, "too_big")) >= 1
            assert int(_field(line, "dropped_decode")) == 0
            no_crash(s, c)


def test_a_client_without_the_token_gets_the_old_path() -> None:
    """What an old vt client sends (``HOST: t1 vt2``, no ``gso``): the server grants
    ``m`` only, and both ends carry whole packets from devices without offloads."""
    with two_hosts() as p:
        ta, tb = add_devices(p, "tun", mtu=1400)
        env_conf = client_conf(encrypt=None)
        with VtServer(p.a, server_conf(proto="udp", encrypt=None)) as s, \
                OldVtClient(p.b, env_conf, "t1", p.a_addr) as c:
            wait_ping(p.b, ta, timeout=15)
            _session_up((s, c), split="False", native="True")
            assert transfer_file(p.b, p.a, ta, nbytes=3 << 20)
            assert transfer_file(p.a, p.b, tb, nbytes=3 << 20)
            no_crash(s, c)


def test_a_client_without_marked_segments_gets_real_packets() -> None:
    """A client whose tun backend does not take marked segments (no ``runs`` token, a
    third-party backend or a vt from before them): ``g`` without ``r``, packets both
    ways, and a new server's device sends it real packets."""
    with two_hosts() as p:
        ta, tb = add_devices(p, "tun", mtu=1400)
        with VtServer(p.a, server_conf(proto="udp", encrypt=None)) as s, \
                NoRunsVtClient(p.b, client_conf(encrypt=None), "t1", p.a_addr) as c:
            wait_ping(p.b, ta, timeout=15)
            _session_up((s, c), split="True", runs="False")
            assert transfer_file(p.b, p.a, ta, nbytes=3 << 20)
            assert transfer_file(p.a, p.b, tb, nbytes=3 << 20)
            no_crash(s, c)


OLD_CLIENT = (
    "import sys, vtcore.runtime.client as cl\n"
    "tokens = cl.host_tokens\n"  # the client as it was: without these HOST tokens
    "cl.host_tokens = lambda *a, **k: tuple(t for t in tokens(*a, **k) if t not in {drop})\n"
    "sys.argv = ['vt'] + sys.argv[1:]\n"
    "from vtcore.cli import main\n"
    "main()\n"
)


class OldVtClient(VtClient):
    """vt's client with the ``gso`` HOST token taken out (a client from before it)."""

    kind = "vt-client-old"
    drop: tuple[str, ...] = ("gso", "runs")

    def start(self, timeout: float = 10):
        # In this process (the patch above), never in a worker (VT_TEST_WORKERS).
        self.config_text = self.config_text.replace("options {", "options { workers 0;", 1)
        return super().start(timeout)

    def argv(self) -> list[object]:
        return [sys.executable, "-c", OLD_CLIENT.format(drop=self.drop), *super().argv()[3:]]


class NoRunsVtClient(OldVtClient):
    """vt's client without the ``runs`` HOST token."""

    kind = "vt-client-noruns"
    drop = ("runs",)
