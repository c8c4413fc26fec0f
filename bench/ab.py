"""Paired, interleaved A/B of two vt trees on one tunnel config (issue 19's measurements).

    .venv/bin/python bench/ab.py --old /tmp/base --rounds 3 --config tun/udp/none

Each round runs the old tree, then this one (the order swapped every other round), each
on a fresh tunnel in fresh namespaces, pinned like ``bench/run.py`` (A on CPU 0, B on
CPU 1): iperf3 fwd and rev with a ping alongside.  The old tree is an unpacked copy of
another revision (``git archive REV | tar -x -C DIR``); its daemons run with PYTHONPATH
pointing at it, so the same venv serves both.  ``--spy DIR`` records every daemon
process during the fwd test of the first two rounds: with py-spy (collapsed stacks; wall
time: a system call shows the time the daemon was preempted in it too), or with
``AB_PERF=1`` ``perf record`` of the daemons (CPU time by DSO and symbol), or with
``AB_STRACE=1`` ``strace -c`` (system calls per daemon).
Prints one line per test and the medians; needs root.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT / "bench", ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import measure  # noqa: E402
import tunnels  # noqa: E402
from netns import two_hosts  # noqa: E402
from tunnels import Config  # noqa: E402

PARTS = ("", "api", "devices", "plugins/vt_crypto", "plugins/vt_lzo", "plugins/vt_shaper",
         "plugins/vt_zlib")


def tree_env(tree: Path | None) -> None:
    """Daemons started from now on import ``tree`` (None: this checkout, as installed)."""
    if tree is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = ":".join(str(tree / part) for part in PARTS)


def one(name: str, tree: Path | None, cfg: Config, seconds: float, perf: Path | None,
        impl: str = "vt") -> dict:
    tree_env(tree)
    out: dict = {"tree": name}
    try:
        with two_hosts() as pair, tunnels.vtun_family(impl, pair, cfg, (0, 1)) as t:
            recs = []
            if perf is not None and os.environ.get("AB_PERF"):
                recs.append(subprocess.Popen(
                    ["perf", "record", "-o", str(perf / f"{name}.perf"), "-p",
                     ",".join(map(str, measure_pids(t))), "--", "sleep", str(int(seconds))],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            elif perf is not None and os.environ.get("AB_STRACE"):
                for pid in measure_pids(t):
                    recs.append(subprocess.Popen(
                        ["timeout", "-s", "INT", str(int(seconds)), "strace", "-c", "-f", "-o",
                         str(perf / f"{name}-{pid}.strace"), "-p", str(pid)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            elif perf is not None:
                spy = Path(sys.executable).parent / "py-spy"
                for pid in measure_pids(t):
                    recs.append(subprocess.Popen(
                        [spy, "record", "-d", str(int(seconds)), "-r", "250", "--nonblocking",
                         "-f", "raw", "-o", str(perf / f"{name}-{pid}.txt"), "-p", str(pid)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            for what, rev in (("fwd", False), ("rev", True)):
                r = measure.throughput(t, seconds, reverse=rev)
                out[what] = {
                    "mbit_s": round(r["mbit_s"]),
                    "s_gb": round(r.get("cpu_s_per_gb") or 0, 2),
                    "retr": r["retransmits"],
                    "ping_p50": r["ping_loaded"]["p50_ms"],
                }
                for rec in recs:
                    rec.wait(timeout=seconds + 30)
                recs = []
    finally:
        tree_env(None)
    return out


def measure_pids(t: tunnels.Tunnel) -> list[int]:
    from procstat import tree
    return [*tree(t.a_roots), *tree(t.b_roots)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", type=Path, required=True, help="unpacked tree of the old revision")
    ap.add_argument("--new", type=Path, help="unpacked tree of the new revision (default: this one)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4)
    ap.add_argument("--config", default="tun/udp/none")
    ap.add_argument("--impl", default="vt", help="vt, or a mixed pair: vt-vtund, vtund-vt")
    ap.add_argument("--spy", type=Path, help="directory for py-spy stacks of round 1")
    ap.add_argument("--json", type=Path, help="write every result here")
    args = ap.parse_args()
    cfg = Config(*args.config.split("/"))
    results: list[dict] = []
    for i in range(args.rounds):
        order = [("old", args.old), ("new", args.new)]
        if i % 2:
            order.reverse()
        for name, tree in order:
            r = one(name, tree, cfg, args.seconds, args.spy if i < 2 else None, args.impl)
            r["round"] = i
            results.append(r)
            print(json.dumps(r), flush=True)
    for name in ("old", "new"):
        for what in ("fwd", "rev"):
            rs = [r[what] for r in results if r["tree"] == name and what in r]
            if rs:
                print(f"{name} {what}: median {statistics.median(x['mbit_s'] for x in rs)} Mbit/s,"
                      f" {statistics.median(x['s_gb'] for x in rs)} CPU s/GB,"
                      f" ping p50 {statistics.median(x['ping_p50'] or 0 for x in rs)} ms,"
                      f" retr {[x['retr'] for x in rs]}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
