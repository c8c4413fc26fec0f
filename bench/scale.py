"""Scale: N concurrent client sessions against one server (vtund or vt).

The server host gets N pre-made tun devices ``bs<i>`` (local 172.20.0.1, peer
172.21.<i//250>.<i%250+1>) and a config with N profiles ``s<i>`` (tun over tcp, one device
each).  The clients are one Python process (``vtclients.py``) on the other host: it logs
all N sessions in at once, sends one ICMP echo through each tunnel and reports handshake
times and how many echoes came back.  While the sessions are held open the benchmark reads
the PSS of every server process; memory per session is its growth over the idle server,
divided by N.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
for _p in (HERE.parent / "tests", HERE):  # run on its own, not only from run.py
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from measure import percentile  # noqa: E402
from netns import HarnessError, Pair, free_port  # noqa: E402
from peers import DEFAULT_PASSWD, VtServer, VtundServer  # noqa: E402
from procstat import usage  # noqa: E402
from tunnels import BenchError, _pinned, pin  # noqa: E402

LOCAL = "172.20.0.1"
PEER_BASE = "172.21"


def peer_addr(i: int) -> str:
    return f"{PEER_BASE}.{i // 250}.{i % 250 + 1}"


def prepare_devices(pair: Pair, n: int) -> None:
    """N persistent tun devices on the server host, in one ``ip -batch`` (no IPv6 chatter)."""
    for key in ("all", "default"):
        pair.a.run("sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1")
    lines = []
    for i in range(n):
        lines += [
            f"tuntap add dev bs{i} mode tun",
            f"addr add {LOCAL} peer {peer_addr(i)} dev bs{i}",
            f"link set dev bs{i} up",
        ]
    with tempfile.NamedTemporaryFile("w", suffix=".ip", delete=False) as f:
        f.write("\n".join(lines) + "\n")
    try:
        pair.a.run("ip", "-batch", f.name, timeout=120)
    finally:
        os.unlink(f.name)


def server_conf(n: int, port: int, vt_options: list[str] | None = None) -> str:
    """vtund.conf with profiles s0..s<n-1>, each tun over tcp on its own device.

    ``vt_options`` (vt-only keywords, e.g. ``workers 2;``) go into the options block."""
    out = ["options {", f"  port {port};", "  timeout 30;"]
    out += [f"  {o}" for o in vt_options or []]
    out += ["}", ""]
    for i in range(n):
        out += [
            f"s{i} {{",
            f"  passwd {DEFAULT_PASSWD};",
            "  type tun;",
            "  proto tcp;",
            f"  device bs{i};",
            "}",
        ]
    return "\n".join(out) + "\n"


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    """One stdout line from ``proc`` within ``timeout`` seconds (bounded)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    buf = b""
    fd = proc.stdout.fileno()
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
            if b"\n" in buf:
                return buf.split(b"\n", 1)[0].decode()
        elif proc.poll() is not None:
            break
    raise BenchError(f"session client gave no report within {timeout}s")


def run_scale(
    impl: str,
    pair: Pair,
    n: int,
    cpus: tuple[int | None, int | None],
    rate: float = 100.0,
    timeout: float = 60,
    vt_options: list[str] | None = None,
) -> dict:
    """One scale measurement; devices ``bs0..`` must already exist for at least ``n``.

    Memory is the PSS summed over the server's whole process tree (the server PID and
    every descendant: vtund's forked session processes, vt's workers); start-up is the
    time from the first connect until every session has passed its echo."""
    port = free_port()
    srv_cls = VtundServer if impl == "vtund" else VtServer
    conf = server_conf(n, port, vt_options if impl != "vtund" else None)
    server = _pinned(srv_cls, cpus[0])(pair.a, conf, port=port)
    client: subprocess.Popen | None = None
    try:
        try:
            server.start(timeout=20)
        except HarnessError as e:
            raise BenchError(f"{impl} server did not start: {str(e)[:300]}") from None
        assert server.proc is not None
        time.sleep(0.3)
        base = usage([server.proc.pid])
        env = dict(os.environ, VT_BENCH_PW=DEFAULT_PASSWD)
        client = pair.b.popen(
            *pin(cpus[1]), sys.executable, HERE / "vtclients.py", pair.a_addr, port, n,
            "--local", LOCAL, "--peer-base", PEER_BASE, "--timeout", 30, "--hold", timeout + 30,
            "--rate", rate,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        report = json.loads(_read_line(client, timeout + 30 + (n / rate if rate > 0 else 0)))
        loaded = usage([server.proc.pid])
        hs = report["handshake_s"]
        out = {
            "n": n,
            "logged_in": report["logged_in"],
            "passing": report["passing"],
            "handshake_p50_ms": _ms(percentile(hs, 50)),
            "handshake_p99_ms": _ms(percentile(hs, 99)),
            "login_wall_s": report["login_wall_s"],
            "ready_wall_s": report.get("ready_wall_s"),
            "rate": rate,
            "server_pss_idle_kb": base.pss_kb,
            "server_pss_kb": loaded.pss_kb,
            "server_procs": loaded.nprocs,
            "server_hwm_kb": loaded.hwm_kb,
            "pss_per_session_kb": (loaded.pss_kb - base.pss_kb) / n,
            "server_anon_pss_idle_kb": base.anon_pss_kb,
            "server_anon_pss_kb": loaded.anon_pss_kb,
            "anon_pss_per_session_kb": (loaded.anon_pss_kb - base.anon_pss_kb) / n,
            "errors": report["errors"],
            "server_alive": server.alive(),
        }
        return out
    except (json.JSONDecodeError, KeyError) as e:
        raise BenchError(f"bad session client report: {e}") from None
    finally:
        if client is not None:
            try:
                assert client.stdin is not None
                client.stdin.write(b"\n")
                client.stdin.close()
                client.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                client.kill()
                client.wait(timeout=5)
        server.stop()
        server._dir.cleanup()


def _ms(s: float | None) -> float | None:
    return None if s is None else s * 1000


# --------------------------------------------------------------------------------------------
# On its own: python bench/scale.py --sessions 50


def main(argv: list[str] | None = None) -> int:
    """Only the scale measurement, vtund and vt in turn: ``python bench/scale.py``."""
    import argparse
    import datetime as dt
    import signal

    import report
    from netns import netns_usable, two_hosts
    from peers import ensure_vtund_dirs, vtund_available
    from tunnels import vt_rejects, vt_server_options

    ap = argparse.ArgumentParser(
        prog="bench/scale.py", description="N idle sessions against one server, vtund and vt "
        "in turn: memory summed over the server's whole process tree, and start-up time.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    ap.add_argument("--sessions", default="500", help="comma list of session counts")
    ap.add_argument("--impls", default="vtund,vt", help="comma list from vtund,vt")
    ap.add_argument("--rounds", type=int, default=1, help="rounds (order alternating)")
    ap.add_argument("--rate", type=float, default=50.0,
                    help="new sessions per second (0: all at once)")
    ap.add_argument("--pin", choices=("none", "host"), default="none",
                    help="host: server host on CPU 0, clients on CPU 1 (bench/run.py's "
                         "default); none: a server that forks or has workers may use both")
    ap.add_argument("--workers", type=int, default=None,
                    help="write 'workers N;' into vt's server options (0: one "
                         "process; without it vt's default, one worker per CPU as root; issue 18)")
    ap.add_argument("--user", default=None, help="with --workers: 'user NAME;' (default nobody)")
    ap.add_argument("--group", default=None, help="with --workers: 'group NAME;'")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--render", type=Path, metavar="JSON",
                    help="only rewrite the .md of an earlier run's JSON (no root needed)")
    a = ap.parse_args(argv)
    if a.render:
        old = json.loads(a.render.read_text())
        md = scale_report(old["meta"], old["scale"])
        a.render.with_suffix(".md").write_text(md)
        print(md)
        return 0
    try:
        counts = [int(n) for n in a.sessions.split(",") if n]
    except ValueError:
        ap.error("--sessions takes a comma list of integers")
    if not counts or any(not 1 <= n <= 1000 for n in counts) or not 1 <= a.rounds <= 10:
        ap.error("--sessions must be 1..1000 each, --rounds 1..10")
    impls = [i for i in a.impls.split(",") if i]
    if not impls or any(i not in ("vtund", "vt") for i in impls):
        ap.error("--impls: vtund, vt")
    if os.geteuid() != 0 or not netns_usable():
        print("scale: needs root and working `ip netns`", file=sys.stderr)
        return 2
    if "vtund" in impls and not vtund_available():
        print("scale: vtund not found (apt-get install vtun)", file=sys.stderr)
        return 2
    vt_opts = vt_server_options(a.workers, a.user, a.group)
    if "vt" in impls and (why := vt_rejects(vt_opts)):
        print(f"scale: this vt does not accept {' '.join(vt_opts)!r} in its options block "
              f"({why}); the keywords come with issue 18's master/worker split",
              file=sys.stderr)  # fmt: skip
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ensure_vtund_dirs()
    cpus: tuple[int | None, int | None] = (0, 1) if a.pin == "host" else (None, None)
    started = dt.datetime.now().astimezone()
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    rows: list[dict] = []
    t_start = time.monotonic()
    try:
        with two_hosts() as pair:
            prepare_devices(pair, max(counts))
            for rnd in range(a.rounds):
                order = impls if rnd % 2 == 0 else impls[::-1]
                for n in counts:
                    for impl in order:
                        t0 = time.monotonic()
                        print(f"[{time.strftime('%H:%M:%S')}] N={n} {impl}", file=sys.stderr,
                              flush=True)  # fmt: skip
                        try:
                            r = run_scale(impl, pair, n, cpus, rate=a.rate, vt_options=vt_opts)
                        except (BenchError, HarnessError) as e:
                            r = {"n": n, "error": " ".join(str(e).split())[-500:]}
                        r.update(impl=impl, round=rnd + 1, wall_s=round(time.monotonic() - t0, 2),
                                 load=" ".join(Path("/proc/loadavg").read_text().split()[:3]))
                        rows.append(r)
    except KeyboardInterrupt:
        print("scale: interrupted, writing what was measured", file=sys.stderr)
    end_load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    meta = {"started": started.isoformat(timespec="seconds"), "sessions": counts,
            "impls": impls, "rounds": a.rounds, "scale_rate": a.rate,
            "pinning": "server host on CPU 0, client host on CPU 1" if a.pin == "host"
            else "none", "vt_options": vt_opts, "loadavg_start": load, "loadavg_end": end_load,
            "wall_s": round(time.monotonic() - t_start, 1)}  # fmt: skip
    md = scale_report(meta, rows)
    a.out.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%S") + "-scale"
    ts = report.scale_targets(rows, max(counts))
    (a.out / f"{stamp}.json").write_text(
        json.dumps({"meta": meta, "scale": rows, "targets": ts}, indent=1) + "\n")
    (a.out / f"{stamp}.md").write_text(md)
    print(md)
    print(f"wrote {a.out / stamp}.json/.md", file=sys.stderr)
    return 0


def scale_report(meta: dict, rows: list[dict]) -> str:
    """The Markdown of a scale-only run: targets at the largest N, then the table."""
    import report

    ts = report.scale_targets(rows, max(meta["sessions"]))
    word = {True: "**met**", False: "**not met**", None: "not measured"}
    opts = " ".join(meta["vt_options"]) or "none (single process)"
    lines = [f"# Scale: idle sessions against one server — {meta['started']}", "",
             f"{meta['rounds']} round(s), pinning {meta['pinning']}, vt server options: "
             f"{opts}. Load average before/after: {meta['loadavg_start']} / "
             f"{meta['loadavg_end']}. Run took {meta['wall_s']:.0f} s.", "",
             "## Targets", "", "| target | measured | met? |", "|---|---|---|"]  # fmt: skip
    lines += [f"| {t['target']} | {t['measured']} | {word[t['met']]} |" for t in ts]
    lines += report.scale_md(rows, meta["scale_rate"])
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
