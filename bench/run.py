"""vt against vtund on this machine, in one run: ``make bench`` or ``python bench/run.py``.

Two network namespaces joined by a veth pair; every configuration runs vtund <-> vtund
and vt <-> vt in turn, round after round (order alternating), with the raw veth and
OpenVPN as references; then N concurrent sessions against one server.  Results go to
``bench/results/<timestamp>.{json,md,png}`` and ``bench/results/latest.{json,md,png}``.
See bench/README.md.  Needs root.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (ROOT / "tests", HERE):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import floor  # noqa: E402
import measure  # noqa: E402
import report  # noqa: E402
import scale  # noqa: E402
import tunnels  # noqa: E402
from floor import FloorError  # noqa: E402
from netns import HarnessError, Pair, netns_usable, two_hosts  # noqa: E402
from peers import VTUND, ensure_vtund_dirs, vtund_available  # noqa: E402
from tunnels import BenchError, Config, Tunnel  # noqa: E402

DEVS = ("tun", "ether")
PROTOS = ("tcp", "udp")
MODULES = ("none", "lzo:1", "zlib:1", "aes128cbc", "aead")
SECURE = "aead"
"""vt's secure mode (CPace + AEAD): vt <-> vt only, compared with vtund's aes128cbc."""
QUICK_CONFIGS = ("tun/tcp/none", "tun/udp/none", "tun/tcp/aes128cbc")
VTUND_UDP_BROKEN = ("cbc", "cfb", "ofb")
"""Debian's vtund over UDP with these AES modes dies under load: marked n/a, not run."""


def all_configs() -> list[Config]:
    return [Config(d, p, m) for d in DEVS for p in PROTOS for m in MODULES]


IMPLS = report.IMPLS
DEFAULT_IMPLS = ",".join(i for i in IMPLS if i != "vt-1p")
QUICK_IMPLS = ("vtund", "vt", *tunnels.MIXED)
QUICK_MIXED_CONFIGS = ("tun/tcp/none", "tun/udp/none")
"""--quick runs the mixed pairs on tun/tcp/none and tun/udp/none only (keeps the smoke run
short)."""
MIXED_PATHS = (("tun", "tcp"), ("tun", "udp"))
"""Where the mixed pairs run: the issues' targets (tun over tcp, issue 5; over udp, 19)."""


def skip_reason(
    impl: str, cfg: Config, compat_all: bool = False, quick: bool = False
) -> str | None:
    if cfg.module == SECURE and impl != "vt":
        return "secure mode exists between two vt ends only (vtund peers never see it)"
    if impl in tunnels.MIXED and (cfg.dev, cfg.proto) not in MIXED_PATHS:
        return "mixed vt/vtund pairs run on tun/tcp and tun/udp only (the issues' targets)"
    if impl in tunnels.MIXED and quick and cfg.key not in QUICK_MIXED_CONFIGS:
        return "--quick runs the mixed pairs on tun/tcp/none and tun/udp/none only"
    if impl == "vt-compat" and cfg.proto != "tcp":
        return "vt-compat is measured over tcp (the issue's target); over udp only the " \
            "compression formats differ"
    if impl == "vt-compat" and cfg.dev != "tun" and not compat_all:
        return "vt-compat runs on tun/tcp only unless --compat-all (keeps the run short)"
    if ("vtund" in tunnels.sides(impl) and cfg.proto == "udp"
            and cfg.module.endswith(VTUND_UDP_BROKEN)):
        return "vtund over udp with aes cbc/cfb/ofb dies under load (Debian build)"
    return None


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------


def probe_vt(cpus: tuple[int | None, int | None], timeout: float = 15) -> str | None:
    """None when a vt <-> vt tun/tcp tunnel passes pings, else why not (one line)."""
    try:
        with two_hosts() as pair:
            with tunnels.vtun_family("vt", pair, Config("tun", "tcp", "none"), cpus, timeout):
                return None
    except (BenchError, HarnessError, OSError) as e:
        return " ".join(str(e).split())[:300]


def one_case(
    make: Callable[[], AbstractContextManager[Tunnel]],
    seconds: float,
    extras: bool,
    pings: int,
    compressible: bool = False,
) -> dict:
    t0 = time.monotonic()
    try:
        with make() as t:
            res = measure.round_of(t, seconds, extras, pings, compressible)
            if not res.get("alive_after", True) and t.log:
                res["log_tail"] = t.log()[-1500:]  # type: ignore[operator]
    except (BenchError, HarnessError) as e:
        res = {"error": " ".join(str(e).split())[:700]}
    res["case_wall_s"] = round(time.monotonic() - t0, 2)
    return res


def run_rounds(args: argparse.Namespace, configs: list[Config], results: dict) -> None:
    cases: dict = results["cases"]
    impls = results["meta"]["impls"]
    cpus = results["meta"]["cpus"]
    for rnd in range(args.rounds):
        order = impls if rnd % 2 == 0 else list(reversed(impls))
        log(f"round {rnd + 1}/{args.rounds} (order {', '.join(order)})")
        with two_hosts() as pair:
            if "raw" in args.refs:
                log("  raw veth")
                r = one_case(lambda: tunnels.raw(pair, cpus), args.seconds, True, args.pings)
                cases.setdefault(report.REF, {}).setdefault("raw", []).append(r)
            for cfg in configs:
                extras = cfg.module == "none" or args.small_all
                for impl in order:
                    why = skip_reason(impl, cfg, args.compat_all, args.quick)
                    slot = cases.setdefault(cfg.key, {}).setdefault(impl, [])
                    if why:
                        slot.append({"skipped": why})
                        continue
                    log(f"  {cfg.key} {impl}")

                    def make(impl: str = impl, cfg: Config = cfg, pair: Pair = pair):
                        return tunnels.vtun_family(impl, pair, cfg, cpus)

                    r = one_case(make, args.seconds, extras, args.pings,
                                 cfg.module.startswith(("lzo", "zlib")))
                    _say(r)
                    slot.append(r)
            if "openvpn" in args.refs:
                log("  openvpn")
                r = one_case(lambda: tunnels.openvpn(pair, cpus), args.seconds, True, args.pings)
                _say(r)
                cases.setdefault(report.REF, {}).setdefault("openvpn", []).append(r)


def _say(r: dict) -> None:
    if "error" in r:
        log(f"    failed: {r['error'][:200]}")
    else:
        fwd, rev = r.get("fwd", {}), r.get("rev", {})
        log(f"    fwd {fwd.get('mbit_s', 0):.0f} rev {rev.get('mbit_s', 0):.0f} Mbit/s"
            + ("".join(f" [{k}: {v['error'][:100]}]" for k, v in r.items()
                       if isinstance(v, dict) and "error" in v)))  # fmt: skip


def run_scale(args: argparse.Namespace, results: dict) -> None:
    impls = results["meta"]["impls"]
    cpus = results["meta"]["cpus"]
    with two_hosts() as pair:
        scale.prepare_devices(pair, max(args.scale))
        for n in args.scale:
            # vtclients is a vtun client: only the server matters, and vt-compat and the
            # mixed pairs have a server that vtund or vt already covers.
            for impl in (i for i in impls if i in ("vtund", "vt")):
                log(f"  scale N={n} {impl}")
                t0 = time.monotonic()
                try:
                    r = scale.run_scale(impl, pair, n, cpus, rate=args.scale_rate)
                except (BenchError, HarnessError) as e:
                    r = {"n": n, "error": " ".join(str(e).split())[-500:]}
                r["impl"] = impl
                r["wall_s"] = round(time.monotonic() - t0, 2)
                log(f"    {r.get('passing', 0)}/{n} passing, "
                    f"hs p50 {r.get('handshake_p50_ms') or 0:.1f} ms"
                    + (f" error: {r['error']}" if "error" in r else ""))  # fmt: skip
                results["scale"].append(r)


# --------------------------------------------------------------------------------------------


def _version(argv: list[str]) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return ((r.stdout or r.stderr).strip().splitlines() or ["?"])[0][:100]


def _loadavg() -> str:
    """Other work on the machine skews every number: the report shows the load around the run."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="bench/run.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )  # fmt: skip
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 1 round, 2 s per test, 3 configs, N=10 (< 2 min)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=2, help="seconds per iperf3 test")
    ap.add_argument("--pings", type=int, default=25, help="idle pings (20 ms apart)")
    ap.add_argument("--impls", default=DEFAULT_IMPLS,
                    help="comma list from vtund,vt,vt-compat (vt with 'vtmode no', tun/tcp), "
                         "vt-vtund, vtund-vt (mixed, server-client, tun/tcp and tun/udp), "
                         "vt-1p (vt with 'workers 0' both ends; not in the default list)")
    ap.add_argument("--configs", default="all",
                    help="'all' or comma list of dev/proto/module, e.g. tun/tcp/lzo:1")
    ap.add_argument("--refs", default="raw,openvpn", help="comma list from raw,openvpn ('' none)")
    ap.add_argument("--scale", default="10,100,500", help="session counts ('' to skip)")
    ap.add_argument("--scale-rate", type=float, default=50.0,
                    help="new sessions per second in the scale test (0: all at once)")
    ap.add_argument("--small-all", action="store_true",
                    help="64-byte packet test on every config (default: module 'none' only)")
    ap.add_argument("--compat-all", action="store_true",
                    help="vt-compat on ether/tcp too (default: tun/tcp only)")
    ap.add_argument("--pin", choices=("host", "none"), default="host",
                    help="host: server host's processes on CPU 0, client host's on CPU 1")
    ap.add_argument("--skip-vt-probe", action="store_true",
                    help="run vt cases even if the vt probe fails")
    ap.add_argument("--floor-pings", type=int, default=200,
                    help="pings per relay for the interpreter floor (floor.py; 0 to skip)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--render", type=Path, metavar="JSON",
                    help="only rewrite the .md/.png of an earlier run's JSON (no root needed)")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds, args.pings = 1, 2, 25
        args.floor_pings = min(args.floor_pings, 40)
        if args.configs == "all":
            args.configs = ",".join(QUICK_CONFIGS)
        if args.scale == "10,100,500":
            args.scale = "10"
        if args.impls == DEFAULT_IMPLS:
            args.impls = ",".join(QUICK_IMPLS)
    if not 1 <= args.rounds <= 20 or not 1 <= args.seconds <= 60:
        ap.error("--rounds must be 1..20 and --seconds 1..60")
    if not 0 <= args.floor_pings <= 2000:
        ap.error("--floor-pings must be 0..2000")
    args.impls = [i for i in args.impls.split(",") if i]
    if bad := [i for i in args.impls if i not in IMPLS]:
        ap.error(f"unknown impl(s): {', '.join(bad)}")
    args.refs = [r for r in args.refs.split(",") if r]
    if bad := [r for r in args.refs if r not in ("raw", "openvpn")]:
        ap.error(f"unknown reference(s): {', '.join(bad)}")
    try:
        args.scale = [int(n) for n in args.scale.split(",") if n]
    except ValueError:
        ap.error("--scale takes a comma list of integers")
    if any(not 1 <= n <= 1000 for n in args.scale):
        ap.error("--scale counts must be 1..1000")
    known = {c.key: c for c in all_configs()}
    if args.configs == "all":
        args.config_list = list(known.values())
    else:
        wanted = [c for c in args.configs.split(",") if c]
        if bad := [c for c in wanted if c not in known]:
            ap.error(f"unknown config(s): {', '.join(bad)} (e.g. tun/tcp/none, ether/udp/zlib:1)")
        args.config_list = [known[c] for c in wanted]
    return args


def summarize_all(results: dict) -> dict:
    """Medians per (config, impl); an impl skipped in every round is left out (n/a)."""
    cases = {
        key: {impl: report.summarize(rs) for impl, rs in per.items()
              if any("skipped" not in r for r in rs)}
        for key, per in results["cases"].items()
    }  # fmt: skip
    return {"cases": cases, "targets": report.targets(results, cases)}


def render(path: Path, no_plot: bool) -> int:
    """Rewrite the Markdown (and PNG) beside an earlier run's JSON from its raw rounds."""
    try:
        results = json.loads(path.read_text())
        summary = summarize_all(results)
    except (OSError, ValueError, KeyError, AttributeError) as e:
        print(f"bench: cannot read {path}: {e}", file=sys.stderr)
        return 2
    path.with_suffix(".md").write_text(report.markdown(results, summary))
    if not no_plot:
        report.plot(summary, path.with_suffix(".png"))
    log(f"wrote {path.with_suffix('.md')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        return render(args.render, args.no_plot)
    if os.geteuid() != 0 or not netns_usable():
        print("bench: needs root and working `ip netns`", file=sys.stderr)
        return 2
    # A SIGTERM unwinds like Ctrl-C: every tunnel's daemons and namespaces are torn down.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    for tool in ("iperf3", "ping", "taskset"):
        if not shutil.which(tool):
            print(f"bench: {tool} not found (scripts/setup-system)", file=sys.stderr)
            return 2
    if "vtund" in args.impls and not vtund_available():
        print(f"bench: vtund not found at {VTUND}; running without it", file=sys.stderr)
        args.impls.remove("vtund")
    if "openvpn" in args.refs and not tunnels.openvpn_available():
        print("bench: openvpn not installed (apt-get install openvpn); no OpenVPN row",
              file=sys.stderr)  # fmt: skip
        args.refs.remove("openvpn")
    ensure_vtund_dirs()
    ncpu = os.cpu_count() or 1
    cpus = (0, 1 % ncpu) if args.pin == "host" else (None, None)
    started = dt.datetime.now().astimezone()
    t_start = time.monotonic()
    meta = {
        "started": started.isoformat(timespec="seconds"),
        "rounds": args.rounds,
        "seconds": args.seconds,
        "quick": args.quick,
        "impls": list(args.impls),
        "refs": list(args.refs),
        "cpus": cpus,
        "pinning": (f"server host on CPU {cpus[0]}, client host on CPU {cpus[1]} (taskset)"
                    if args.pin == "host" else "none"),  # fmt: skip
        "mtu": tunnels.TUNNEL_MTU,
        "cpu": _cpu_model(),
        "ncpu": ncpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "vtund": _version(["dpkg-query", "-W", "-f=${Version}", "vtun"]),
        "openvpn": (" ".join(_version(["openvpn", "--version"]).split()[:2])
                    if "openvpn" in args.refs else None),
        "iperf3": _version(["iperf3", "--version"]),
        "vt_rev": _version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
        "scale_rate": args.scale_rate,
        "loadavg_start": _loadavg(),
    }
    load1 = float(meta["loadavg_start"].split()[0]) if meta["loadavg_start"] != "?" else 0.0
    if load1 > 0.5 * ncpu:
        log(f"warning: load average {load1} on {ncpu} CPUs: other work will skew the numbers")
    results: dict = {"meta": meta, "cases": {}, "scale": []}
    try:
        if {"vt", "vt-compat", "vt-1p", *tunnels.MIXED} & set(args.impls):
            log("probing vt (vt <-> vt, tun over tcp)")
            why = probe_vt(cpus)
            meta["vt_probe"] = "ok" if why is None else f"failed: {why}"
            if why is not None and not args.skip_vt_probe:
                log(f"vt probe failed, vt cases are n/a: {why}")
                args.impls = [i for i in args.impls if i == "vtund"]
                meta["impls"] = list(args.impls)
        else:
            meta["vt_probe"] = "not run"
        if args.floor_pings > 0:
            log("interpreter floor (loopback relays)")
            try:
                results["floor"] = floor.measure(args.floor_pings)
            except FloorError as e:
                results["floor"] = {"error": str(e)}
        run_rounds(args, args.config_list, results)
        if args.scale and args.impls:
            log("scale")
            run_scale(args, results)
    except KeyboardInterrupt:
        log("interrupted: writing what was measured")
        meta["interrupted"] = True
    except HarnessError as e:  # e.g. a namespace that would not go away
        log(f"harness error, writing what was measured: {e}")
        meta["harness_error"] = str(e)[:400]
    finally:
        tunnels.cleanup_pki()
    meta["wall_s"] = round(time.monotonic() - t_start, 1)
    meta["loadavg_end"] = _loadavg()
    summary = summarize_all(results)
    results["summary"] = summary
    write_outputs(args, results, summary, started)
    log(f"done in {meta['wall_s']:.0f} s")
    return 0


def write_outputs(args: argparse.Namespace, results: dict, summary: dict, started) -> None:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%S") + ("-quick" if args.quick else "")
    md = report.markdown(results, summary)
    (out / f"{stamp}.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (out / f"{stamp}.md").write_text(md)
    (out / "latest.md").write_text(md)
    (out / "latest.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    if not args.no_plot:
        try:
            report.plot(summary, out / f"{stamp}.png")
            shutil.copyfile(out / f"{stamp}.png", out / "latest.png")
        except ImportError:
            log("matplotlib missing (pip install -e '.[bench]'): no plot")
    print(md)
    log(f"wrote {out / stamp}.json/.md{'' if args.no_plot else '/.png'} and latest.*")


if __name__ == "__main__":
    sys.exit(main())
