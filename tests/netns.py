"""Network-namespace test harness: two hosts joined by a veth pair, and traffic helpers.

Every interop test runs its peers in namespaces it creates here, so tunnel traffic only ever
reaches addresses inside those namespaces. Everything is bounded in time and torn down (and
checked gone) in ``finally`` blocks; processes are killed by PID / process group, never by name.
"""

from __future__ import annotations

import atexit
import hashlib
import ipaddress
import itertools
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

_counter = itertools.count(1)
_live: dict[str, Netns] = {}
_used_subnets: set[tuple[int, int]] = set()

NETNS_RUN_DIR = Path("/run/netns")


class HarnessError(RuntimeError):
    """A harness step failed (command error, timeout, leftover namespace or process)."""


def _env_requires() -> bool:
    return os.environ.get("VT_REQUIRE_NETNS") == "1"


def _skip_or_fail(reason: str) -> None:
    """Skip, unless CI demands these tests run (VT_REQUIRE_NETNS=1): then fail loudly."""
    if _env_requires():
        pytest.fail(f"VT_REQUIRE_NETNS=1 but {reason}", pytrace=False)
    pytest.skip(reason)


_netns_ok: bool | None = None


def netns_usable() -> bool:
    """True when we are root and can create and delete a network namespace (checked once)."""
    global _netns_ok
    if _netns_ok is None:
        _netns_ok = False
        if os.geteuid() == 0 and shutil.which("ip"):
            name = f"vtchk{os.getpid()}"
            try:
                made = subprocess.run(["ip", "netns", "add", name], capture_output=True, timeout=10)
                if made.returncode == 0:
                    ran = subprocess.run(
                        ["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
                        capture_output=True,
                        timeout=10,
                    )
                    _netns_ok = ran.returncode == 0
            except (OSError, subprocess.TimeoutExpired):
                _netns_ok = False
            finally:
                subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
    return _netns_ok


def requires_netns() -> None:
    """Skip the calling test without root/netns (fail instead when VT_REQUIRE_NETNS=1)."""
    if not netns_usable():
        _skip_or_fail("needs root and working `ip netns` (run as root)")


def _text(b: bytes | str | None) -> str:
    if b is None:
        return ""
    return b.decode(errors="replace") if isinstance(b, bytes) else b


class Netns:
    """One network namespace, with the processes started in it tracked for teardown."""

    def __init__(self, tag: str = "") -> None:
        self.name = f"vt{os.getpid()}{tag}{next(_counter)}"[:15]
        self._procs: list[subprocess.Popen] = []
        self.closed = False
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        _live[self.name] = self
        self.run("ip", "link", "set", "lo", "up")

    def __repr__(self) -> str:
        return f"Netns({self.name!r})"

    def _argv(self, argv: tuple[object, ...]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *map(str, argv)]

    def run(
        self,
        *argv: object,
        check: bool = True,
        timeout: float = 30,
        input: bytes | str | None = None,
    ) -> subprocess.CompletedProcess:
        """Run a command inside the namespace and wait for it (output captured as text)."""
        if isinstance(input, str):
            input = input.encode()
        try:
            cp = subprocess.run(self._argv(argv), capture_output=True, timeout=timeout, input=input)
        except subprocess.TimeoutExpired as e:
            raise HarnessError(f"[{self.name}] timed out after {timeout}s: {argv}") from e
        res = subprocess.CompletedProcess(
            cp.args, cp.returncode, _text(cp.stdout), _text(cp.stderr)
        )
        if check and res.returncode != 0:
            raise HarnessError(
                f"[{self.name}] {' '.join(map(str, argv))} -> exit {res.returncode}: "
                f"{res.stderr.strip() or res.stdout.strip()}"
            )
        return res

    def popen(self, *argv: object, **kw) -> subprocess.Popen:
        """Start a background process in the namespace, in its own process group (tracked)."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw["start_new_session"] = True
        proc = subprocess.Popen(self._argv(argv), **kw)
        self._procs.append(proc)
        return proc

    def add_tun(
        self,
        name: str,
        mode: str = "tun",
        addr: str | None = None,
        peer: str | None = None,
        mtu: int | None = None,
    ) -> str:
        """Create a persistent tun/tap device, address it and set it up; returns its name.

        vtund (and vt) open a pre-made device by name, so tests configure it before the peer
        starts instead of relying on ``up {}`` commands (which race the tunnel start).
        ``addr`` may carry a prefix ("10.1.2.1/24"); with ``peer`` it is a point-to-point pair.
        """
        if mode not in ("tun", "tap"):
            raise ValueError(f"mode must be 'tun' or 'tap', not {mode!r}")
        if len(name) > 15:
            raise ValueError(f"device name {name!r} is longer than 15 characters")
        self.run("ip", "tuntap", "add", "dev", name, "mode", mode)
        if mtu is not None:
            self.run("ip", "link", "set", "dev", name, "mtu", str(mtu))
        if addr is not None:
            cmd = ["ip", "addr", "add", addr]
            if peer is not None:
                cmd += ["peer", peer]
            if ":" in addr:
                cmd += ["nodad"]
            self.run(*cmd, "dev", name)
        self.run("ip", "link", "set", "dev", name, "up")
        return name

    def pids(self) -> list[int]:
        """PIDs of every process currently inside the namespace."""
        res = subprocess.run(
            ["ip", "netns", "pids", self.name], capture_output=True, text=True, timeout=10
        )
        return [int(p) for p in res.stdout.split() if p.isdigit()]

    def _kill_tracked(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 3
        for proc in self._procs:
            try:
                proc.wait(timeout=max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                try:
                    proc.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    pass
            # A group may still hold forked children after its leader exited.
            _signal_group(proc.pid, signal.SIGKILL)

    def close(self) -> None:
        """Kill our processes (by PID), delete the namespace and check it is really gone."""
        if self.closed:
            return
        self.closed = True
        try:
            self._kill_tracked()
            # Anything still inside this namespace was started (directly or not) by this test.
            for _ in range(20):
                left = self.pids()
                if not left:
                    break
                for pid in left:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.05)
            else:
                raise HarnessError(f"[{self.name}] processes survive teardown: {self.pids()}")
        finally:
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=10)
            _live.pop(self.name, None)
        if (NETNS_RUN_DIR / self.name).exists() or self.name in list_netns():
            raise HarnessError(f"namespace {self.name} still exists after delete")


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def list_netns() -> list[str]:
    """Names of all network namespaces visible to `ip netns`."""
    res = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    return [line.split()[0] for line in res.stdout.splitlines() if line.strip()]


@atexit.register
def _cleanup_leftovers() -> None:
    """Last resort if a test process dies between creating and closing a namespace."""
    for ns in list(_live.values()):
        try:
            ns.close()
        except Exception:  # best effort at interpreter exit
            pass


@dataclass
class Pair:
    """Two namespaces joined by veth; ``*_addr`` are the underlay addresses (no prefix)."""

    a: Netns
    b: Netns
    a_addr: str
    b_addr: str
    ipv6: bool
    octets: tuple[int, int]
    dev: str = "veth0"
    _inner: itertools.count = field(default_factory=lambda: itertools.count(0))

    def tunnel_addrs(self) -> tuple[str, str]:
        """A fresh pair of IPv4 addresses for the inside of a tunnel (10.X.Z.1, 10.X.Z.2)."""
        x, y = self.octets
        z = (y + 128 + next(self._inner)) % 256
        return f"10.{x}.{z}.1", f"10.{x}.{z}.2"

    def add_tunnel_devices(self, a_dev: str = "tsrv", b_dev: str = "tcli", mode: str = "tun",
                           mtu: int | None = None) -> tuple[str, str]:
        """Pre-made devices for a tunnel between A and B (tun: a point-to-point pair, tap: a
        /24), each up with a fresh inside address; returns those (A's, B's)."""
        ta, tb = self.tunnel_addrs()
        if mode == "tun":
            self.a.add_tun(a_dev, "tun", addr=ta, peer=tb, mtu=mtu)
            self.b.add_tun(b_dev, "tun", addr=tb, peer=ta, mtu=mtu)
        else:
            self.a.add_tun(a_dev, mode, addr=f"{ta}/24", mtu=mtu)
            self.b.add_tun(b_dev, mode, addr=f"{tb}/24", mtu=mtu)
        return ta, tb


def _pick_subnet() -> tuple[int, int]:
    for _ in range(1000):
        xy = (random.randint(16, 250), random.randrange(0, 128))
        if xy not in _used_subnets:
            _used_subnets.add(xy)
            return xy
    raise HarnessError("no free test subnet")


def _wait_addr_ready(ns: Netns, dev: str, addr: str, timeout: float = 5) -> None:
    """Wait until the device has carrier and ``addr`` is no longer tentative (DAD)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = ns.run("ip", "addr", "show", "dev", dev).stdout
        lines = [ln for ln in out.splitlines() if f" {addr}/" in ln]
        if "LOWER_UP" in out and lines and not any("tentative" in ln for ln in lines):
            return
        time.sleep(0.05)
    raise HarnessError(f"[{ns.name}] {dev} ({addr}) not ready after {timeout}s")


@contextmanager
def two_hosts(ipv6: bool = False) -> Iterator[Pair]:
    """Namespaces A and B joined by veth0 <-> veth0, addressed .1 and .2; always torn down."""
    x, y = _pick_subnet()
    made: list[Netns] = []
    try:
        a = Netns("a")
        made.append(a)
        b = Netns("b")
        made.append(b)
        # Create the veth ends directly inside the namespaces: nothing appears in the root ns.
        subprocess.run(
            ["ip", "link", "add", "veth0", "netns", a.name, "type", "veth",
             "peer", "name", "veth0", "netns", b.name],
            check=True, capture_output=True, timeout=10,
        )  # fmt: skip
        if ipv6:
            a_addr, b_addr, plen = f"fd{x:02x}:{y:x}::1", f"fd{x:02x}:{y:x}::2", 64
            # Canonical text, as `ip addr` prints it (y == 0 gives "fdXX::1", not "fdXX:0::1").
            a_addr, b_addr = (str(ipaddress.ip_address(a)) for a in (a_addr, b_addr))
        else:
            a_addr, b_addr, plen = f"10.{x}.{y}.1", f"10.{x}.{y}.2", 24
        for ns, addr in ((a, a_addr), (b, b_addr)):
            extra = ["nodad"] if ipv6 else []
            ns.run("ip", "addr", "add", f"{addr}/{plen}", "dev", "veth0", *extra)
            ns.run("ip", "link", "set", "veth0", "up")
        for ns, addr in ((a, a_addr), (b, b_addr)):
            _wait_addr_ready(ns, "veth0", addr)
        yield Pair(a=a, b=b, a_addr=a_addr, b_addr=b_addr, ipv6=ipv6, octets=(x, y))
    finally:
        errors = []
        for ns in reversed(made):
            try:
                ns.close()
            except HarnessError as e:
                errors.append(str(e))
        _used_subnets.discard((x, y))
        if errors:
            raise HarnessError("; ".join(errors))


# --------------------------------------------------------------------------------------------
# Traffic helpers


@dataclass
class PingResult:
    sent: int
    received: int
    rtts: list[float]

    @property
    def loss(self) -> float:
        return 1.0 - self.received / self.sent if self.sent else 1.0


_PING_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received")
_PING_RTT = re.compile(r"time[=<]([\d.]+) ms")


def ping(
    ns: Netns, addr: str, count: int = 3, interval: float = 0.2, timeout: float = 10
) -> PingResult:
    """Ping from inside ``ns``; never raises on loss (the result says what came back)."""
    res = ns.run(
        "ping", "-n", "-c", count, "-i", interval, "-W", 1,
        "-w", max(1, int(timeout)), addr,
        check=False, timeout=timeout + 5,
    )  # fmt: skip
    m = _PING_SUMMARY.search(res.stdout)
    if not m:
        raise HarnessError(f"[{ns.name}] ping {addr}: no summary: {res.stdout} {res.stderr}")
    rtts = [float(t) for t in _PING_RTT.findall(res.stdout)]
    return PingResult(int(m.group(1)), int(m.group(2)), rtts)


def _ping_failure(res: subprocess.CompletedProcess) -> str:
    """Why one ping got no reply, in a few words: an error of ``ip netns exec``/ping, an
    ICMP error ("Destination Host Unreachable" means ARP failed), or silence."""
    if res.stderr.strip():
        return res.stderr.strip().splitlines()[-1][:100]
    icmp = [ln for ln in res.stdout.splitlines() if ln.startswith("From ")]
    return icmp[-1][:100] if icmp else "no answer"


def wait_ping(ns: Netns, addr: str, timeout: float = 20) -> float:
    """Ping once per attempt until one reply arrives; returns seconds waited (bounded)."""
    start = time.monotonic()
    deadline = start + timeout
    last = ""
    while time.monotonic() < deadline:
        res = ns.run("ping", "-n", "-c", 1, "-W", 1, addr, check=False, timeout=5)
        if res.returncode == 0:
            return time.monotonic() - start
        last = _ping_failure(res)
        time.sleep(0.2)
    raise HarnessError(f"[{ns.name}] no ping reply from {addr} within {timeout}s (last: {last})")


def wait_listening(
    ns: Netns, port: int, proto: str = "tcp", timeout: float = 10, proc=None
) -> None:
    """Poll ``ss`` in the namespace until something listens on ``port`` (bounded)."""
    flag = "-ltnH" if proto == "tcp" else "-lunH"
    deadline = time.monotonic() + timeout
    pat = re.compile(rf":{port}\s")
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise HarnessError(f"[{ns.name}] process exited ({proc.returncode}) before listening")
        out = ns.run("ss", flag, check=False, timeout=5).stdout
        if any(pat.search(line + " ") for line in out.splitlines()):
            return
        time.sleep(0.05)
    raise HarnessError(f"[{ns.name}] nothing listening on {proto}/{port} after {timeout}s")


def free_port() -> int:
    """A random high port; namespaces are fresh, so collisions are only within one test."""
    return random.randint(20000, 60000)


@contextmanager
def busy_loopback_port() -> Iterator[int]:
    """A port on 127.0.0.1 that another socket listens on while the block runs: what a
    daemon asked to listen there must refuse."""
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        yield holder.getsockname()[1]


def _stop(proc: subprocess.Popen, timeout: float = 3) -> None:
    if proc.poll() is None:
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)


def iperf3_run(
    server_ns: Netns,
    client_ns: Netns,
    server_addr: str,
    client_args: Sequence[object] = (),
    seconds: float = 3,
    prefix: tuple[Sequence[object], Sequence[object]] = ((), ()),
) -> dict:
    """One iperf3 run, server ``-1`` in ``server_ns`` bound to ``server_addr``, client in
    ``client_ns`` with ``client_args`` added; its parsed JSON.  ``prefix`` goes before
    each command (server's, client's), e.g. ``taskset -c N``.  Raises HarnessError."""
    port = free_port()
    server = server_ns.popen(
        *prefix[0], "iperf3", "-s", "-1", "-p", port, "-B", server_addr,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_listening(server_ns, port, proc=server)
        res = client_ns.run(
            *prefix[1], "iperf3", "-c", server_addr, "-p", port, "-t", seconds, "-J",
            *client_args, check=False, timeout=seconds + 25,
        )  # fmt: skip
        try:
            data = json.loads(res.stdout)
        except json.JSONDecodeError as e:
            raise HarnessError(f"iperf3: bad JSON ({res.stderr.strip()[:200]})") from e
        if "error" in data:
            raise HarnessError(f"iperf3: {data['error']}")
        return data
    finally:
        _stop(server)


def iperf3(
    server_ns: Netns,
    client_ns: Netns,
    server_addr: str,
    seconds: int = 3,
    reverse: bool = False,
    udp: bool = False,
    bitrate: str | None = None,
    length: int | None = None,
) -> dict:
    """One iperf3 run (server ``-1`` in ``server_ns``); returns the key numbers and raw JSON."""
    args: list[object] = []
    if reverse:
        args.append("-R")
    if udp:
        args.append("-u")
    if bitrate:
        args += ["-b", bitrate]
    if length:
        args += ["-l", length]
    data = iperf3_run(server_ns, client_ns, server_addr, args, seconds)
    end = data["end"]
    if udp:
        s = end["sum"]
        out = {
            "bits_per_second": s["bits_per_second"],
            "lost_percent": s.get("lost_percent", 0.0),
            "lost_packets": s.get("lost_packets", 0),
            "packets": s.get("packets", 0),
            "jitter_ms": s.get("jitter_ms", 0.0),
        }
    else:
        out = {
            "bits_per_second": end["sum_received"]["bits_per_second"],
            "sent_bits_per_second": end["sum_sent"]["bits_per_second"],
            "bytes": end["sum_received"]["bytes"],
            "retransmits": end["sum_sent"].get("retransmits", 0),
            "lost_percent": 0.0,
        }
    out["raw"] = data
    return out


_RECV_SCRIPT = r"""
import hashlib, socket, sys
addr, port, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
srv = socket.create_server((addr, port), family=fam)
srv.settimeout(limit)
conn, _ = srv.accept()
conn.settimeout(limit)
h, n = hashlib.sha256(), 0
while True:
    chunk = conn.recv(65536)
    if not chunk:
        break
    h.update(chunk)
    n += len(chunk)
conn.close()
print(n, h.hexdigest(), flush=True)
"""

_SEND_SCRIPT = r"""
import socket, sys
addr, port, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
data = sys.stdin.buffer.read()
s = socket.create_connection((addr, port), timeout=limit)
s.sendall(data)
s.shutdown(socket.SHUT_WR)
s.settimeout(limit)
while s.recv(4096):
    pass
s.close()
"""


def transfer_file(
    src_ns: Netns, dst_ns: Netns, dst_addr: str, nbytes: int = 1 << 20, timeout: float = 30,
    data: bytes | None = None,
) -> bool:
    """Send ``data`` (default: ``nbytes`` random bytes) over TCP from src to dst; True if
    sha256 and size match."""
    data = os.urandom(nbytes) if data is None else data
    nbytes = len(data)
    port = free_port()
    recv = dst_ns.popen(
        sys.executable, "-c", _RECV_SCRIPT, dst_addr, port, timeout,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_listening(dst_ns, port, proc=recv)
        send = src_ns.run(
            sys.executable, "-c", _SEND_SCRIPT, dst_addr, port, timeout,
            input=data, check=False, timeout=timeout + 5,
        )  # fmt: skip
        out, err = recv.communicate(timeout=timeout + 5)
        if send.returncode != 0 or recv.returncode != 0:
            raise HarnessError(
                f"transfer failed: sender {send.stderr.strip()!r} receiver {_text(err).strip()!r}"
            )
        n, digest = _text(out).split()
        return int(n) == nbytes and digest == hashlib.sha256(data).hexdigest()
    finally:
        _stop(recv)


def loss(ns: Netns, dev: str, percent: int, method: str = "nft") -> None:
    """Drop ``percent``% of packets entering and leaving ``dev`` at random; 0 removes it.

    nftables ``numgen random mod 100 < N drop`` is the default (works without sch_netem);
    ``method="netem"`` uses ``tc qdisc netem loss`` (egress only) where the kernel has it.
    """
    if not 0 <= percent <= 100:
        raise ValueError(f"percent must be 0..100, not {percent}")
    table = f"vtloss_{dev}".replace("-", "_")
    if method == "netem":
        ns.run("tc", "qdisc", "del", "dev", dev, "root", check=False)
        if percent:
            ns.run("tc", "qdisc", "add", "dev", dev, "root", "netem", "loss", f"{percent}%")
        return
    if method != "nft":
        raise ValueError(f"method must be 'nft' or 'netem', not {method!r}")
    ns.run("nft", "delete", "table", "inet", table, check=False)
    if percent:
        match = "" if percent == 100 else f"numgen random mod 100 < {percent} "
        rules = (
            f"table inet {table} {{\n"
            f"  chain in {{ type filter hook input priority -300; policy accept;\n"
            f'    iifname "{dev}" {match}drop\n  }}\n'
            f"  chain out {{ type filter hook output priority -300; policy accept;\n"
            f'    oifname "{dev}" {match}drop\n  }}\n'
            f"}}\n"
        )
        ns.run("nft", "-f", "-", input=rules)


def netem_available() -> bool:
    """True when the kernel offers the netem qdisc (often missing in containers)."""
    return Path("/sys/module/sch_netem").exists()
