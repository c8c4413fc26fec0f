"""Concurrent busy sessions against one server (issue 18): ``python bench/concurrency.py``.

For 1, 2 and 4 sessions (``--counts``) one server on host A holds N profiles ``c0..``, each
on its own pre-made tun device and its own inner subnet; host B runs one client process
per session.  iperf3 then runs through every session at once (one TCP stream each, ``fwd``
= B to A, then ``rev`` = A to B), and the benchmark records the aggregate throughput and the
CPU seconds per wall second of the server's whole process tree: the server PID and every
descendant (vtund forks a session process per connection; vt with ``workers N`` will have
worker children), utime+stime from ``/proc/PID/stat``.  The clients' trees are summed the
same way.  Rounds interleave the implementations (order reversed every other round) and
medians over rounds are reported, with vt/vtund ratios per count and the issue's targets.

Results: ``bench/results/<stamp>-concurrent.{json,md}``.  See bench/README.md, section
"Concurrent sessions (issue 18)".  Needs root, ``ip netns``, iperf3 and the Debian vtund.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (ROOT / "tests", HERE):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from netns import (  # noqa: E402
    HarnessError,
    Netns,
    Pair,
    _stop,
    free_port,
    netns_usable,
    two_hosts,
    wait_listening,
    wait_ping,
)
from peers import (  # noqa: E402
    DEFAULT_PASSWD,
    VtClient,
    VtServer,
    VtundClient,
    VtundServer,
    ensure_vtund_dirs,
    vtund_available,
    vtund_conf,
)
from procstat import tree_cpu  # noqa: E402
from tunnels import (  # noqa: E402
    TUNNEL_MTU,
    BenchError,
    Config,
    _pinned,
    _short,
    pin,
    vt_rejects,
    vt_server_options,
)

IMPLS = ("vtund", "vt", "vt-compat", "vt-vtund")
"""Server-client pairs: vtund <-> vtund, vt <-> vt as shipped (native framing over TCP),
vt <-> vt with ``vtmode no`` (the vtun wire, one packet per frame), a vt server of vtund
clients (the vtun wire too: the deployment issue 18 starts from)."""
DEFAULT_IMPLS = ("vtund", "vt", "vt-compat")
CONFIGS = ("tun/tcp/none", "tun/udp/none")
COUNTS = (1, 2, 4)
WAYS = ("fwd", "rev")
SPEEDUP = 4.0
"""Issue 18: vt's aggregate at least 4x vtund's at every count."""
CORES = 1.3
"""Issue 18: with two busy sessions vt's server uses more than 1.3 CPU seconds per second."""
TARGET_CONFIG = "tun/tcp/none"
STEADY_SKIP_S = 1.0
"""The steady window starts this long after the iperf3 clients were started ..."""
STEADY_TAIL_S = 0.3
"""... and ends this long before their ``-t`` is up: every stream is running in between."""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


# --------------------------------------------------------------------------------------------
# Configs (pure)


def sides(impl: str) -> tuple[str, str]:
    """Which program runs the server and which the clients of an impl."""
    if impl == "vtund":
        return "vtund", "vtund"
    if impl in ("vt", "vt-compat"):
        return "vt", "vt"
    if impl == "vt-vtund":
        return "vt", "vtund"
    raise ValueError(f"unknown impl {impl!r}")


def skip_reason(impl: str, cfg: Config) -> str | None:
    if impl == "vt-compat" and cfg.proto != "tcp":
        return "over udp vt <-> vt already speaks the vtun wire (only compression differs)"
    return None


def host(i: int) -> str:
    return f"c{i}"


def server_conf(cfg: Config, n: int, port: int, compat: bool = False,
                vt_options: list[str] | None = None) -> str:
    """A server config with profiles ``c0..c<n-1>``, each on its own device ``cs<i>``.

    ``vt_options`` go into the ``options`` block (vt-only keywords such as ``workers``);
    ``compat`` adds ``vtmode no`` to every profile."""
    out = ["options {", f"  port {port};", "  timeout 10;"]
    out += [f"  {o}" for o in vt_options or []]
    out += ["}", ""]
    settings = cfg.vtund_settings()
    for i in range(n):
        out += [f"{host(i)} {{", f"  passwd {DEFAULT_PASSWD};"]
        out += [f"  {k} {v};" for k, v in settings.items()]
        out.append(f"  device cs{i};")
        if compat:
            out.append("  vtmode no;")
        out += ["}", ""]
    return "\n".join(out)


def client_conf(i: int, port: int, compat: bool = False) -> str:
    text = vtund_conf(host(i), options={"port": port}, device=f"cc{i}")
    if compat:
        text = text.replace(f"  device cc{i};", f"  device cc{i};\n  vtmode no;")
    return text


# --------------------------------------------------------------------------------------------
# N live sessions


@dataclass
class Sessions:
    impl: str
    a: Netns
    b: Netns
    addrs: list[tuple[str, str]]  # (A's inner address, B's) per session
    cpu_a: int | None
    cpu_b: int | None
    server_root: int
    client_roots: list[int] = field(default_factory=list)
    log: Callable[[], str] = lambda: ""

    def alive(self) -> bool:
        return all(_running(p) for p in [self.server_root, *self.client_roots])


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (a dead daemon not reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return False
    return raw[raw.rindex(")") + 2 :].split()[0] != "Z"


@contextmanager
def sessions(impl: str, pair: Pair, cfg: Config, n: int,
             cpus: tuple[int | None, int | None], vt_options: list[str],
             timeout: float = 20) -> Iterator[Sessions]:
    """One server on A with ``n`` profiles, ``n`` client processes on B, every tunnel up."""
    srv_side, cli_side = sides(impl)
    compat = impl == "vt-compat"
    mode = "tun" if cfg.dev == "tun" else "tap"
    port = free_port()
    made: list[int] = []
    server = None
    clients: list = []
    try:
        addrs = []
        for i in range(n):
            made.append(i)  # deleted on the way out even if only one end was made
            addrs.append(pair.add_tunnel_devices(f"cs{i}", f"cc{i}", mode=mode, mtu=TUNNEL_MTU))
        scfg = server_conf(cfg, n, port, compat, vt_options if srv_side == "vt" else None)
        srv_cls = VtundServer if srv_side == "vtund" else VtServer
        cli_cls = VtundClient if cli_side == "vtund" else VtClient
        server = _pinned(srv_cls, cpus[0])(pair.a, scfg, port=port)
        try:
            server.start(timeout=timeout)
            for i in range(n):
                c = _pinned(cli_cls, cpus[1])(pair.b, client_conf(i, port, compat), host(i),
                                              pair.a_addr, port=port)
                clients.append(c)
                c.start(timeout=timeout)
            for ia, _ in addrs:
                wait_ping(pair.b, ia, timeout=timeout)
        except HarnessError as e:
            raise BenchError(f"{impl} {cfg.key} x{n} did not come up: {_short(e)}") from None
        assert server.proc is not None and all(c.proc is not None for c in clients)

        def logs() -> str:
            parts = [f"--- server ---\n{server.log()}"]
            parts += [f"--- client {i} ---\n{c.log()}" for i, c in enumerate(clients)]
            return "\n".join(parts)

        yield Sessions(impl, pair.a, pair.b, addrs, *cpus, server_root=server.proc.pid,
                       client_roots=[c.proc.pid for c in clients], log=logs)
    finally:
        for c in clients:
            c.stop()
        if server is not None:
            server.stop()
        for p in [*clients, *([server] if server is not None else [])]:
            p._dir.cleanup()
        for i in made:
            pair.a.run("ip", "link", "del", f"cs{i}", check=False)
            pair.b.run("ip", "link", "del", f"cc{i}", check=False)


# --------------------------------------------------------------------------------------------
# One busy run: iperf3 through every session at once


def _sleep_until(t: float) -> None:
    d = t - time.monotonic()
    if d > 0:
        time.sleep(d)


def _snap(s: Sessions) -> tuple[float, float, float, int]:
    """(monotonic time, server tree CPU s, clients' trees CPU s, server processes)."""
    srv, nprocs = tree_cpu([s.server_root])
    cli, _ = tree_cpu(s.client_roots)
    return time.monotonic(), srv, cli, nprocs


def per_wall(a: tuple[float, float, float, int], b: tuple[float, float, float, int]
             ) -> tuple[float | None, float | None]:
    """Server and clients' CPU seconds per wall second between two snapshots."""
    wall = b[0] - a[0]
    if wall <= 0:
        return None, None
    return (b[1] - a[1]) / wall, (b[2] - a[2]) / wall


def busy(s: Sessions, seconds: int, reverse: bool, repeating: bool = False) -> dict:
    """iperf3 through every session at once; aggregate Mbit/s and the trees' CPU per second."""
    n = len(s.addrs)
    ports: list[int] = []
    while len(ports) < n:
        if (p := free_port()) not in ports:
            ports.append(p)
    servers: list[subprocess.Popen] = []
    clients: list[subprocess.Popen] = []
    outdir = tempfile.TemporaryDirectory(prefix="vt-bench-conc-")
    try:
        for (ia, _), port in zip(s.addrs, ports, strict=True):
            servers.append(s.a.popen(*pin(s.cpu_a), "iperf3", "-s", "-1", "-p", port, "-B", ia,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for srv, port in zip(servers, ports, strict=True):
            wait_listening(s.a, port, proc=srv)
        start = _snap(s)
        outs = [Path(outdir.name) / f"c{i}.json" for i in range(n)]
        for (ia, _), port, out in zip(s.addrs, ports, outs, strict=True):
            with open(out, "wb") as fh:
                clients.append(s.b.popen(
                    *pin(s.cpu_b), "iperf3", "-c", ia, "-p", port, "-t", seconds, "-J",
                    "--connect-timeout", 3000, *(["-R"] if reverse else []),
                    *(["--repeating-payload"] if repeating else []),
                    stdout=fh, stderr=subprocess.STDOUT))  # fmt: skip
        t0 = start[0]
        steady = None
        if seconds - STEADY_SKIP_S - STEADY_TAIL_S >= 1.0:
            _sleep_until(t0 + STEADY_SKIP_S)
            w0 = _snap(s)
            _sleep_until(t0 + seconds - STEADY_TAIL_S)
            w1 = _snap(s)
            steady = (w0, w1)
        deadline = t0 + seconds + 25
        for c in clients:
            try:
                c.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise BenchError(f"iperf3 client did not finish in {seconds + 25} s") from None
        end = _snap(s)
        per: list[float] = []
        retrans = 0
        for out in outs:
            text = out.read_text(errors="replace")
            try:
                data = json.loads(text)
            except json.JSONDecodeError:
                raise BenchError(f"iperf3: bad JSON ({' '.join(text.split())[-200:]})") from None
            if "error" in data:
                raise BenchError(f"iperf3: {data['error']}")
            per.append(data["end"]["sum_received"]["bits_per_second"] / 1e6)
            retrans += data["end"]["sum_sent"].get("retransmits", 0)
        whole_srv, whole_cli = per_wall(start, end)
        res: dict = {
            "agg_mbit": sum(per),
            "per_session_mbit": [round(v, 1) for v in per],
            "retransmits": retrans,
            "server_cpu_per_wall_whole": whole_srv,
            "clients_cpu_per_wall_whole": whole_cli,
            "server_procs": end[3],
            "busy_wall_s": round(end[0] - start[0], 2),
        }
        if steady is not None:
            srv_c, cli_c = per_wall(*steady)
            res.update(server_cpu_per_wall=srv_c, clients_cpu_per_wall=cli_c,
                       steady_wall_s=round(steady[1][0] - steady[0][0], 2))
        else:
            res.update(server_cpu_per_wall=whole_srv, clients_cpu_per_wall=whole_cli)
        return res
    finally:
        for proc in clients + servers:
            _stop(proc)
        outdir.cleanup()


def case(s: Sessions, seconds: int, ways: tuple[str, ...], repeating: bool = False) -> dict:
    res: dict = {}
    for way in ways:
        if not s.alive():
            res[way] = {"error": "a daemon died"}
            continue
        t0 = time.monotonic()
        try:
            res[way] = busy(s, seconds, reverse=way == "rev", repeating=repeating)
        except (BenchError, HarnessError) as e:
            res[way] = {"error": " ".join(str(e).split())[:300]}
        res[way]["wall_s"] = round(time.monotonic() - t0, 2)
    res["alive_after"] = s.alive()
    if not res["alive_after"]:
        res["log_tail"] = s.log()[-1500:]
    return res


# --------------------------------------------------------------------------------------------
# Summary and the issue's targets (pure)


def _num(d: object, *path: str) -> float | None:
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d if isinstance(d, (int, float)) and not isinstance(d, bool) else None


def _median(vals: list[float | None]) -> float | None:
    got = [v for v in vals if v is not None]
    return statistics.median(got) if got else None


FIELDS = ("agg_mbit", "server_cpu_per_wall", "server_cpu_per_wall_whole",
          "clients_cpu_per_wall", "server_procs")


def summarize(cases: dict) -> dict:
    """Medians over rounds: ``out[config][str(n)][impl][way][field]``."""
    out: dict = {}
    for key, per_n in cases.items():
        for n, per_impl in per_n.items():
            for impl, rounds in per_impl.items():
                if all("skipped" in r for r in rounds):
                    continue
                slot = out.setdefault(key, {}).setdefault(n, {}).setdefault(impl, {})
                for way in WAYS:
                    got = [r[way] for r in rounds if isinstance(r.get(way), dict)]
                    if not got:
                        continue
                    m: dict = {f: _median([_num(r, f) for r in got]) for f in FIELDS}
                    m["ok_rounds"] = sum(1 for r in got if "agg_mbit" in r)
                    m["errors"] = sorted({r["error"] for r in got if "error" in r})
                    slot[way] = m
                slot["errors"] = sorted({r["error"] for r in rounds if "error" in r})
    return out


def ratio(summary: dict, key: str, n: int, impl: str, way: str,
          fld: str = "agg_mbit") -> float | None:
    per = summary.get(key, {}).get(str(n), {})
    a, b = _num(per, impl, way, fld), _num(per, "vtund", way, fld)
    return a / b if a is not None and b else None


def targets(summary: dict, counts: list[int], key: str = TARGET_CONFIG) -> list[dict]:
    """Issue 18's concurrency targets on this run's medians: ``met`` True, False or None.

    The throughput target is vt's as shipped (native framing).  The CPU target is judged
    for every vt server measured: vt's own, and the vtun-wire servers (vt-compat,
    vt-vtund), where one packet per frame makes the server the bottleneck the issue
    describes; a server that is not the bottleneck has no reason to use more cores."""
    out = []
    for n in counts:
        parts, ok = [], []
        for way in WAYS:
            r = ratio(summary, key, n, "vt", way)
            if r is not None:
                parts.append(f"{way} {r:.2f}×")
                ok.append(r >= SPEEDUP)
        out.append({"target": f"vt aggregate ≥ {SPEEDUP:g}× vtund, {n} busy session"
                              f"{'s' if n != 1 else ''} ({key})",
                    "measured": ", ".join(parts) or "not measured",
                    "met": all(ok) if ok else None})  # fmt: skip
    per = summary.get(key, {}).get("2", {})
    for impl in ("vt", "vt-compat", "vt-vtund"):
        if impl not in per and impl != "vt":
            continue
        parts, ok, refs = [], [], []
        for way in WAYS:
            v = _num(per, impl, way, "server_cpu_per_wall")
            if v is None:
                continue
            ref = _num(per, "vtund", way, "server_cpu_per_wall")
            cli = _num(per, impl, way, "clients_cpu_per_wall")
            parts.append(f"{way} {v:.2f}" + (f" (vtund {ref:.2f})" if ref is not None else "")
                         + (f", its clients {cli:.2f}" if cli is not None else ""))
            ok.append(v > CORES)
            if ref is not None:
                refs.append(ref)
        note = ""
        if refs and max(refs) <= CORES:
            note = (f"; vtund, one process per session, stays at {max(refs):.2f} or below "
                    "here too: its clients, iperf3 and the kernel share the same CPUs")
        out.append({"target": f"{impl} server CPU-s per wall-s > {CORES:g} with 2 busy "
                              f"sessions ({key}, whole process tree)",
                    "measured": (", ".join(parts) + note) or "not measured",
                    "met": all(ok) if ok else None})  # fmt: skip
    return out


# --------------------------------------------------------------------------------------------
# Report


def _f(v: float | None, fmt: str = "{:.0f}") -> str:
    return "n/a" if v is None else fmt.format(v)


def markdown(results: dict, summary: dict) -> str:
    meta = results["meta"]
    impls = [i for i in IMPLS if i in meta["impls"]]
    others = [i for i in impls if i != "vtund"]
    word = {True: "**met**", False: "**not met**", None: "not measured"}
    lines = [
        f"# Concurrent busy sessions (issue 18) — {meta['started']}"
        + (" (quick smoke run)" if meta.get("quick") else ""),
        "",
        f"{meta['rounds']} round(s) interleaved, {meta['seconds']} s of iperf3 per test, "
        f"medians. Host: {meta['cpu']} ({meta['ncpu']} CPUs), kernel {meta['kernel']}. "
        f"Pinning: {meta['pinning']}. vt revision {meta['vt_rev']}, vtund {meta['vtund']}, "
        f"{meta['iperf3']}. vt server options: "
        f"{' '.join(meta['vt_options']) or 'none (vt default: one worker per CPU as root)'}. "
        f"iperf3 payload: {meta.get('payload', 'random')}. "
        f"Load average before/after: {meta['loadavg_start']} / {meta.get('loadavg_end', '?')}"
        f" (per round: {'; '.join(meta.get('loadavg_rounds', [])) or '?'}). "
        f"Run took {meta.get('wall_s', 0):.0f} s.",
        "",
        "N sessions = one server on host A with N profiles (each its own tun device and "
        "inner subnet), N client processes on host B; one iperf3 TCP stream through each "
        "session, all at once (fwd = B → A, rev = A → B). Aggregate = sum of the streams' "
        "received rates. CPU = utime+stime per wall second, summed over the server's whole "
        "process tree (vtund's forked session processes, vt's workers), read over the "
        f"window when every stream runs ({STEADY_SKIP_S:g} s after the start to "
        f"{STEADY_TAIL_S:g} s before the end); the JSON also has it over the whole test "
        "(`_whole`) and for the clients' trees. 2.0 = both CPUs of this machine.",
        "",
        "Implementations (server-client): vtund = vtund ↔ vtund; vt = vt ↔ vt as shipped "
        "(native framing and offloads over TCP); vt-compat = vt ↔ vt with `vtmode no` (the "
        "vtun wire, one packet per frame, tcp only); vt-vtund = vt server, vtund clients.",
        "",
        "## Targets", "",
        "| target | measured | met? |", "|---|---|---|",
    ]  # fmt: skip
    for t in summary["targets"]:
        lines.append(f"| {t['target']} | {t['measured']} | {word[t['met']]} |")
    for key in meta["configs"]:
        per_n = summary["cases"].get(key)
        if not per_n:
            continue
        lines += ["", f"## {key}", ""]
        head = ["N", "way"] + [f"{i} Mbit/s" for i in impls]
        head += [f"{i}/vtund" for i in others if "vtund" in impls]
        head += [f"{i} server CPU-s/s" for i in impls] + ["server procs"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for n in meta["counts"]:
            per = per_n.get(str(n), {})
            for way in meta["ways"]:
                row = [str(n), way]
                row += [_f(_num(per, i, way, "agg_mbit")) for i in impls]
                if "vtund" in impls:
                    row += [_f(ratio(summary["cases"], key, n, i, way), "{:.2f}×")
                            for i in others]
                row += [_f(_num(per, i, way, "server_cpu_per_wall"), "{:.2f}") for i in impls]
                row.append(" / ".join(f"{i} {_f(_num(per, i, way, 'server_procs'))}"
                                      for i in impls if _num(per, i, way, "server_procs")))
                lines.append("| " + " | ".join(row) + " |")
    errs = [f"- {key} N={n} {impl} {way}: {e}"
            for key, per_n in summary["cases"].items() for n, per in per_n.items()
            for impl, s in per.items() for way in WAYS
            for e in s.get(way, {}).get("errors", [])]  # fmt: skip
    errs += [f"- {key} N={n} {impl}: {e}"
             for key, per_n in summary["cases"].items() for n, per in per_n.items()
             for impl, s in per.items() for e in s.get("errors", [])]  # fmt: skip
    if errs:
        lines += ["", "## Failures", "", *errs]
    return "\n".join(lines) + "\n"


def summary_of(results: dict) -> dict:
    cases = summarize(results["cases"])
    impls = results["meta"]["impls"]
    # Judged on tun/tcp/none, or on the run's first config when it did not run that one
    # (the target rows name the config).
    key = TARGET_CONFIG if TARGET_CONFIG in cases else next(iter(cases), TARGET_CONFIG)
    ts = (targets(cases, results["meta"]["counts"], key)
          if "vt" in impls and "vtund" in impls else [])
    return {"cases": cases, "targets": ts}


# --------------------------------------------------------------------------------------------


def _version(argv: list[str]) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return ((r.stdout or r.stderr).strip().splitlines() or ["?"])[0][:100]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="bench/concurrency.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 1 round, 3 s, counts 1,2, tun/tcp/none, vtund and vt")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5, help="seconds of iperf3 per test")
    ap.add_argument("--counts", default=None,
                    help=f"comma list of session counts (default {','.join(map(str, COUNTS))})")
    ap.add_argument("--impls", default=None,
                    help=f"comma list from {','.join(IMPLS)} (default {','.join(DEFAULT_IMPLS)})")
    ap.add_argument("--configs", default=None,
                    help="comma list of dev/proto/module, module none, lzo:1, zlib:1, zlib:9 or "
                         f"aes128cbc (default {','.join(CONFIGS)})")
    ap.add_argument("--ways", default=",".join(WAYS), help="fwd,rev or one of them")
    ap.add_argument("--payload", choices=("random", "repeating"), default="random",
                    help="iperf3's payload: random (nothing compresses) or repeating "
                         "(--repeating-payload: compressors do their work)")
    ap.add_argument("--pin", choices=("none", "split"), default="none",
                    help="none: every process may use every CPU (a server can use more than "
                         "one core); split: host A's processes on CPU 0, host B's on CPU 1")
    ap.add_argument("--workers", type=int, default=None,
                    help="write 'workers N;' into vt's server options (0: one process; "
                         "without it vt's default, one worker per CPU as root; issue 18)")
    ap.add_argument("--user", default=None, help="with --workers: 'user NAME;' (default nobody)")
    ap.add_argument("--group", default=None, help="with --workers: 'group NAME;'")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--tag", default="", help="added to the results' file names")
    ap.add_argument("--render", type=Path, metavar="JSON",
                    help="only rewrite the .md of an earlier run's JSON (no root needed)")
    a = ap.parse_args(argv)
    if a.quick:
        a.rounds, a.seconds = 1, 3
    a.counts = a.counts or ("1,2" if a.quick else ",".join(map(str, COUNTS)))
    a.impls = a.impls or ("vtund,vt" if a.quick else ",".join(DEFAULT_IMPLS))
    a.configs = a.configs or (TARGET_CONFIG if a.quick else ",".join(CONFIGS))
    if not 1 <= a.rounds <= 20 or not 2 <= a.seconds <= 60:
        ap.error("--rounds must be 1..20 and --seconds 2..60")
    try:
        a.counts = sorted({int(c) for c in a.counts.split(",") if c})
    except ValueError:
        ap.error("--counts takes a comma list of integers")
    if not a.counts or any(not 1 <= c <= 16 for c in a.counts):
        ap.error("--counts must be 1..16 each")
    a.impls = [i for i in a.impls.split(",") if i]
    if bad := [i for i in a.impls if i not in IMPLS]:
        ap.error(f"unknown impl(s): {', '.join(bad)}")
    a.ways = tuple(w for w in a.ways.split(",") if w)
    if not a.ways or any(w not in WAYS for w in a.ways):
        ap.error("--ways: fwd, rev or fwd,rev")
    a.config_list = []
    for key in (k for k in a.configs.split(",") if k):
        parts = key.split("/")
        if len(parts) != 3 or parts[0] not in ("tun", "ether") or parts[1] not in ("tcp", "udp") \
                or parts[2] not in ("none", "lzo:1", "zlib:1", "zlib:9", "aes128cbc"):
            ap.error(f"bad config {key!r} (e.g. tun/tcp/none)")
        a.config_list.append(Config(*parts))
    if a.workers is not None and not 0 <= a.workers <= 256:
        ap.error("--workers must be 0..256")
    if (a.user or a.group) and a.workers is None:
        ap.error("--user and --group go with --workers")
    return a


def run_rounds(a: argparse.Namespace, results: dict) -> None:
    meta = results["meta"]
    cpus = tuple(meta["cpus"])
    for rnd in range(a.rounds):
        order = a.impls if rnd % 2 == 0 else list(reversed(a.impls))
        meta["loadavg_rounds"].append(loadavg())
        log(f"round {rnd + 1}/{a.rounds} (order {', '.join(order)}; load {loadavg()})")
        with two_hosts() as pair:
            for cfg in a.config_list:
                for n in a.counts:
                    for impl in order:
                        slot = results["cases"].setdefault(cfg.key, {}).setdefault(
                            str(n), {}).setdefault(impl, [])
                        if why := skip_reason(impl, cfg):
                            slot.append({"skipped": why})
                            continue
                        log(f"  {cfg.key} x{n} {impl}")
                        t0 = time.monotonic()
                        try:
                            with sessions(impl, pair, cfg, n, cpus, meta["vt_options"]) as s:
                                r = case(s, a.seconds, a.ways, a.payload == "repeating")
                        except (BenchError, HarnessError) as e:
                            r = {"error": " ".join(str(e).split())[:700]}
                        r["load"] = loadavg()
                        r["case_wall_s"] = round(time.monotonic() - t0, 2)
                        _say(r, a.ways)
                        slot.append(r)


def _say(r: dict, ways: tuple[str, ...]) -> None:
    if "error" in r:
        log(f"    failed: {r['error'][:200]}")
        return
    parts = []
    for w in ways:
        x = r.get(w, {})
        if "error" in x:
            parts.append(f"{w} error: {x['error'][:120]}")
        else:
            parts.append(f"{w} {x['agg_mbit']:.0f} Mbit/s, server "
                         f"{_f(x.get('server_cpu_per_wall'), '{:.2f}')} CPU-s/s")
    log("    " + "; ".join(parts) + f" (load {r.get('load')})")


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.render:
        try:
            old = json.loads(a.render.read_text())
            md = markdown(old, summary_of(old))
        except (OSError, ValueError, KeyError) as e:
            print(f"concurrency: cannot read {a.render}: {e}", file=sys.stderr)
            return 2
        a.render.with_suffix(".md").write_text(md)
        print(md)
        return 0
    if os.geteuid() != 0 or not netns_usable():
        print("concurrency: needs root and working `ip netns`", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if any(sides(i)[0] == "vtund" or sides(i)[1] == "vtund" for i in a.impls) \
            and not vtund_available():
        print("concurrency: vtund not found (apt-get install vtun)", file=sys.stderr)
        return 2
    vt_opts = vt_server_options(a.workers, a.user, a.group)
    if any(sides(i)[0] == "vt" for i in a.impls) and (why := vt_rejects(vt_opts)):
        print(f"concurrency: this vt does not accept {' '.join(vt_opts)!r} in its options "
              f"block ({why}). The keywords come with issue 18's master/worker split; "
              "run without --workers until it is merged.", file=sys.stderr)
        return 2
    ensure_vtund_dirs()
    ncpu = os.cpu_count() or 1
    cpus = (0, 1 % ncpu) if a.pin == "split" else (None, None)
    started = dt.datetime.now().astimezone()
    t_start = time.monotonic()
    meta = {
        "started": started.isoformat(timespec="seconds"),
        "rounds": a.rounds, "seconds": a.seconds, "quick": a.quick,
        "counts": a.counts, "impls": a.impls, "ways": list(a.ways), "payload": a.payload,
        "configs": [c.key for c in a.config_list],
        "cpus": cpus,
        "pinning": ("server host on CPU 0, client host on CPU 1 (taskset)" if a.pin == "split"
                    else "none (every process on either CPU)"),
        "vt_options": vt_opts,
        "cpu": _cpu_model(), "ncpu": ncpu, "kernel": os.uname().release,
        "vtund": _version(["dpkg-query", "-W", "-f=${Version}", "vtun"]),
        "iperf3": _version(["iperf3", "--version"]),
        "vt_rev": _version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
        "loadavg_start": loadavg(), "loadavg_rounds": [],
    }  # fmt: skip
    results: dict = {"meta": meta, "cases": {}}
    try:
        run_rounds(a, results)
    except KeyboardInterrupt:
        log("interrupted: writing what was measured")
        meta["interrupted"] = True
    except HarnessError as e:
        log(f"harness error, writing what was measured: {e}")
        meta["harness_error"] = str(e)[:400]
    meta["wall_s"] = round(time.monotonic() - t_start, 1)
    meta["loadavg_end"] = loadavg()
    summary = summary_of(results)
    results["summary"] = summary
    a.out.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%S") + "-concurrent" + (f"-{a.tag}" if a.tag else "") \
        + ("-quick" if a.quick else "")
    md = markdown(results, summary)
    (a.out / f"{stamp}.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (a.out / f"{stamp}.md").write_text(md)
    print(md)
    log(f"wrote {a.out / stamp}.json/.md in {meta['wall_s']:.0f} s")
    return 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


if __name__ == "__main__":
    sys.exit(main())
