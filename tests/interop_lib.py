"""Helpers for the interop matrix (tests/test_interop_*.py): many tunnels in one namespace pair.

One server process serves many host profiles at once (vt in one event loop, vtund by forking
per session), so a whole column of the matrix -- every cipher, say -- comes up in one pair of
namespaces: each profile gets its own pre-made device pair and subnet and its own client
process.  The checks then run against every tunnel and come back as one list of per-setting
failures, so a test reports every broken setting at once instead of stopping at the first.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from netns import HarnessError, Pair, iperf3, ping, transfer_file, wait_ping
from peers import VtClient, VtServer, VtundClient, VtundServer, _killpg, vtund_conf

FULL = os.environ.get("VT_INTEROP_FULL") == "1"
"""``make interop``: iperf3 both ways for every case, every transport x type per setting."""

PORT = 5000
IPERF_SECONDS = 2
FILE_BYTES = 1 << 20
LIGHT_FILE_BYTES = 64 << 10
PING_COUNT = 5

LEGACY_OPENSSL_CNF = """\
openssl_conf = openssl_init
[openssl_init]
providers = provider_sect
[provider_sect]
default = default_sect
legacy = legacy_sect
[default_sect]
activate = 1
[legacy_sect]
activate = 1
"""
"""Debian's vtund aborts on Blowfish EVP ciphers under OpenSSL 3 unless legacy is loaded."""


class _LegacyOpenSSL:
    """vtund run with OPENSSL_CONF activating default+legacy providers (Blowfish EVP)."""

    _dir: object

    def argv(self) -> list[object]:
        cnf = Path(self._dir.name) / "openssl-legacy.cnf"  # type: ignore[attr-defined]
        cnf.write_text(LEGACY_OPENSSL_CNF)
        return ["env", f"OPENSSL_CONF={cnf}", *super().argv()]  # type: ignore[misc]


class _NoWait:
    """A client started without the per-process settle sleep; the pings tell if it is up."""

    def wait_ready(self, timeout: float) -> None:
        return None


class LegacyVtundServer(_LegacyOpenSSL, VtundServer):
    pass


class LegacyVtundClient(_NoWait, _LegacyOpenSSL, VtundClient):
    pass


class QuickVtClient(_NoWait, VtClient):
    pass


SERVERS = {"vt": VtServer, "vtund": LegacyVtundServer}
CLIENTS = {"vt": QuickVtClient, "vtund": LegacyVtundClient}


@dataclass
class Profile:
    """One host profile of the server, and the tunnel it becomes."""

    name: str
    settings: dict[str, object] = field(default_factory=dict)
    """Server-side keywords beyond type/proto/device (compress, encrypt, keepalive)."""
    label: str = ""
    light: bool = False
    """Light traffic only: pings and a small file, no iperf3."""
    file_way: str = ""
    """``c->s`` or ``s->c`` to send the file one way only (default: the plan's ways)."""
    vt_makes_device: bool = False
    """vt sides create their own device and address it in ``up {}`` (no pre-made one)."""
    srv_ip: str = ""
    cli_ip: str = ""
    srv_dev: str = ""
    cli_dev: str = ""
    client: object = None

    def __post_init__(self) -> None:
        self.label = self.label or self.name


def _profile_text(name: str, **settings: object) -> str:
    """The ``name { ... }`` block of a vtund.conf, built (and checked) by ``vtund_conf``."""
    return vtund_conf(name, **settings).split("}\n\n", 1)[1]


def _side(p: Profile, impl: str, mode: str, dev: str, ip: str, peer: str) -> dict[str, object]:
    """``device`` for a pre-made device, or ``up {}`` commands when vt makes its own."""
    if impl == "vt" and p.vt_makes_device:
        addr = f"{ip} peer {peer}" if mode == "tun" else f"{ip}/24"
        return {"up": ['program /bin/sleep "1" wait', f'ip "addr add {addr} dev %d"',
                       'ip "link set %d up"']}
    return {"device": dev}


def _keepalive_client(p: Profile) -> dict[str, object]:
    """The client keeps its own keep-alive timing; give it the server's."""
    ka = p.settings.get("keepalive")
    return {"keepalive": ka} if ka not in (None, False, "no") else {}


@contextlib.contextmanager
def tunnels(
    pair: Pair,
    server: str,
    client: str,
    transport: str,
    ttype: str,
    profiles: list[Profile],
    port: int = PORT,
    tag: str = "",
) -> Iterator[object]:
    """Bring up one tunnel per profile (one client each); yields the server peer (or group).

    Ports ``port`` (.. ``port + len(profiles) - 1`` for a vtund server with UDP profiles).

    Devices: ``vsNN`` in A (server side), ``vcNN`` in B (client side), each pair with its own
    /24 inside the tunnel.  vtund sides always get pre-made devices (vtund writes to its
    device before its ``up`` commands finish and dies of EIO otherwise).
    """
    mode = "tun" if ttype == "tun" else "tap"
    blocks = []
    for i, p in enumerate(profiles):
        p.srv_ip, p.cli_ip = pair.tunnel_addrs()
        p.srv_dev, p.cli_dev = f"vs{tag}{i:02d}", f"vc{tag}{i:02d}"
        for ns, impl, dev, ip, peer in (
            (pair.a, server, p.srv_dev, p.srv_ip, p.cli_ip),
            (pair.b, client, p.cli_dev, p.cli_ip, p.srv_ip),
        ):
            if not (impl == "vt" and p.vt_makes_device):
                ns.add_tun(dev, mode, addr=ip if mode == "tun" else f"{ip}/24",
                           peer=peer if mode == "tun" else None)
        side = _side(p, server, mode, p.srv_dev, p.srv_ip, p.cli_ip)
        blocks.append(_profile_text(p.name, **{"type": ttype, "proto": transport, **side,
                                               **p.settings}))
    head = "options {\n  timeout 10;\n}\n\n"
    # vtund's UDP sessions all bind the server's port and connect it only after the port
    # exchange: two set-ups at once can swap a datagram (vtund then drops the session, a
    # zlib stream breaks).  So a vtund server with UDP profiles is one process per profile,
    # each on its own port (port + i).  vt's server connects first and needs none of this.
    split = server == "vtund" and any(
        p.settings.get("proto", transport) == "udp" for p in profiles
    )
    configs = [head + b for b in blocks] if split else [head + "".join(blocks)]
    with contextlib.ExitStack() as stack:
        servers = [
            stack.enter_context(SERVERS[server](pair.a, cfg, port=port + i))
            for i, cfg in enumerate(configs)
        ]
        try:
            for i, p in enumerate(profiles):
                side = _side(p, client, mode, p.cli_dev, p.cli_ip, p.srv_ip)
                ccfg = vtund_conf(p.name, **side, **_keepalive_client(p))
                p.client = stack.enter_context(
                    CLIENTS[client](pair.b, ccfg, p.name, pair.a_addr,
                                    port=port + (i if split else 0))
                )
            yield servers[0] if len(servers) == 1 else ServerGroup(servers)
        finally:
            # Stop every client at once (each stop alone waits for its own exit).
            for p in profiles:
                if p.client is not None and p.client.alive():  # type: ignore[attr-defined]
                    _killpg(p.client.proc.pid, signal.SIGTERM)  # type: ignore[attr-defined]


class ServerGroup:
    """Several server processes seen as one, for the checks and the report."""

    def __init__(self, peers: list) -> None:
        self.peers = peers
        self.kind = f"{peers[0].kind} x{len(peers)}"

    def log(self) -> str:
        return "".join(p.log() for p in self.peers)

    def alive(self) -> bool:
        return all(p.alive() for p in self.peers)

    def stop(self) -> None:
        for p in self.peers:
            p.stop()


# --------------------------------------------------------------------------------------------
# Checks


@dataclass
class Plan:
    """What to run through every tunnel."""

    file_bytes: int = FILE_BYTES
    iperf: bool = FULL
    iperf_workers: int = 1
    """Tunnels loaded by iperf3 at the same time (they share the CPU: this proves the path
    carries the load, it does not measure it)."""
    up_timeout: float = 25
    file_ways: tuple[str, ...] = ("c->s", "s->c")
    """Per profile; ``Profile.file_way`` overrides."""


def _attempt(fails: list[str], what: str, fn: Callable[[], object]) -> object:
    try:
        return fn()
    except HarnessError as e:
        fails.append(f"{what}: {str(e).splitlines()[0][:200]}")
        return None


def _up_and_ping(pair: Pair, p: Profile, plan: Plan) -> list[str]:
    fails: list[str] = []
    if _attempt(fails, "no tunnel", lambda: wait_ping(pair.b, p.srv_ip, plan.up_timeout)) is None:
        return fails
    for ns, dst, way in ((pair.b, p.srv_ip, "c->s"), (pair.a, p.cli_ip, "s->c")):
        r = _attempt(fails, f"ping {way}", lambda ns=ns, dst=dst: ping(ns, dst, PING_COUNT))
        if r is not None and r.received != r.sent:
            fails.append(f"ping {way}: {r.received}/{r.sent} replies")
    return fails


def _files(pair: Pair, p: Profile, plan: Plan) -> list[str]:
    fails: list[str] = []
    size = LIGHT_FILE_BYTES if p.light else plan.file_bytes
    ways = {"c->s": (pair.b, pair.a, p.srv_ip), "s->c": (pair.a, pair.b, p.cli_ip)}
    for way in (p.file_way,) if p.file_way else plan.file_ways:
        src, dst, addr = ways[way]
        ok = _attempt(fails, f"file {way}",
                      lambda src=src, dst=dst, addr=addr: transfer_file(src, dst, addr, size))
        if ok is False:
            fails.append(f"file {way}: {size} bytes arrived altered")
    return fails


def _iperf(pair: Pair, p: Profile, plan: Plan) -> list[str]:
    fails: list[str] = []
    for reverse in (False, True):
        way = "s->c" if reverse else "c->s"
        r = _attempt(fails, f"iperf3 {way}",
                     lambda reverse=reverse: iperf3(pair.a, pair.b, p.srv_ip,
                                                   seconds=IPERF_SECONDS, reverse=reverse))
        if r is not None and not r["bytes"]:  # type: ignore[index]
            fails.append(f"iperf3 {way}: no bytes")
    return fails


def run_checks(pair: Pair, profiles: list[Profile], plan: Plan, workers: int = 6) -> list[str]:
    """Ping, file and (per plan) iperf3 through every tunnel; returns 'label: failure' lines.

    Pings run in parallel; files with a few at a time; iperf3 one tunnel at a time so its
    numbers are not shared.  A tunnel that never came up skips its later checks.
    """
    fails: dict[str, list[str]] = {p.name: [] for p in profiles}
    with ThreadPoolExecutor(max_workers=max(1, min(len(profiles), 16))) as pool:
        ups = list(pool.map(lambda p: _up_and_ping(pair, p, plan), profiles))
    for p, f in zip(profiles, ups, strict=True):
        fails[p.name] += f
    live = [p for p in profiles if not any(f.startswith("no tunnel") for f in fails[p.name])]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        files = list(pool.map(lambda p: _files(pair, p, plan), live))
    for p, f in zip(live, files, strict=True):
        fails[p.name] += f
    heavy = [p for p in live if plan.iperf and not p.light]
    with ThreadPoolExecutor(max_workers=max(1, plan.iperf_workers)) as pool:
        perf = list(pool.map(lambda p: _iperf(pair, p, plan), heavy)) if heavy else []
    for p, f in zip(heavy, perf, strict=True):
        fails[p.name] += f
    return [f"{p.label}: {f}" for p in profiles for f in fails[p.name]]


def report(case: str, failures: list[str], server: object, profiles: list[Profile]) -> str:
    """One assertion message: every failed setting, then the logs of the first one."""
    lines = [f"{case}: {len(failures)} failure(s)", *failures]
    server_log: str = server.log()  # type: ignore[attr-defined]
    for p in profiles:
        if failures and failures[0].startswith(f"{p.label}: "):
            lines.append(f"--- client log ({p.label}) ---\n{p.client.log()[-2500:]}")  # type: ignore[attr-defined]
            mine = [ln for ln in server_log.splitlines() if re.search(rf"\b{p.name}\b", ln)]
            lines.append(f"--- server log, lines of {p.name} ---\n" + "\n".join(mine[-20:]))
    lines.append(f"--- server log (tail) ---\n{server_log[-2500:]}")
    return "\n".join(lines)


def elapsed(t0: float) -> str:
    return f"{time.monotonic() - t0:.1f}s"
