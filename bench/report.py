"""Turn raw per-round results into medians, a Markdown report and a PNG plot.

Input is the ``results`` dict built by ``run.py``: ``cases[config_key][impl]`` is a list
of per-round dicts from :func:`measure.round_of` (or ``{"error": ...}``), ``scale`` a list
of :func:`scale.run_scale` results.  Medians are taken over rounds that produced a number.
"""

from __future__ import annotations

import statistics
from pathlib import Path

IMPLS = ("vtund", "vt", "vt-compat", "vt-vtund", "vtund-vt", "vt-1p")
"""vt-vtund = vt server with a vtund client, vtund-vt the reverse (server-client); vt-1p =
vt <-> vt in one process each (``workers 0``), against which vt's default worker split
is judged (asked for with ``--impls``)."""
TUN_TCP = ("tun/tcp/none", "tun/tcp/lzo:1", "tun/tcp/zlib:1", "tun/tcp/aes128cbc")
TUN_UDP = ("tun/udp/none", "tun/udp/lzo:1", "tun/udp/zlib:1")
"""The tun/udp configs a vtund side can run (its AES modes die over UDP under load)."""
SESSION_PSS_MAX_KB = 256.0
"""The issue's memory target: at most 0.25 MiB of server PSS per idle session."""
STARTUP_SLACK = 1.02
"""Start-up of N sessions "no slower than vtund's": within 2 %, as the pacing of the
connects (--scale-rate) takes most of that time for both servers."""
REF = "reference"
"""Pseudo config key for the raw veth and OpenVPN rows."""


def _get(d: object, path: str) -> float | None:
    for part in path.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d if isinstance(d, (int, float)) and not isinstance(d, bool) else None


def med(rounds: list[dict], path: str) -> float | None:
    vals = [v for r in rounds if (v := _get(r, path)) is not None]
    return statistics.median(vals) if vals else None


def _cpu_per_gb(r: dict) -> float | None:
    """Daemon CPU seconds (both hosts) per GB over the fwd and rev runs together."""
    cpu = nbytes = 0.0
    for way in ("fwd", "rev"):
        a, b, n = _get(r, f"{way}.cpu_s.a"), _get(r, f"{way}.cpu_s.b"), _get(r, f"{way}.bytes")
        if a is None or b is None or not n:
            return None
        cpu += a + b
        nbytes += n
    return cpu / (nbytes / 1e9)


def _busy(r: dict, way: str, side: str) -> float | None:
    """Share of one CPU that a host's daemons used during a TCP test (1.0: saturated)."""
    cpu, wall = _get(r, f"{way}.cpu_s.{side}"), _get(r, f"{way}.wall_s")
    return cpu / wall if cpu is not None and wall else None


def summarize(rounds: list[dict]) -> dict:
    """Medians of the numbers that the tables show, for one (config, impl)."""
    for r in rounds:
        if "cpu_per_gb" not in r and "fwd" in r:
            r["cpu_per_gb"] = _cpu_per_gb(r)
    s = {
        "fwd_mbit": med(rounds, "fwd.mbit_s"),
        "rev_mbit": med(rounds, "rev.mbit_s"),
        "rep_mbit": med(rounds, "fwd_rep.mbit_s"),
        "rep_cpu_per_gb": med(rounds, "fwd_rep.cpu_s_per_gb"),
        "cpu_per_gb": med(rounds, "cpu_per_gb"),
        "idle_p50": med(rounds, "idle.p50_ms"),
        "idle_p99": med(rounds, "idle.p99_ms"),
        "load_p50": med(rounds, "fwd.ping_loaded.p50_ms"),
        "load_p99": med(rounds, "fwd.ping_loaded.p99_ms"),
        "load_loss": med(rounds, "fwd.ping_loaded.loss"),
        "pps": med(rounds, "small.pps"),
        "pps_loss": med(rounds, "small.loss"),
        "hwm_a_kb": med(rounds, "mem.hwm_kb.a"),
        "hwm_b_kb": med(rounds, "mem.hwm_kb.b"),
        "pss_a_kb": med(rounds, "mem.pss_kb.a"),
        "pss_b_kb": med(rounds, "mem.pss_kb.b"),
        "rounds": len(rounds),
        "ok_rounds": sum(1 for r in rounds if _get(r, "fwd.mbit_s") is not None),
    }
    for way in ("fwd", "rev"):
        for side in "ab":
            busy = [b for r in rounds if (b := _busy(r, way, side)) is not None]
            s[f"{way}_busy_{side}"] = statistics.median(busy) if busy else None
        mbit = [v for r in rounds if (v := _get(r, f"{way}.mbit_s")) is not None]
        s[f"{way}_mbit_range"] = [min(mbit), max(mbit)] if len(mbit) > 1 else None
    errors = sorted({str(v["error"])[:700] for r in rounds for v in _errors(r)})
    if errors:
        s["errors"] = errors
    return s


def _errors(r: dict) -> list[dict]:
    if "error" in r:
        return [r]
    return [v for v in r.values() if isinstance(v, dict) and "error" in v]


def _f(v: float | None, fmt: str = "{:.0f}") -> str:
    return "n/a" if v is None else fmt.format(v)


def _ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or not b else f"{a / b:.2f}"


def _mb(kb: float | None) -> str:
    return "n/a" if kb is None else f"{kb / 1024:.1f}"


def _short_key(key: str) -> str:
    return key.removeprefix("tun/tcp/").removeprefix("tun/udp/")


def _throughput_target(
    cases: dict, impls: tuple[str, ...], floor: float, name: str, mixed: bool = False,
    keys: tuple[str, ...] = TUN_TCP,
) -> dict:
    """Worst fwd/rev throughput ratio against vtund over the ``keys`` configs measured;
    for ``mixed`` pairs (named server-client), a miss says how busy each daemon was."""
    parts, ratios, missing = [], [], []
    for impl in impls:
        for key in keys:
            if impl not in cases.get(key, {}):
                continue
            pair = []
            for f in ("fwd_mbit", "rev_mbit"):
                a, b = cases[key].get(impl, {}).get(f), cases[key].get("vtund", {}).get(f)
                r = a / b if a is not None and b else None
                pair.append(_f(r, "{:.2f}"))
                if r is None:
                    missing.append(f"{impl} {_short_key(key)}")
                    continue
                where = f"{impl} {_short_key(key)} {f[:3]}"
                if mixed and r < floor and (busy := _who_was_busy(cases[key], impl, f[:3])):
                    where += f"; {busy}"
                ratios.append((r, where))
            label = f"{impl} " if len(impls) > 1 else ""
            parts.append(f"{label}{_short_key(key)} {pair[0]}/{pair[1]}")
    worst = min(ratios, default=None)
    measured = "; ".join(parts) + (f" — worst {worst[0]:.2f} ({worst[1]})" if worst else "")
    met = None if not ratios else (not missing and worst[0] >= floor)  # type: ignore[index]
    return {"target": name, "measured": measured or "not measured", "met": met}


def _who_was_busy(case: dict, impl: str, way: str) -> str:
    """For a mixed pair below its target: how busy each daemon was, beside vtund <-> vtund.

    On a host of its own a daemon at ~100% of a CPU is the bottleneck; this tells a slow
    vt from a saturated vtund.  vtund <-> vtund's own spread over the rounds says how far
    a median of so few rounds can be trusted near the target."""
    mine, base = case.get(impl, {}), case.get("vtund", {})
    srv, cli = impl.split("-")
    parts = []
    for side, name in (("a", f"{srv} server"), ("b", f"{cli} client")):
        got, ref = mine.get(f"{way}_busy_{side}"), base.get(f"{way}_busy_{side}")
        if got is None:
            return ""
        parts.append(f"{name} {got:.0%}" + (f" (vtund {ref:.0%})" if ref is not None else ""))
    note = "CPU busy: " + ", ".join(parts)
    spread, median = base.get(f"{way}_mbit_range"), base.get(f"{way}_mbit")
    if spread and median:
        lo, hi = (v / median for v in spread)
        note += f"; vtund ↔ vtund's own rounds ran {lo:.2f}-{hi:.2f}× their median"
    return note


def _verdict(target: str, parts: list[str], ok: list[bool]) -> dict:
    """A target judged config by config: met only if every measured one is, None if none."""
    return {"target": target, "measured": "; ".join(parts) or "not measured",
            "met": None if not ok else all(ok)}


def _udp_keys(cases: dict) -> list[str]:
    """The udp configs of this run (the references aside)."""
    return [key for key in cases if key != REF and "/udp/" in key]


def _secure_target(cases: dict) -> dict:
    """Secure mode (vt <-> vt, ``encrypt aead``) against vtund's aes128cbc and OpenVPN."""
    parts, ok = [], []
    for proto in ("tcp", "udp"):
        mine = cases.get(f"tun/{proto}/aead", {}).get("vt", {})
        base = cases.get(f"tun/{proto}/aes128cbc", {}).get("vtund", {})
        ovpn = cases.get(REF, {}).get("openvpn", {})
        for f in ("fwd_mbit", "rev_mbit"):
            a = mine.get(f)
            for name, ref in (("vtund aes128cbc", base.get(f)), ("OpenVPN", ovpn.get(f))):
                if a is None or not ref:
                    continue
                ok.append(a >= ref)
                parts.append(f"tun/{proto} {f[:3]} {a / ref:.2f}× {name}")
    return _verdict("secure mode (aead) ≥ vtund aes128cbc and ≥ OpenVPN 2.6, every direction", parts, ok)


UDP_CPU_CEILING = 0.3
"""Issue 19: vt <-> vt over UDP at most 0.3x vtund's CPU seconds per GB."""


def _udp_cpu_target(cases: dict) -> dict:
    """vt's CPU per GB over UDP against vtund's, every udp config both ran (issue 19)."""
    parts, ok = [], []
    for key in _udp_keys(cases):
        a = cases[key].get("vt", {}).get("cpu_per_gb")
        b = cases[key].get("vtund", {}).get("cpu_per_gb")
        if a is None or not b:
            continue
        ok.append(a / b <= UDP_CPU_CEILING)
        parts.append(f"{key} {a / b:.2f}")
    return _verdict("CPU s/GB over udp ≤ 0.3× vtund (vt native, every udp config)", parts, ok)


def _secure_udp_target(cases: dict) -> dict:
    """Secure mode over UDP: ≥ 4x OpenVPN (AES-256-GCM over UDP) and ≥ 0.7x secure mode
    over TCP, both directions (issue 19)."""
    mine = cases.get("tun/udp/aead", {}).get("vt", {})
    refs = (("OpenVPN", cases.get(REF, {}).get("openvpn", {}), 4.0),
            ("vt secure over tcp", cases.get("tun/tcp/aead", {}).get("vt", {}), 0.7))
    parts, ok = [], []
    for name, ref, floor in refs:
        for f in ("fwd_mbit", "rev_mbit"):
            a, b = mine.get(f), ref.get(f)
            if a is None or not b:
                continue
            ok.append(a / b >= floor)
            parts.append(f"{f[:3]} {a / b:.2f}× {name}")
    return _verdict("secure mode over udp ≥ 4× OpenVPN and ≥ 0.7× secure mode over tcp", parts, ok)


def _loaded_ping_target(cases: dict) -> dict:
    """vt's ping under load over UDP against the same over TCP (issue 19), per config."""
    parts, ok = [], []
    for key in _udp_keys(cases):
        udp = cases[key].get("vt", {}).get("load_p50")
        tcp = cases.get(key.replace("/udp/", "/tcp/"), {}).get("vt", {}).get("load_p50")
        if udp is None or tcp is None:
            continue
        ok.append(udp <= tcp)
        parts.append(f"{key} {udp:.2f} ms against {tcp:.2f} over tcp")
    return _verdict("loaded ping p50 over udp ≤ over tcp (vt native, same dev and module)", parts, ok)


WORKERS_IDLE_SLACK_MS = 0.05
WORKERS_LOADED_SLACK = 1.10
"""Idle ping with workers (vt) against one process (vt-1p): at most 0.05 ms slower;
loaded ping at most 10 % slower (it moves by milliseconds from round to round).  Issue
18: no latency regression."""


def _workers_target(cases: dict) -> dict:
    """vt as shipped (a root master, its data path in workers) against vt-1p (one process
    each end), per config measured by both: idle and loaded ping p50 (issue 18)."""
    parts, misses, judged = [], [], 0
    for key in cases:
        mine, one = cases[key].get("vt", {}), cases[key].get("vt-1p", {})
        shown = []
        for field, what in (("idle_p50", "idle"), ("load_p50", "loaded")):
            a, b = mine.get(field), one.get(field)
            if a is None or b is None:
                continue
            judged += 1
            ok = a <= b + WORKERS_IDLE_SLACK_MS if what == "idle" else a <= b * WORKERS_LOADED_SLACK
            shown.append(f"{what} {a:.2f} against {b:.2f} ms")
            if not ok:
                misses.append(f"{key} {what}")
        if shown:
            parts.append(f"{key} " + ", ".join(shown))
    measured = "; ".join(parts) + (f" — not within: {', '.join(misses)}" if misses else "")
    return {"target": "workers (vt) vs one process (vt-1p): idle ping p50 ≤ +0.05 ms, "
                      "loaded ≤ 1.1×",
            "measured": measured or "not measured",
            "met": None if not judged else not misses}


def targets(results: dict, cases: dict) -> list[dict]:
    """The issue's targets against this run: what was measured and whether it was met.

    ``met`` is True, False, or None (not measured in this run); a target over several
    configs is met only if every measured config meets it and none failed.
    """
    out = [
        _throughput_target(cases, ("vt-vtund", "vtund-vt"), 0.95,
                           "mixed vt ↔ vtund, tun/tcp, fwd and rev ≥ 0.95× vtund ↔ vtund",
                           mixed=True),
        _throughput_target(cases, ("vt-vtund", "vtund-vt"), 0.95,
                           "mixed vt ↔ vtund, tun/udp, fwd and rev ≥ 0.95× vtund ↔ vtund",
                           mixed=True, keys=TUN_UDP),
        _throughput_target(cases, ("vt-compat",), 1.0,
                           "vt-compat (vtun wire), tun/tcp, fwd and rev ≥ 1.0× vtund"),
        _throughput_target(cases, ("vt",), 4.0,
                           "vt native, tun/tcp, fwd and rev ≥ 4× vtund"),
        _throughput_target(cases, ("vt",), 4.0,
                           "vt native, tun/udp, fwd and rev ≥ 4× vtund", keys=("tun/udp/none",)),
        _throughput_target(cases, ("vt",), 3.0, "vt native, ether/udp, fwd and rev ≥ 3× vtund",
                           keys=("ether/udp/none",)),
    ]  # fmt: skip
    keys = [k for k in cases if k != REF and "vt" in cases[k] and "vtund" in cases[k]]

    def worst(field: str, how) -> tuple[list, list]:
        got = []
        for k in keys:
            a, b = cases[k]["vt"].get(field), cases[k]["vtund"].get(field)
            if a is not None and b is not None and (v := how(a, b)) is not None:
                got.append((v, k))
        return got, [k for k in keys if all(k != g[1] for g in got)]

    got, missing = worst("idle_p50", lambda a, b: a - b)
    ok = [k for v, k in got if v <= 0.05]
    if got:
        v, k = max(got)
        meas = (f"vt − vtund worst {v:+.2f} ms ({k}); within +0.05 ms on "
                f"{len(ok)}/{len(got)} configs")  # fmt: skip
        if (hop := floor_hops(results.get("floor"))) is not None:
            meas += (f"; floor: a bare Python loop adds {hop:+.0f} µs per hop over C, "
                     f"{4 * hop / 1000:+.2f} ms per idle ping")
    out.append({"target": "idle ping p50 ≤ vtund + 0.05 ms (vt native, every config)",
                "measured": meas if got else "not measured",
                "met": None if not got else len(ok) == len(got) and not missing})  # fmt: skip

    got, missing = worst("cpu_per_gb", lambda a, b: a / b if b else None)
    ok = [k for v, k in got if v <= 1.0]
    if got:
        v, k = max(got)
        tt = ", ".join(f"{_short_key(k)} {r:.2f}" for r, k in got if k in TUN_TCP)
        meas = (f"vt/vtund worst {v:.2f} ({k}); ≤ 1.0 on {len(ok)}/{len(got)} configs"
                + (f" (tun/tcp: {tt})" if tt else ""))  # fmt: skip
    out.append({"target": "CPU s/GB ≤ vtund (vt native, every config)",
                "measured": meas if got else "not measured",
                "met": None if not got else len(ok) == len(got) and not missing})  # fmt: skip

    out.append(_secure_target(cases))
    out.append(_udp_cpu_target(cases))
    out.append(_secure_udp_target(cases))
    out.append(_loaded_ping_target(cases))
    out.append(_workers_target(cases))

    out += scale_targets(results.get("scale", []))
    return out


def _scale_rows(rows: list[dict], impl: str, n: int) -> tuple[list[dict], list[dict]]:
    """(measured rows, failed rows) of one server at one session count."""
    mine = [r for r in rows if r.get("impl") == impl and r.get("n") == n]
    return [r for r in mine if "error" not in r], [r for r in mine if "error" in r]


def scale_targets(rows: list[dict], n: int = 500) -> list[dict]:
    """The scale targets at ``n`` sessions: memory per idle session, and start-up time.

    Memory is the PSS summed over every process of the server (vtund's session children,
    vt's workers); judged on its anonymous part when measured.  Start-up runs from the
    first connect until every session has passed traffic; over several rounds, medians."""
    ok_rows, bad = _scale_rows(rows, "vt", n)
    if ok_rows:
        anon = med(ok_rows, "anon_pss_per_session_kb")
        pss = anon if anon is not None else med(ok_rows, "pss_per_session_kb")
        passing = min(r.get("passing", 0) for r in ok_rows)
        logged = min(r.get("logged_in", 0) for r in ok_rows)
        procs = max(r.get("server_procs", 1) for r in ok_rows)
        meas = (f"{passing}/{n} passing traffic, {logged} logged in; "
                f"server {'anonymous ' if anon is not None else ''}PSS "
                f"{_f(pss / 1024 if pss is not None else None, '{:.3f}')} MiB/session"
                + (f" ({procs} server processes)" if procs > 1 else ""))
        met = passing == n and pss is not None and pss <= SESSION_PSS_MAX_KB
    else:
        meas = f"error: {bad[-1]['error'][:120]}" if bad else "not run"
        met = False if bad else None
    out = [{"target": f"vt server, {n} sessions: all pass traffic, PSS ≤ 0.25 MiB/session",
            "measured": meas, "met": met}]  # fmt: skip
    base, _ = _scale_rows(rows, "vtund", n)
    a, b = med(ok_rows, "ready_wall_s"), med(base, "ready_wall_s")
    if a is not None and b:
        meas = (f"vt {a:.2f} s, vtund {b:.2f} s ({a / b:.2f}×)"
                + (f"; sessions opened at {ok_rows[0]['rate']:g}/s"
                   if ok_rows[0].get("rate") else "; all at once"))
        # Start-up ends when every session passes traffic: a time that ran into the
        # client's timeout with sessions missing is no start-up at all.
        short = {name: min(r.get("passing", 0) for r in got)
                 for name, got in (("vt", ok_rows), ("vtund", base))}
        short = {k: v for k, v in short.items() if v < n}
        if short:
            meas += "; not all up: " + ", ".join(f"{k} {v}/{n}" for k, v in short.items())
        met = a <= b * STARTUP_SLACK and "vt" not in short
    else:
        meas, met = ("not measured" if not bad else f"error: {bad[-1]['error'][:120]}"), None
    out.append({"target": f"start-up of {n} sessions (first connect to all passing traffic) "
                          f"≤ vtund's (+{STARTUP_SLACK - 1:.0%})",
                "measured": meas, "met": met})  # fmt: skip
    return out


def scale_md(rows: list[dict], rate: object) -> list[str]:
    """The scale table: memory (whole server process tree) and start-up, per N and server."""
    lines = [
        "",
        "## Scale: N concurrent sessions against one server (tun over tcp)",
        "",
        f"Sessions opened at {rate}/s by one Python client process "
        "(bench/vtclients.py), then all held open; each passes one ICMP echo through "
        "its tunnel. Memory per session = growth of the PSS summed over the server's whole "
        "process tree (the server PID and every descendant: vtund's session processes, vt's "
        "workers) over the idle server, divided by N: all of it, and its anonymous "
        "part (Pss_Anon + Pss_Shmem), which the target is judged on. The whole PSS "
        "also moves with the share of library pages, which falls when the client "
        "process maps the same files (same libpython for vt: growth below zero). "
        "Start-up = first connect until every session passed its echo.",
        "",
    ]
    lines += _table_head(
        ["N", "server", "logged in", "passing traffic", "handshake p50 ms",
         "handshake p99 ms", "start-up s", "PSS/session KB", "anon PSS/session KB",
         "server PSS MB", "server procs"]
    )  # fmt: skip
    for s in rows:
        if "error" in s:
            lines.append(f"| {s.get('n')} | {s.get('impl')} | error: {s['error'][:80]} |")
            continue
        lines.append(
            "| " + " | ".join([
                str(s["n"]), s["impl"], str(s["logged_in"]), str(s["passing"]),
                _f(s["handshake_p50_ms"], "{:.1f}"), _f(s["handshake_p99_ms"], "{:.1f}"),
                _f(s.get("ready_wall_s"), "{:.2f}"),
                _f(s["pss_per_session_kb"]), _f(s.get("anon_pss_per_session_kb")),
                _mb(s["server_pss_kb"]),
                str(s["server_procs"]),
            ]) + " |"
        )  # fmt: skip
    return lines


FLOOR_NAMES = {"c": "C (`floor/relay.c`)", "python-epoll": "Python, bare `select.epoll` loop",
               "asyncio": "Python, asyncio `add_reader`",
               "vt-dataloop": "Python, vt's DataLoop (direct readers)"}


def floor_hops(floor: dict | None) -> float | None:
    """What the least Python relay adds to a hop over C, in microseconds (None: not run)."""
    if not floor or "relays" not in floor:
        return None
    return floor["relays"].get("python-epoll", {}).get("per_hop_us")


def _floor_md(floor: dict | None) -> list[str]:
    if not floor:
        return []
    lines = ["", "## Interpreter floor: a UDP relay on loopback, pings 20 ms apart (`floor.py`)",
             ""]
    if "error" in floor:
        return lines + [f"Not measured: {floor['error']}", ""]
    lines += ["Each relay is two hops of a round trip; per hop = (RTT − RTT through C) / 2. "
              "An idle ping through a tunnel makes four such hops, so four times the bare "
              "loop's figure is the least any Python data path adds to it.", ""]
    lines += _table_head(["relay", "RTT p50 (µs)", "RTT p90 (µs)", "per hop over C (µs)"])
    for name, row in floor["relays"].items():
        lines.append(f"| {FLOOR_NAMES.get(name, name)} | {_f(row['p50_us'], '{:.0f}')} | "
                     f"{_f(row['p90_us'], '{:.0f}')} | {_f(row['per_hop_us'], '{:+.0f}')} |")
    return lines + [""]


def _targets_md(ts: list[dict]) -> list[str]:
    lines = ["## Targets", "",
             "The issue's targets, judged on this run's medians (a multi-config target is met "
             "only if every config meets it).", ""]  # fmt: skip
    lines += _table_head(["target", "measured", "met?"])
    word = {True: "**met**", False: "**not met**", None: "not measured"}
    for t in ts:
        lines.append(f"| {t['target']} | {t['measured']} | {word[t['met']]} |")
    return lines + [""]


def markdown(results: dict, summary: dict) -> str:
    """The report: one table per measurement, vt against vtund with ratios, then references."""
    meta = results["meta"]
    impls = [i for i in IMPLS if i in meta["impls"]]
    others = [i for i in impls if i != "vtund"] if "vtund" in impls else []
    lines = [
        f"# vt vs vtund benchmark — {meta['started']}"
        + (" (quick smoke run: too short to compare)" if meta.get("quick") else ""),
        "",
        f"{meta['rounds']} round(s) interleaved, {meta['seconds']} s per test, medians. "
        f"Host: {meta['cpu']} ({meta['ncpu']} CPUs), kernel {meta['kernel']}. "
        f"Pinning: {meta['pinning']}. Tunnel MTU {meta['mtu']}. "
        f"vt revision {meta.get('vt_rev', '?')}. vtund {meta.get('vtund', '?')}, "
        f"{meta.get('openvpn') or 'no OpenVPN'}. Load average before/after: "
        f"{meta.get('loadavg_start', '?')} / {meta.get('loadavg_end', '?')} "
        f"(other work on the machine skews everything). Run took {meta.get('wall_s', '?')} s.",
        "",
        f"vt runtime probe: {meta['vt_probe']}.",
        "",
        "fwd = client host B → server host A, rev = A → B (iperf3 TCP, one stream). "
        "CPU/GB = CPU seconds of the tunnel daemons on both hosts (utime+stime of the daemons "
        "and their children) per GB received, fwd and rev together. "
        "RSS = peak RSS (VmHWM), summed over a host's daemon processes. "
        "n/a = not measured (vtund over UDP with AES CBC/CFB/OFB dies under load; "
        "or the case failed, see the JSON).",
        "",
        "vt = vt <-> vt as shipped: over TCP the two ends negotiate vt-native framing "
        "and tun/tap offloads (whole GSO super-packets per frame, through every module). "
        "vt-compat = vt <-> vt with "
        "`vtmode no` on both ends: vtun framing, one packet per frame, the wire vtund speaks, "
        "no joining of received segments "
        "(tun over TCP only; over UDP vt negotiates only its compression formats; "
        "`--compat-all` adds ether over TCP). vt-vtund = vt server, vtund client; "
        "vtund-vt = vtund server, vt client (vt as shipped, which finds a vtun peer and "
        "speaks the vtun wire; tun over TCP and over UDP). vt-1p = vt <-> vt with "
        "`workers 0` on both ends (one process each; vt's default, as root, is a master "
        "and one worker per CPU it may use: one here, as each host is pinned to one CPU). "
        "Ratio columns are against vtund ↔ vtund.",
        "",
    ]
    cases = summary["cases"]
    keys = [k for k in cases if k != REF]
    lines += _targets_md(summary.get("targets") or targets(results, cases))

    def cell(key: str, impl: str, field: str, fmt: str = "{:.0f}") -> str:
        return _f(cases[key].get(impl, {}).get(field), fmt)

    def val(key: str, impl: str, field: str) -> float | None:
        return cases[key].get(impl, {}).get(field)

    lines += ["## Throughput (Mbit/s)", ""]
    head = ["config"]
    for i in impls:
        head += [f"{i} fwd", f"{i} rev"]
    for o in others:
        head += [f"{o}/vtund fwd", f"{o}/vtund rev"]
    lines += _table_head(head)
    for k in keys:
        row = [k]
        for i in impls:
            row += [cell(k, i, "fwd_mbit"), cell(k, i, "rev_mbit")]
        for o in others:
            row += [_ratio(val(k, o, f), val(k, "vtund", f)) for f in ("fwd_mbit", "rev_mbit")]
        lines.append("| " + " | ".join(row) + " |")

    lines += ["", "## CPU seconds per GB and peak RSS (MB, server A / client B)", ""]
    head = ["config"] + [f"{i} CPU s/GB" for i in impls]
    head += [f"{o}/vtund CPU" for o in others]
    head += [f"{i} RSS A/B" for i in impls]
    lines += _table_head(head)
    for k in keys:
        row = [k] + [cell(k, i, "cpu_per_gb", "{:.1f}") for i in impls]
        row += [_ratio(val(k, o, "cpu_per_gb"), val(k, "vtund", "cpu_per_gb")) for o in others]
        row += [f"{_mb(val(k, i, 'hwm_a_kb'))} / {_mb(val(k, i, 'hwm_b_kb'))}" for i in impls]
        lines.append("| " + " | ".join(row) + " |")

    lines += ["", "## Latency: ping RTT p50 / p99 (ms), idle and under TCP load (fwd)", "",
              "Percentiles are of the pings answered; a loaded ping loss of 1 % or more "
              "(median over rounds) is shown beside them.", ""]
    head = ["config"] + [f"{i} idle" for i in impls] + [f"{i} loaded" for i in impls]
    lines += _table_head(head)
    for k in keys:
        row = [k]
        for what in ("idle", "load"):
            for i in impls:
                text = (f"{cell(k, i, what + '_p50', '{:.2f}')} / "
                        f"{cell(k, i, what + '_p99', '{:.2f}')}")
                loss = val(k, i, "load_loss") if what == "load" else None
                if loss is not None and loss >= 0.01:
                    text += f" ({loss:.0%} lost)"
                row.append(text)
        lines.append("| " + " | ".join(row) + " |")
    lines += _floor_md(results.get("floor"))

    def pair_table(intro: list[str], label: str, field: str, aside) -> None:
        """A table of ``field (aside)`` per impl and ``field`` ratios, where measured."""
        rows = [k for k in keys if any(val(k, i, field) is not None for i in impls)]
        if not rows:
            return
        lines.extend(intro)
        head = ["config"] + [f"{i} {label}" for i in impls] + [f"{o}/vtund" for o in others]
        lines.extend(_table_head(head))
        for k in rows:
            row = [k] + [f"{cell(k, i, field)} ({aside(k, i)})" for i in impls]
            row += [_ratio(val(k, o, field), val(k, "vtund", field)) for o in others]
            lines.append("| " + " | ".join(row) + " |")

    pair_table(["", "## Compressible payload: iperf3 `--repeating-payload`, fwd", "",
                "Mbit/s (CPU s/GB). The tables above use iperf3's default random payload, "
                "which no compressor shrinks; this pattern is what compression does at "
                "best.", ""],
               "Mbit/s (CPU s/GB)", "rep_mbit",
               lambda k, i: cell(k, i, "rep_cpu_per_gb", "{:.1f}"))
    pair_table(["", "## Small packets: iperf3 UDP, 64-byte payloads, unlimited rate", ""],
               "pkt/s delivered (loss)", "pps",
               lambda k, i: _f(_pct(val(k, i, "pps_loss")), "{:.0f}%"))

    ref = cases.get(REF, {})
    if ref:
        lines += ["", "## References: raw veth (ceiling) and OpenVPN (AES-256-GCM, udp, tun)", ""]
        lines += _table_head(
            ["what", "fwd Mbit/s", "rev Mbit/s", "CPU s/GB", "idle p50/p99 ms",
             "loaded p50/p99 ms", "64 B pkt/s (loss)", "RSS A/B MB"]
        )  # fmt: skip
        names = {"raw": "raw veth", "openvpn": "OpenVPN 2.6 p2p"}
        for impl, s in ref.items():
            lines.append(
                "| " + " | ".join([
                    names.get(impl, impl), _f(s.get("fwd_mbit")), _f(s.get("rev_mbit")),
                    _f(s.get("cpu_per_gb"), "{:.1f}"),
                    f"{_f(s.get('idle_p50'), '{:.2f}')} / {_f(s.get('idle_p99'), '{:.2f}')}",
                    f"{_f(s.get('load_p50'), '{:.2f}')} / {_f(s.get('load_p99'), '{:.2f}')}",
                    f"{_f(s.get('pps'))} ({_f(_pct(s.get('pps_loss')), '{:.0f}%')})",
                    f"{_mb(s.get('hwm_a_kb'))} / {_mb(s.get('hwm_b_kb'))}",
                ]) + " |"
            )  # fmt: skip

    if results.get("scale"):
        lines += scale_md(results["scale"], meta.get("scale_rate", "?"))

    errs = [
        f"- {k} {i}: {e}"
        for k, per in cases.items()
        for i, s in per.items()
        for e in s.get("errors", [])
    ]
    if errs:
        lines += ["", "## Failures", "", *errs]
    return "\n".join(lines) + "\n"


def _pct(v: float | None) -> float | None:
    return None if v is None else v * 100


def _table_head(cols: list[str]) -> list[str]:
    return ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]


def plot(summary: dict, path: Path) -> None:
    """Grouped bars per config: fwd throughput and CPU/GB; raw veth and OpenVPN as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = summary["cases"]
    keys = [k for k in cases if k != REF]
    impls = [i for i in IMPLS if any(i in cases[k] for k in keys)]
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 0.7 * len(keys) + 3), 8), sharex=True)
    width = 0.8 / max(1, len(impls))
    xs = range(len(keys))
    for ax, field, label in (
        (axes[0], "fwd_mbit", "TCP throughput fwd (Mbit/s)"),
        (axes[1], "cpu_per_gb", "daemon CPU s per GB (both hosts)"),
    ):
        for j, impl in enumerate(impls):
            ys = [cases[k].get(impl, {}).get(field) or 0 for k in keys]
            ax.bar([x + (j - (len(impls) - 1) / 2) * width for x in xs], ys, width, label=impl)
        for impl, style in (("openvpn", "--"), ("raw", ":")):
            v = cases.get(REF, {}).get(impl, {}).get(field)
            if not v:
                continue
            if v > 3 * _top(cases, field):  # the raw veth would flatten every bar
                ax.set_title(f"{impl}: {v:.0f} (off scale)", fontsize=9, loc="right")
            else:
                ax.axhline(v, linestyle=style, color="grey", label=f"{impl} ({v:.0f})")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    axes[1].set_xticks(list(xs))
    axes[1].set_xticklabels(keys, rotation=45, ha="right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _top(cases: dict, field: str) -> float:
    vals = [s.get(field) or 0 for k, per in cases.items() if k != REF for s in per.values()]
    return max(vals, default=0) or 1
