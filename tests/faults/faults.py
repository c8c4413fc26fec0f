"""The fault scenarios of issue 16, shared by the CI-sized tests (``test_faults.py``) and
the long run (``run.py``, ``make faults``) that writes ``bench/results/faults-*.md``.

Each scenario builds its own namespaces (``netns.two_hosts``), runs real daemons
(``peers``), injects one kind of fault, asserts what must hold (the daemon lives, no
traceback, good clients are served, files arrive byte-identical...) and returns its
figures.  ``impl="vtund"`` runs the same scenario with the reference vtund as the anchor
where it applies.  Every wait is bounded; sizes come from the caller (short or long).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for _p in (ROOT / "tests", ROOT / "bench"):
    if str(_p) not in sys.path:
        sys.path.append(str(_p))

from behaviour import HOST, PASSWD, conf, tmpdir, wait_for  # noqa: E402
from netns import HarnessError, netem_available, transfer_file, two_hosts  # noqa: E402
from peers import CLIENTS, SERVERS  # noqa: E402
from procstat import pss_kb, tree  # noqa: E402

TOOL_TIMEOUT = 900


def _ns_prefix(addr: str) -> str:
    return addr.rsplit(".", 1)[0]


def _json_line(proc: subprocess.Popen, timeout: float, what: str) -> dict:
    """The first stdout line of ``proc`` as JSON, within ``timeout`` (bounded)."""
    deadline = time.monotonic() + timeout
    while select.select([proc.stdout], [], [], max(deadline - time.monotonic(), 0))[0]:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("{"):  # a plugin's log line may come first
            return json.loads(line)
    proc.kill()
    raise HarnessError(f"{what}: no report within {timeout}s; stderr: "
                       f"{proc.stderr.read()[-2000:] if proc.stderr else ''}")


def _tool(ns, script: str, *args: object, timeout: float = TOOL_TIMEOUT) -> dict:
    """Run one of this directory's tools in ``ns``; its JSON report."""
    proc = ns.popen(sys.executable, HERE / script, *args, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        return _json_line(proc, timeout, script)
    finally:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def proc_figures(pid: int) -> dict:
    """RSS, PSS and open descriptors of a daemon and its children (vtund forks)."""
    pids = tree([pid])
    rss = fds = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                rss += next((int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:")), 0)
            fds += len(os.listdir(f"/proc/{p}/fd"))
        except (FileNotFoundError, ProcessLookupError):
            continue
    return {"rss_kb": rss, "pss_kb": pss_kb(pids), "fds": fds, "procs": len(pids)}


def assert_clean(*peers) -> None:
    """Every daemon alive, no traceback, no crashed session in its log."""
    for peer in peers:
        text = peer.log()
        assert peer.alive(), f"{peer.kind} died:\n{text[-3000:]}"
        assert "Traceback" not in text and "session crashed" not in text, text[-3000:]


def _count(peer, pattern: str) -> int:
    return len(re.findall(pattern, peer.log()))


# ------------------------------------------------------------------ handshake fuzz


def handshake_fuzz(n: int, concurrency: int = 20, impl: str = "vt", seed: int = 1,
                   wait: float = 1.0) -> dict:
    """``n`` mutated handshakes, ``concurrency`` at once, while a good client logs in
    every 0.25 s from an address of its own: every good login must be served."""
    with two_hosts() as p:
        good_src = f"{_ns_prefix(p.b_addr)}.3"
        p.b.run("ip", "addr", "add", f"{good_src}/24", "dev", "veth0", "nodad")
        cfg = conf(HOST, type="tun", proto="tcp")
        with SERVERS[impl](p.a, cfg) as s:
            before = proc_figures(s.proc.pid)
            rep = _tool(p.b, "hsfuzz.py", "--server", p.a_addr, "--host", HOST,
                        "--password", PASSWD, "-n", n, "--concurrency", concurrency,
                        "--seed", seed, "--wait", wait, "--good-source", good_src, "--limit", TOOL_TIMEOUT - 60)
            # Sessions of accepted attempts and good logins wind down; bounded.
            after = wait_for(lambda: _settled(s.proc.pid, before["fds"]), 15, "fds settled",
                             step=0.5) if impl == "vt" else proc_figures(s.proc.pid)
            assert_clean(s)
        rep.update(impl=impl, server_before=before, server_after=after)
        assert rep["good_ok"] >= 1, rep
        if impl == "vt":
            assert rep["good_failed"] == 0, rep
            assert "unfinished" not in rep["outcomes"], rep
        return rep


def _settled(pid: int, fds: int) -> dict | None:
    fig = proc_figures(pid)
    return fig if fig["fds"] <= fds + 1 else None


# ------------------------------------------------------------------ frame fuzz

COMBOS = [
    {"proto": proto, "compress": comp, "encrypt": enc}
    for proto in ("tcp", "udp")
    for comp in (None, "lzo:1", "zlib:6")
    for enc in (None, "aes128cbc", "aes256ofb")
] + [{"proto": proto, "compress": "zlib:1", "encrypt": "aes128cbc", "speed": "2048:2048"}
     for proto in ("tcp", "udp")]
"""Every compression x cipher (a chained and a resyncing mode) x transport, and the
shaper.  Secure mode is left out: its frames are fuzzed by tests/test_secure_attacks.py."""

SHORT_COMBOS = [COMBOS[0], COMBOS[9], COMBOS[4], COMBOS[16]]
"""tcp plain, udp plain, tcp lzo+aes128cbc, udp zlib+aes128cbc."""


def _combo_host(i: int, combo: dict) -> str:
    lines = [f"f{i} {{", f"  passwd {PASSWD};", "  type tun;", "  device tsrv;"]
    lines += [f"  {k} {v};" for k, v in combo.items() if v is not None]
    return "\n".join(lines + ["}", ""])


def frame_fuzz(n: int, combos: list[dict] = SHORT_COMBOS, seed: int = 1,
               impl: str = "vt") -> dict:
    """``n`` damaged frames (:func:`vtcore.testing.hostile_frames`), undefined flags and
    lying datagrams into a live session of each module combination.  The server must
    live; the session carries traffic on (a zlib stream may end it instead, cleanly);
    a new session of that profile is served.  With vtund (the anchor) only the server's
    life is asserted; the rest is recorded."""
    results = []
    with two_hosts() as p:
        ta, tb = p.add_tunnel_devices()
        hosts = "".join(_combo_host(i, c) for i, c in enumerate(combos))
        with SERVERS[impl](p.a, "options {\n  timeout 10;\n}\n" + hosts) as s:
            for i, combo in enumerate(combos):
                common = ("--server", p.a_addr, "--host", f"f{i}", "--password", PASSWD,
                          "--src", tb, "--dst", ta)
                with _one_session(s, impl):
                    rep = _tool(p.b, "rawpeer.py", *common, "--fuzz", n, "--unknown", 50,
                                "--bad", 50, "--seed", seed + i, "--timeout", 4, timeout=120)
                figures = {}
                if impl == "vt":
                    line = re.findall(r"session closed.*", s.log())[-1]
                    figures = {k: int(v) for k, v in
                               re.findall(r"\b(bad_frames|unknown_frames|dropped_decode|"
                                          r"frames_in)=(\d+)", line)}
                again = None
                if not rep.get("echo_after"):
                    with _one_session(s, impl):
                        again = _tool(p.b, "rawpeer.py", *common, timeout=60).get("echo_before")
                results.append({**combo, "sent": rep.get("sent"), "error": rep.get("error"),
                                "survived": bool(rep.get("echo_after")),
                                "served_after": bool(rep.get("echo_after") or again), **figures})
                if impl != "vt":
                    continue
                assert rep.get("echo_before"), (combo, rep)
                assert rep.get("echo_after") or again, (combo, rep, "not served again")
                if not str(combo.get("compress")).startswith("zlib"):
                    # Only a zlib stream cannot skip a damaged frame (vtund's neither).
                    assert rep["echo_after"], (combo, rep, "the session did not carry on")
            assert_clean(s)
    return {"impl": impl, "frames_per_session": n, "sessions": results}


@contextlib.contextmanager
def _one_session(server, impl: str):
    """The block runs one session; on leaving, wait (bounded) until the server ended it,
    so the next one finds the device free: vt logs it, vtund's session child exits."""
    closed = _count(server, r"session closed")
    yield
    if impl == "vt":
        wait_for(lambda: _count(server, r"session closed") > closed, 15, "session end")
    else:
        wait_for(lambda: proc_figures(server.proc.pid)["procs"] == 1, 15, "session end")


# ------------------------------------------------------------------ kill -9, SIGSTOP


PINGER_SETTLE = 1.0


class _Pinger:
    """``ping -D -i 0.05`` through the tunnel in the background: the load, and the clock
    of when replies stop and come back."""

    def __init__(self, ns, addr: str, seconds: float) -> None:
        self.proc = ns.popen("ping", "-n", "-D", "-i", "0.05", "-W", "1", "-w",
                             int(seconds), addr, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)

    def replies(self) -> list[float]:
        try:
            out, _ = self.proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate(timeout=5)
        return [float(m) for m in re.findall(r"^\[(\d+\.\d+)\] \d+ bytes from", out, re.M)]

    def stop(self, settle: float = PINGER_SETTLE) -> list[float]:
        """Its replies, after ``settle`` s more: a scenario stops it once its own probe
        ping got through, and the pinger's next reply (50 ms apart, behind whatever
        queued while the tunnel was down) may not have come yet."""
        time.sleep(settle)
        self.proc.send_signal(signal.SIGINT)
        return self.replies()


def _reply_within(ns, addr: str, seconds: float, fail: bool = True) -> bool:
    """Ping ``addr`` until one reply (bounded); a tunnel that stays down fails the
    scenario unless ``fail`` is False (the pinger's record then tells)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if ns.run("ping", "-n", "-c1", "-W1", addr, check=False).returncode == 0:
            return True
    if fail:
        raise HarnessError(f"no reply from {addr} through the tunnel within {seconds} s")
    return False


def _pair_conf(proto: str) -> tuple[str, str]:
    scfg = conf(HOST, type="tun", proto=proto, device="tsrv", keepalive="yes")
    ccfg = conf(HOST, device="tcli", persist="yes")
    return scfg, ccfg


def kill9(proto: str = "tcp", end: str = "server", impl: str = "vt",
          bound: float = 30) -> dict:
    """SIGKILL one end's whole process group under load (100 pings/s), start it again
    at once; returns the seconds from the kill to the first reply through the tunnel."""
    with two_hosts() as p:
        ta, _tb = p.add_tunnel_devices()
        scfg, ccfg = _pair_conf(proto)
        server = SERVERS[impl](p.a, scfg).start()
        client = CLIENTS[impl](p.b, ccfg, HOST, p.a_addr).start()
        peers = [server, client]
        try:
            _reply_within(p.b, ta, 20)
            pinger = _Pinger(p.b, ta, bound + 10)
            time.sleep(1)
            victim = server if end == "server" else client
            t_kill = time.time()
            os.killpg(victim.proc.pid, signal.SIGKILL)
            victim.proc.wait(timeout=5)
            again = type(victim)(*((p.a, scfg) if end == "server" else
                                   (p.b, ccfg, HOST, p.a_addr))).start()
            peers.append(again)
            _reply_within(p.b, ta, bound, fail=False)
            replies = pinger.stop()
            after = [t for t in replies if t > t_kill + 0.05]
            recovery = round(after[0] - t_kill, 2) if after else None
            survivor = client if end == "server" else server
            assert_clean(survivor, again)
            return {"proto": proto, "killed": end, "impl": impl, "recovery_s": recovery,
                    "bound_s": bound}
        finally:
            for peer in peers:
                peer.stop()
                peer._dir.cleanup()


def stop_cont(proto: str = "tcp", seconds: float = 3, impl: str = "vt") -> dict:
    """SIGSTOP the server for ``seconds`` under load, SIGCONT: the tunnel passes traffic
    again; returns how long after the SIGCONT, and whether the session was replaced."""
    with two_hosts() as p:
        ta, _tb = p.add_tunnel_devices()
        scfg, ccfg = _pair_conf(proto)
        with SERVERS[impl](p.a, scfg) as s, CLIENTS[impl](p.b, ccfg, HOST, p.a_addr) as c:
            _reply_within(p.b, ta, 20)
            pinger = _Pinger(p.b, ta, seconds + 40)
            time.sleep(0.5)
            opened = _count(s, r"session opened|Session .* opened")
            os.killpg(s.proc.pid, signal.SIGSTOP)  # the group: vtund's session children too
            try:
                time.sleep(seconds)
            finally:
                os.killpg(s.proc.pid, signal.SIGCONT)
            t_cont = time.time()
            _reply_within(p.b, ta, 30, fail=False)
            replies = pinger.stop()
            after = [t for t in replies if t > t_cont]
            assert after, "no traffic after SIGCONT within 30 s"
            assert_clean(s, c)
            return {"proto": proto, "impl": impl, "stopped_s": seconds,
                    "recovery_s": round(after[0] - t_cont, 2),
                    "new_sessions": _count(s, r"session opened|Session .* opened") - opened}


# ------------------------------------------------------------------ loss and reordering


def lossy_transfer(proto: str = "tcp", nbytes: int = 256 << 10, impl: str = "vt",
                   percent: int = 5) -> dict:
    """A file through the tunnel, both ways, over an underlay that loses ``percent``% of
    the packets and reorders a quarter of them, both ways (netem; where the kernel has
    none, ``reorder.py`` on NFQUEUE): the files arrive byte-identical."""
    with two_hosts() as p:
        ta, tb = p.add_tunnel_devices()
        scfg, ccfg = _pair_conf(proto)
        with SERVERS[impl](p.a, scfg) as s, CLIENTS[impl](p.b, ccfg, HOST, p.a_addr) as c, \
                _lossy_underlay(p, percent) as underlay:
            out = {"proto": proto, "impl": impl, "bytes": nbytes, "underlay": underlay}
            _reply_within(p.b, ta, 30)
            for way, (src, dst, addr) in {"b->a": (p.b, p.a, ta), "a->b": (p.a, p.b, tb)}.items():
                t0 = time.monotonic()
                same = transfer_file(src, dst, addr, nbytes, timeout=120)
                out[way] = {"identical": same, "seconds": round(time.monotonic() - t0, 2)}
                assert same, f"{way}: the file arrived damaged or short"
            assert_clean(s, c)
        return out


@contextlib.contextmanager
def _lossy_underlay(p, percent: int):
    """Loss and reordering on both namespaces' veth0 for the block; yields what was set
    up (and, with NFQUEUE, the packets each side dropped and reordered, after it)."""
    if netem_available():
        for ns in (p.a, p.b):
            ns.run("tc", "qdisc", "add", "dev", "veth0", "root", "netem", "loss",
                   f"{percent}%", "delay", "5ms", "reorder", "25%", "50%")
        yield {"method": f"netem loss {percent}% delay 5ms reorder 25% 50%"}
        return
    procs = [ns.popen(sys.executable, HERE / "reorder.py", "--dev", "veth0", "--loss",
                      percent / 100, "--reorder", 0.25, "--seed", i, stdin=subprocess.PIPE,
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i, ns in enumerate((p.a, p.b))]
    info = {"method": f"NFQUEUE (tests/faults/reorder.py): loss {percent}%, 25% of "
                      "packets held until the next one"}
    try:
        for proc in procs:
            _json_line(proc, 20, "reorder.py")
        yield info
    finally:
        info["counts"] = []
        for proc in procs:
            try:
                proc.stdin.close()
                info["counts"].append(_json_line(proc, 10, "reorder.py counts"))
                proc.wait(timeout=10)
            except (HarnessError, OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait(timeout=5)


# ------------------------------------------------------------------ broken-config SIGHUPs


def broken_configs(text: str, count: int, seed: int = 1) -> list[tuple[str, bytes]]:
    """``count`` damaged versions of a config: cut at spread offsets (0 included: the
    empty file), and garbage (random bytes, NULs, invalid UTF-8, a binary's head)."""
    rng = random.Random(seed)
    raw = text.encode()
    cuts = sorted({0, *(int(i * len(raw) / max(count - 4, 1)) for i in range(count - 4))})
    out = [(f"cut at {k}", raw[:k]) for k in cuts if k < len(raw)]
    out += [("random bytes", rng.randbytes(300)), ("NULs", bytes(200)),
            ("invalid UTF-8", raw[:40] + b"\xff\xfe\xc3(" + raw[40:]),
            ("binary head", Path(sys.executable).read_bytes()[:512])]
    return out[:count]


def config_sighup(count: int = 12, impl: str = "vt") -> dict:
    """``count`` SIGHUPs, each with a damaged config, while a session runs: each is
    refused in one line (or, when the cut left a valid config with hosts, accepted);
    the live session never notices; the server keeps every host."""
    with two_hosts() as p:
        ta, _tb = p.add_tunnel_devices()
        scfg, ccfg = _pair_conf("tcp")
        with SERVERS[impl](p.a, scfg) as s, CLIENTS[impl](p.b, ccfg, HOST, p.a_addr) as c:
            _reply_within(p.b, ta, 20)
            pinger = _Pinger(p.b, ta, 600)
            refused = accepted = 0
            seen = 0
            for _name, data in broken_configs(scfg, count):
                s.cfg.write_bytes(data)
                os.kill(s.proc.pid, signal.SIGHUP)
                wait_for(lambda n=seen: _count(s, r"config reload") > n, 10, "reload line")
                seen = _count(s, r"config reload")
                last = re.findall(r".*config reload.*", s.log())[-1]
                if "reload failed" in last:
                    refused += 1
                else:
                    accepted += 1
                    m = re.search(r"hosts=(\d+)", last)
                    assert m and int(m.group(1)) >= 1, last
            s.cfg.write_text(scfg)
            os.kill(s.proc.pid, signal.SIGHUP)
            wait_for(lambda: _count(s, r"config reloaded") > accepted, 10, "good reload")
            replies = pinger.stop(settle=0.5)
            assert "session closed" not in s.log(), s.log()[-2000:]
            assert_clean(s, c)
            gaps = [b - a for a, b in zip(replies, replies[1:], strict=False)]
            return {"sighups": seen, "refused": refused, "accepted_valid": accepted,
                    "pings_answered": len(replies),
                    "longest_gap_s": round(max(gaps), 3) if gaps else None}


# ------------------------------------------------------------------ session churn


def churn(rounds: int = 3, n: int = 10, impl: str = "vt") -> dict:
    """``rounds`` x ``n`` sessions (bench/vtclients.py: log in, one echo through each
    tunnel, close) against one server; its RSS, PSS, descriptors and lock files before
    (after a first warm-up round) and after."""
    import scale  # bench/scale.py: the scale benchmark's devices, profiles and client

    lockdir = tmpdir("vt-faults-lock-")
    with two_hosts() as p:
        scale.prepare_devices(p, n)
        cfg = scale.server_conf(n, 5000)
        if impl == "vt":
            cfg = cfg.replace("options {", f"options {{\n  lockdir {lockdir};", 1)
        server = SERVERS[impl](p.a, cfg)
        figures: list[dict] = []
        passing = 0
        try:
            server.start(timeout=20)
            idle = proc_figures(server.proc.pid)
            for _ in range(rounds):
                opened = _count(server, r"session closed")
                env = dict(os.environ, VT_BENCH_PW=PASSWD)
                proc = p.b.popen(sys.executable, ROOT / "bench" / "vtclients.py", p.a_addr,
                                 5000, n, "--local", scale.LOCAL, "--peer-base",
                                 scale.PEER_BASE, "--timeout", 30, "--hold", 60,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, env=env, text=True)
                rep = _json_line(proc, 90, "vtclients")
                proc.communicate("\n", timeout=30)
                passing += rep["passing"]
                if impl == "vt":
                    wait_for(lambda o=opened: _count(server, r"session closed") >= o + n, 30,
                             "sessions closed")
                else:
                    wait_for(lambda: proc_figures(server.proc.pid)["procs"] == 1, 30,
                             "vtund session children gone")
                time.sleep(0.3)
                figures.append(proc_figures(server.proc.pid))
            assert_clean(server)
        finally:
            server.stop()
            server._dir.cleanup()
        locks = len(list(Path(lockdir).iterdir())) if impl == "vt" else None
    warm, last = figures[0], figures[-1]
    out = {"impl": impl, "sessions": rounds * n, "passing": passing, "idle": idle,
           "after_first_round": warm, "after_all": last, "lock_files_after": locks,
           "rss_growth_kb": last["rss_kb"] - warm["rss_kb"],
           "fd_growth": last["fds"] - warm["fds"]}
    assert passing == rounds * n, out
    assert last["fds"] <= warm["fds"] + 2, out
    assert not locks, out
    return out
