"""Tunnels under test, each set up inside a two-namespace :class:`netns.Pair`.

A tunnel is a context manager yielding a :class:`Tunnel`: the inner addresses to aim
traffic at and the PIDs of the daemons on each side.  Host A (``pair.a``) is the server,
host B the client.  Every side may be pinned to one CPU (``taskset``) so that each
"host" has one core of its own, daemons and traffic tools alike.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from netns import HarnessError, Netns, Pair, free_port, wait_ping
from peers import VtClient, VtServer, VtundClient, VtundServer, _killpg, vtund_conf
from procstat import tree

TUNNEL_MTU = 1400
"""Inner MTU of every tunnel, so that UDP-carried frames fit the 1500-byte veth unfragmented."""

HOST = "bench1"


class BenchError(RuntimeError):
    """A tunnel did not come up or a measurement failed; the case is reported, not fatal."""


@dataclass(frozen=True)
class Config:
    """One tunnel configuration of the matrix."""

    dev: str  # "tun" | "ether"
    proto: str  # "tcp" | "udp"
    module: str  # "none" | "lzo:1" | "zlib:1" | "aes128cbc" | "aead" (vt secure mode)

    @property
    def key(self) -> str:
        return f"{self.dev}/{self.proto}/{self.module}"

    def vtund_settings(self) -> dict[str, object]:
        s: dict[str, object] = {"type": self.dev, "proto": self.proto}
        if self.module.startswith(("lzo", "zlib")):
            s["compress"] = self.module
        elif self.module != "none":
            s["encrypt"] = self.module
        return s


@dataclass
class Tunnel:
    """What a measurement needs: where to send traffic and which PIDs to account."""

    impl: str
    a: Netns
    b: Netns
    a_ip: str
    b_ip: str
    cpu_a: int | None
    cpu_b: int | None
    a_roots: list[int] = field(default_factory=list)
    b_roots: list[int] = field(default_factory=list)
    log: object = None  # callable returning daemon logs, for error reports

    def alive(self) -> bool:
        return all(tree([p]) for p in self.a_roots + self.b_roots)


def pin(cpu: int | None) -> list[object]:
    """argv prefix running a command on one CPU (nothing when unpinned)."""
    return ["taskset", "-c", cpu] if cpu is not None else []


def _pinned(cls: type, cpu: int | None) -> type:
    """A peer driver class whose daemon runs under ``taskset`` (exec chain keeps the PID)."""

    class Pinned(cls):  # type: ignore[misc, valid-type]
        def argv(self) -> list[object]:
            return [*pin(cpu), *super().argv()]

    Pinned.__name__ = f"Pinned{cls.__name__}"
    return Pinned


def _devices(pair: Pair, dev: str) -> tuple[str, str, str, str]:
    """Pre-made tun or tap devices on both sides (vtund dies of EIO on unconfigured ones)."""
    ia, ib = pair.add_tunnel_devices("btA", "btB", mode="tun" if dev == "tun" else "tap",
                                      mtu=TUNNEL_MTU)
    return ia, ib, "btA", "btB"


def _drop_devices(pair: Pair) -> None:
    for ns, name in ((pair.a, "btA"), (pair.b, "btB")):
        ns.run("ip", "link", "del", name, check=False)


@contextmanager
def raw(pair: Pair, cpus: tuple[int | None, int | None]) -> Iterator[Tunnel]:
    """The bare veth: the ceiling every tunnel is measured against."""
    yield Tunnel("raw", pair.a, pair.b, pair.a_addr, pair.b_addr, *cpus)


MIXED = ("vt-vtund", "vtund-vt")
"""Mixed pairs, named server-client: vt must never be the bottleneck against vtund."""


def sides(impl: str) -> tuple[str, str]:
    """Which program ("vt" or "vtund") runs the server and which the client of an impl."""
    if impl in MIXED:
        srv, cli = impl.split("-")
        return srv, cli
    if impl in ("vtund", "vt", "vt-compat", "vt-1p"):
        return ("vtund", "vtund") if impl == "vtund" else ("vt", "vt")
    raise ValueError(f"unknown impl {impl!r}")


@contextmanager
def vtun_family(
    impl: str, pair: Pair, cfg: Config, cpus: tuple[int | None, int | None], timeout: float = 15
) -> Iterator[Tunnel]:
    """vtund <-> vtund, vt <-> vt, vt <-> vt with ``vtmode no`` (impl "vt-compat"), or mixed.

    vt <-> vt negotiates vt-native features (on TCP large frames and offloads, on both
    compression that skips what does not shrink: see vtcore.runtime.native); "vt-compat" turns them off to compare the same wire as vtund.
    The mixed impls are named server-client: "vt-vtund" is a vt server with a vtund client,
    "vtund-vt" the reverse; vt as shipped there, which finds a vtun peer and speaks vtun.
    """
    ia, ib, da, db = _devices(pair, cfg.dev)
    port = free_port()
    scfg = vtund_conf(HOST, options={"port": port}, device=da, **cfg.vtund_settings())
    ccfg = vtund_conf(HOST, options={"port": port}, device=db)
    if cfg.module == "aead":
        # Secure mode must be asked for by both ends (a client never falls back to it).
        ccfg = ccfg.replace(f"  device {db};", f"  device {db};\n  encrypt aead;")
    if impl == "vt-compat":
        # vtun framing, one packet per frame: exactly what vtund would be sent; and on
        # both ends no joining of received segments (gro) either.
        scfg = scfg.replace(f"  device {da};", f"  device {da};\n  vtmode no;")
        ccfg = ccfg.replace(f"  device {db};", f"  device {db};\n  vtmode no;")
    if impl == "vt-1p":
        # One process each end: what vt was before workers became its default.
        scfg = scfg.replace("options {", "options {\n  workers 0;", 1)
        ccfg = ccfg.replace("options {", "options {\n  workers 0;", 1)
    srv_side, cli_side = sides(impl)
    srv_cls = VtundServer if srv_side == "vtund" else VtServer
    cli_cls = VtundClient if cli_side == "vtund" else VtClient
    server = _pinned(srv_cls, cpus[0])(pair.a, scfg, port=port)
    client = _pinned(cli_cls, cpus[1])(pair.b, ccfg, HOST, pair.a_addr, port=port)
    try:
        try:
            server.start(timeout=timeout)
            client.start(timeout=timeout)
            wait_ping(pair.b, ia, timeout=timeout)
        except HarnessError as e:
            raise BenchError(f"{impl} {cfg.key} did not come up: {_short(e)}") from None
        assert server.proc is not None and client.proc is not None

        def logs() -> str:
            return f"--- server ---\n{server.log()}\n--- client ---\n{client.log()}"

        yield Tunnel(
            impl, pair.a, pair.b, ia, ib, *cpus,
            a_roots=[server.proc.pid], b_roots=[client.proc.pid], log=logs,
        )  # fmt: skip
    finally:
        client.stop()
        server.stop()
        for p in (client, server):
            p._dir.cleanup()
        _drop_devices(pair)


def _short(e: BaseException, head: int = 160, tail: int = 500) -> str:
    """The start (what failed) and the end (a traceback's last lines) of a long message."""
    s = " ".join(str(e).split())
    return s if len(s) <= head + tail else f"{s[:head]} ... {s[-tail:]}"


# --------------------------------------------------------------------------------------------
# OpenVPN 2.6, point-to-point TLS with AES-256-GCM over UDP

_PKI: Path | None = None
_PKI_DIR: tempfile.TemporaryDirectory | None = None


def openvpn_available() -> bool:
    return subprocess.run(["sh", "-c", "command -v openvpn"], capture_output=True).returncode == 0


def make_pki() -> Path:
    """A throw-away CA, server and client certificate (EC P-256), made offline with openssl."""
    global _PKI, _PKI_DIR
    if _PKI is not None:
        return _PKI
    _PKI_DIR = tempfile.TemporaryDirectory(prefix="vt-bench-pki-")
    d = Path(_PKI_DIR.name)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def ssl(*args: str) -> None:
        r = subprocess.run(["openssl", *args], cwd=d, capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise BenchError(f"openssl {args[0]} failed: {r.stderr.strip()[:200]}")

    ssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=vt-bench-ca",
        "-days", "2")  # fmt: skip
    for who in ("server", "client"):
        ssl("req", *ec, "-keyout", f"{who}.key", "-out", f"{who}.csr", "-subj", f"/CN={who}")
        ext = d / f"{who}.ext"
        usage = "serverAuth" if who == "server" else "clientAuth"
        ext.write_text(f"extendedKeyUsage={usage}\nkeyUsage=digitalSignature,keyAgreement\n")
        ssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{who}.crt", "-days", "2", "-extfile", ext.name)  # fmt: skip
    for f in d.glob("*.key"):
        f.chmod(0o600)
    _PKI = d
    return d


def cleanup_pki() -> None:
    global _PKI, _PKI_DIR
    if _PKI_DIR is not None:
        _PKI_DIR.cleanup()
    _PKI = _PKI_DIR = None


@contextmanager
def openvpn(
    pair: Pair, cpus: tuple[int | None, int | None], timeout: float = 20
) -> Iterator[Tunnel]:
    """OpenVPN p2p TLS (no DCO, for a userspace-to-userspace comparison), AES-256-GCM/udp."""
    pki = make_pki()
    ia, ib = pair.tunnel_addrs()
    port = free_port()
    common = [
        "openvpn", "--dev", "ovb", "--dev-type", "tun", "--proto", "udp",
        "--tun-mtu", TUNNEL_MTU, "--data-ciphers", "AES-256-GCM", "--cipher", "AES-256-GCM",
        "--ca", pki / "ca.crt", "--dh", "none", "--disable-dco", "--verb", "3",
        "--ping", "10", "--ping-exit", "60", "--mute-replay-warnings",
    ]  # fmt: skip
    logdir = tempfile.TemporaryDirectory(prefix="vt-bench-ovpn-")
    logs = [Path(logdir.name) / "server.log", Path(logdir.name) / "client.log"]
    procs: list[subprocess.Popen] = []
    try:
        argv_a = [*pin(cpus[0]), *common, "--tls-server", "--lport", port,
                  "--cert", pki / "server.crt", "--key", pki / "server.key",
                  "--ifconfig", ia, ib, "--remote-cert-tls", "client"]  # fmt: skip
        argv_b = [*pin(cpus[1]), *common, "--tls-client", "--remote", pair.a_addr, port,
                  "--nobind", "--cert", pki / "client.crt", "--key", pki / "client.key",
                  "--ifconfig", ib, ia, "--remote-cert-tls", "server"]  # fmt: skip
        for ns, argv, log in ((pair.a, argv_a, logs[0]), (pair.b, argv_b, logs[1])):
            with open(log, "wb") as fh:
                procs.append(ns.popen(*argv, stdout=fh, stderr=subprocess.STDOUT))

        def text() -> str:
            return "\n".join(p.read_text(errors="replace") for p in logs if p.exists())

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all("Initialization Sequence Completed" in p.read_text(errors="replace")
                   for p in logs):
                break
            if any(p.poll() is not None for p in procs):
                raise BenchError(f"openvpn exited: {text()[-500:]}")
            time.sleep(0.1)
        else:
            raise BenchError(f"openvpn did not come up in {timeout}s: {text()[-500:]}")
        try:
            wait_ping(pair.b, ia, timeout=10)
        except HarnessError as e:
            raise BenchError(f"openvpn: no ping through tunnel: {_short(e)}") from None
        yield Tunnel(
            "openvpn", pair.a, pair.b, ia, ib, *cpus,
            a_roots=[procs[0].pid], b_roots=[procs[1].pid], log=text,
        )  # fmt: skip
    finally:
        for p in procs:
            _stop(p)
        logdir.cleanup()
        for ns in (pair.a, pair.b):
            ns.run("ip", "link", "del", "ovb", check=False)


def _stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        _killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout=3)
        except subprocess.TimeoutExpired:
            _killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=3)
    _killpg(p.pid, signal.SIGKILL)



# --------------------------------------------------------------------------------------------
# vt-only server options (issue 18's master/worker split)


def vt_server_options(workers: int | None, user: str | None = None,
                      group: str | None = None) -> list[str]:
    """Statements for a vt server's ``options`` block: ``workers N;``, ``user``, ``group``.

    Nothing without ``workers`` (vt's default: as root, one worker per CPU it may run on,
    as ``vt`` or ``nobody``); with it, ``user nobody`` unless a user is named."""
    if workers is None:
        return []
    out = [f"workers {workers};", f"user {user or 'nobody'};"]
    if group:
        out.append(f"group {group};")
    return out


def vt_rejects(options: list[str], timeout: float = 30) -> str | None:
    """None when this vt's ``vt config check`` accepts ``options``, else its complaint.

    Run before a benchmark that asks for workers: a vt that does not know the keywords
    yet (before issue 18 is merged) is told apart from a server that failed to start."""
    if not options:
        return None
    body = "\n".join(f"  {o}" for o in options)
    text = f"options {{\n  port 5000;\n{body}\n}}\n\nprobe {{\n  passwd Vt-probe-pw;\n}}\n"
    with tempfile.TemporaryDirectory(prefix="vt-bench-opts-") as d:
        cfg = Path(d) / "vtund.conf"
        cfg.write_text(text)
        r = subprocess.run([sys.executable, "-m", "vtcore", "config", "check", "-f", cfg],
                           capture_output=True, text=True, timeout=timeout)
    if r.returncode == 0:
        return None
    return " ".join((r.stderr or r.stdout).replace(str(cfg), "vtund.conf").split())[:300]
