"""The long fault run (``make faults``): every scenario of ``faults.py`` at full size, vt
and, where it applies, vtund as the anchor; writes ``bench/results/faults-<stamp>.md`` and
``.json``.  Needs root (network namespaces).  Bounded: a scenario that would start after
``--budget`` seconds is recorded as skipped.

    python tests/faults/run.py [--quick] [--only NAME ...] [--budget 840]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import faults

RESULTS = faults.ROOT / "bench" / "results"
SCENARIO_LIMIT = 400
"""Seconds one scenario may take (the longest, 20,000 handshakes, takes about 160)."""


class ScenarioTimeout(BaseException):
    """Raised by SIGALRM; a BaseException, so no harness except-clause swallows it."""


def _over_time(signum, frame) -> None:
    raise ScenarioTimeout


def plan(quick: bool) -> list[tuple[str, Callable[[], dict]]]:
    """(name, scenario) in the order they run; ``quick`` is about the CI sizes."""
    f = faults
    hs, hs_vtund = (2000, 1000) if quick else (20000, 2000)
    frames, combos = (300, f.SHORT_COMBOS) if quick else (2000, f.COMBOS)
    stop_s = 3 if quick else 10
    size = 128 << 10 if quick else 4 << 20
    sighups = 12 if quick else 200
    rounds = 3 if quick else 10
    per_round = 10 if quick else 30
    out: list[tuple[str, Callable[[], dict]]] = [
        ("handshake fuzz vt", lambda: f.handshake_fuzz(hs, 20, wait=0.3)),
        ("handshake fuzz vtund", lambda: f.handshake_fuzz(hs_vtund, 20, impl="vtund",
                                                           wait=0.3)),
        ("frame fuzz vt", lambda: f.frame_fuzz(frames, combos)),
        ("frame fuzz vtund", lambda: f.frame_fuzz(frames, combos, impl="vtund")),
    ]
    for impl in ("vt", "vtund"):
        for proto in ("tcp", "udp"):
            for end in ("server", "client"):
                bound = 100 if proto == "udp" else 40
                out.append((f"kill -9 {end} {proto} {impl}",
                            lambda i=impl, p=proto, e=end, b=bound: f.kill9(p, e, i, b)))
    for impl in ("vt", "vtund"):
        for proto in ("tcp", "udp"):
            out.append((f"SIGSTOP {stop_s}s {proto} {impl}",
                        lambda i=impl, p=proto: f.stop_cont(p, stop_s, i)))
            out.append((f"5% loss+reorder {proto} {impl}",
                        lambda i=impl, p=proto: f.lossy_transfer(p, size, i)))
    out.append(("broken-config SIGHUPs vt", lambda: f.config_sighup(sighups)))
    for impl in ("vt", "vtund"):
        out.append((f"churn {rounds * per_round} sessions {impl}",
                    lambda i=impl: f.churn(rounds, per_round, i)))
    return out


def run(quick: bool, only: list[str], budget: float) -> dict:
    started = time.monotonic()
    results = []
    signal.signal(signal.SIGALRM, _over_time)
    for name, scenario in plan(quick):
        if only and not any(o in name for o in only):
            continue
        if time.monotonic() - started > budget:
            results.append({"name": name, "status": "skipped (time budget)"})
            continue
        t0 = time.monotonic()
        print(f"== {name}", flush=True)
        signal.alarm(SCENARIO_LIMIT)  # a wait that does not end ends the scenario
        try:
            figures = scenario()
            status = "pass"
        except ScenarioTimeout:
            figures, status = {"error": f"over {SCENARIO_LIMIT} s"}, "TIMEOUT"
        except AssertionError as exc:
            figures, status = {"error": str(exc)[-1500:]}, "FAIL"
        except Exception as exc:  # a harness error: recorded, the run goes on
            figures = {"error": f"{type(exc).__name__}: {exc}"[-1500:],
                       "trace": traceback.format_exc()[-1500:]}
            status = "ERROR"
        finally:
            signal.alarm(0)
        results.append({"name": name, "status": status,
                        "seconds": round(time.monotonic() - t0, 1), "figures": figures})
        print(f"   {status} in {results[-1]['seconds']} s: {json.dumps(figures)[:400]}",
              flush=True)
    commit = subprocess.run(["git", "-C", str(faults.ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    return {"when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "quick": quick,
            "commit": commit, "kernel": platform.release(),
            "wall_s": round(time.monotonic() - started, 1), "results": results}


def _row(r: dict) -> str:
    f = r.get("figures", {})
    name = r["name"]
    if "error" in f:
        what = f["error"].splitlines()[0][:200]
    elif name.startswith("handshake"):
        what = (f"{f['n']} mutated at concurrency {f['concurrency']} in {f['wall_s']} s "
                f"({f['per_s']}/s): {f['outcomes']}; good logins {f['good_ok']} ok, "
                f"{f['good_failed']} failed, p50 {f['good_p50_ms']} ms, max {f['good_max_ms']} "
                f"ms; server fds {f['server_before']['fds']} -> {f['server_after']['fds']}, "
                f"RSS {f['server_before']['rss_kb']} -> {f['server_after']['rss_kb']} KiB")
    elif name.startswith("frame"):
        ok = sum(s["survived"] for s in f["sessions"])
        again = sum(s["served_after"] for s in f["sessions"])
        what = (f"{len(f['sessions'])} sessions x {f['frames_per_session']} damaged frames "
                f"(+50 undefined flags, +50 bad): {ok} sessions carried on, {again} profiles "
                "served after")
    elif name.startswith("kill"):
        what = (f"recovery {f['recovery_s']} s" if f["recovery_s"] is not None else
                f"**no recovery within {f['bound_s']} s**")
    elif name.startswith("SIGSTOP"):
        what = f"recovery {f['recovery_s']} s, new sessions {f['new_sessions']}"
    elif name.startswith("5%"):
        counts = f["underlay"].get("counts") or []
        shown = "; ".join(f"{c['dropped']} dropped, {c['reordered']} reordered of "
                          f"{c['packets']}" for c in counts if "packets" in c)
        what = (f"{f['bytes']} B each way, identical: b->a {f['b->a']['seconds']} s, "
                f"a->b {f['a->b']['seconds']} s ({f['underlay']['method']}"
                f"{': ' + shown if shown else ''})")
    elif name.startswith("broken"):
        what = (f"{f['sighups']} SIGHUPs: {f['refused']} refused, {f['accepted_valid']} "
                f"valid; {f['pings_answered']} pings answered, longest gap "
                f"{f['longest_gap_s']} s, no session lost")
    elif name.startswith("churn"):
        w, a = f["after_first_round"], f["after_all"]
        what = (f"{f['passing']}/{f['sessions']} passed traffic; after round 1 -> end: RSS "
                f"{w['rss_kb']} -> {a['rss_kb']} KiB, PSS {w['pss_kb']} -> {a['pss_kb']} "
                f"KiB, fds {w['fds']} -> {a['fds']}, lock files {f['lock_files_after']}")
    else:
        what = json.dumps(f)[:200]
    return f"| {name} | {r['status']} | {r.get('seconds', '')} | {what} |"


def markdown(doc: dict) -> str:
    lines = [
        f"# Fault run {doc['when']}{' (quick)' if doc['quick'] else ''}",
        "",
        f"Commit {doc['commit']}, kernel {doc['kernel']}, {doc['wall_s']} s in all. "
        "Made by `make faults` (tests/faults/run.py; the scenarios are tests/faults/faults.py, "
        "their CI-sized versions tests/faults/test_faults.py).",
        "",
        "| scenario | result | seconds | figures |",
        "|---|---|---|---|",
        *(_row(r) for r in doc["results"]),
        "",
        "Frame fuzz per session (survived: the raw peer's echo still came back after the "
        "damage; a zlib stream ends the session instead, and the profile is then served "
        "again):",
        "",
        "| server | proto | compress | encrypt | survived | served after | bad_frames | "
        "unknown_frames | dropped_decode |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["results"]:
        if not r["name"].startswith("frame"):
            continue
        impl = r.get("figures", {}).get("impl")
        for s in r.get("figures", {}).get("sessions", []):
            comp = s["compress"] or "-"
            enc = (s["encrypt"] or "-") + (f" speed {s['speed']}" if s.get("speed") else "")
            lines.append(f"| {impl} | {s['proto']} | {comp} | {enc} | {s['survived']} | "
                         f"{s['served_after']} | {s.get('bad_frames', '')} | "
                         f"{s.get('unknown_frames', '')} | {s.get('dropped_decode', '')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="CI sizes (a smoke run)")
    ap.add_argument("--only", nargs="*", default=[], help="scenarios whose name has one")
    ap.add_argument("--budget", type=float, default=780,
                    help="seconds after which no scenario starts")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--render", type=Path, help="only write the .md of this .json again")
    a = ap.parse_args(argv)
    if a.render:
        a.render.with_suffix(".md").write_text(markdown(json.loads(a.render.read_text())))
        return 0
    doc = run(a.quick, a.only, a.budget)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"faults-{stamp}.json").write_text(json.dumps(doc, indent=1) + "\n")
    (a.out / f"faults-{stamp}.md").write_text(markdown(doc))
    print(f"written {a.out}/faults-{stamp}.md", flush=True)
    return 0 if all(r["status"] in ("pass",) for r in doc["results"]) else 1


if __name__ == "__main__":
    sys.exit(main())
