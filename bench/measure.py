"""One round of measurements through a :class:`tunnels.Tunnel`.

Traffic tools run pinned like the daemons of their host.  "fwd" is client host B to
server host A (iperf3 server in A), "rev" the other way (``iperf3 -R``).  The daemons'
CPU time is read before and after each transfer, so CPU per GB covers only the bytes moved.
"""

from __future__ import annotations

import math
import re
import subprocess
import time

from netns import HarnessError, iperf3_run
from procstat import usage
from tunnels import BenchError, Tunnel, pin

GB = 1e9
_RTT = re.compile(r"time[=<]([\d.]+) ms")


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


def _iperf3(
    t: Tunnel,
    seconds: float,
    reverse: bool = False,
    udp_len: int | None = None,
    repeating: bool = False,
) -> dict:
    """Run iperf3 (server in A bound to the tunnel address, client in B); parsed JSON."""
    args: list[object] = ["--connect-timeout", 3000]
    if reverse:
        args.append("-R")
    if udp_len is not None:
        args += ["-u", "-b", "0", "-l", udp_len]
    if repeating:
        args.append("--repeating-payload")
    try:
        return iperf3_run(t.a, t.b, t.a_ip, args, seconds, prefix=(pin(t.cpu_a), pin(t.cpu_b)))
    except HarnessError as e:
        raise BenchError(str(e)) from None


def _ping(t: Tunnel, count: int, interval: float) -> subprocess.Popen:
    return t.b.popen(
        *pin(t.cpu_b), "ping", "-n", "-c", count, "-i", interval, "-W", 2, t.a_ip,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip


def _rtts(proc: subprocess.Popen, timeout: float) -> tuple[list[float], int]:
    """RTTs (ms) and packets sent from a finished ping."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate(timeout=5)
    m = re.search(r"(\d+) packets transmitted", out or "")
    return [float(x) for x in _RTT.findall(out or "")], int(m.group(1)) if m else 0


def _latency(rtts: list[float], sent: int) -> dict:
    return {
        "p50_ms": percentile(rtts, 50),
        "p99_ms": percentile(rtts, 99),
        "n": len(rtts),
        "loss": (1 - len(rtts) / sent) if sent else None,
    }


def _snap(t: Tunnel) -> tuple:
    return usage(t.a_roots), usage(t.b_roots)


def throughput(
    t: Tunnel,
    seconds: float,
    reverse: bool,
    ping_interval: float = 0.02,
    repeating: bool = False,
) -> dict:
    """TCP throughput one way, with ping running alongside (latency under load).

    iperf3 sends random bytes, which no compressor shrinks (like today's TLS traffic);
    ``repeating`` sends its repeating pattern instead: what compression can do at best."""
    count = max(5, int(seconds / ping_interval))
    before = _snap(t)
    pinger = _ping(t, count, ping_interval)
    try:
        data = _iperf3(t, seconds, reverse=reverse, repeating=repeating)
    finally:
        rtts, sent = _rtts(pinger, timeout=seconds + 10)
    after = _snap(t)
    end = data["end"]
    nbytes = end["sum_received"]["bytes"]
    out = {
        "mbit_s": end["sum_received"]["bits_per_second"] / 1e6,
        "bytes": nbytes,
        "retransmits": end["sum_sent"].get("retransmits", 0),
        "ping_loaded": _latency(rtts, sent),
    }
    out.update(_cpu(before, after, nbytes, t))
    return out


def _cpu(before: tuple, after: tuple, nbytes: int, t: Tunnel) -> dict:
    if not (t.a_roots or t.b_roots):
        return {}
    cpu_a = after[0].cpu_s - before[0].cpu_s
    cpu_b = after[1].cpu_s - before[1].cpu_s
    gb = nbytes / GB if nbytes else 0
    return {
        "cpu_s": {"a": cpu_a, "b": cpu_b},
        "cpu_s_per_gb": (cpu_a + cpu_b) / gb if gb else None,
        "cpu_s_per_gb_side": {"a": cpu_a / gb if gb else None, "b": cpu_b / gb if gb else None},
    }


def small_packets(t: Tunnel, seconds: float, length: int = 64) -> dict:
    """iperf3 UDP with ``length``-byte payloads at full speed: packets/s delivered and loss."""
    before = _snap(t)
    data = _iperf3(t, seconds, udp_len=length)
    after = _snap(t)
    end = data["end"]
    s = end.get("sum_received") or end["sum"]
    sent = end["sum"].get("packets", 0)
    lost = end["sum"].get("lost_packets", 0)
    dur = s.get("seconds") or seconds
    out = {
        "pps": (sent - lost) / dur if dur else None,
        "sent_pps": sent / dur if dur else None,
        "loss": lost / sent if sent else None,
    }
    out.update(_cpu(before, after, max(0, sent - lost) * length, t))
    return out


def idle_latency(t: Tunnel, count: int, interval: float = 0.02) -> dict:
    rtts, sent = _rtts(_ping(t, count, interval), timeout=count * interval + 10)
    return _latency(rtts, sent)


def memory(t: Tunnel) -> dict:
    """Peak RSS (VmHWM) and PSS of each side's daemons now."""
    if not (t.a_roots or t.b_roots):
        return {}
    a, b = _snap(t)
    return {
        "hwm_kb": {"a": a.hwm_kb, "b": b.hwm_kb},
        "pss_kb": {"a": a.pss_kb, "b": b.pss_kb},
        "nprocs": {"a": a.nprocs, "b": b.nprocs},
    }


def round_of(
    t: Tunnel, seconds: float, full_extras: bool, ping_count: int, compressible: bool = False
) -> dict:
    """All measurements of one round on one live tunnel; per-test failures are recorded.

    ``compressible`` adds ``fwd_rep``: the fwd transfer with a compressible payload."""
    res: dict = {}
    steps: list[tuple[str, object]] = [
        ("idle", lambda: idle_latency(t, ping_count)),
        ("fwd", lambda: throughput(t, seconds, reverse=False)),
        ("rev", lambda: throughput(t, seconds, reverse=True)),
    ]
    if compressible:
        steps.append(("fwd_rep", lambda: throughput(t, seconds, reverse=False, repeating=True)))
    if full_extras:
        steps.append(("small", lambda: small_packets(t, seconds)))
    for name, fn in steps:
        if t.a_roots and not t.alive():
            res[name] = {"error": "daemon died"}
            continue
        t0 = time.monotonic()
        try:
            res[name] = fn()  # type: ignore[operator]
        except BenchError as e:
            res[name] = {"error": str(e)[:300]}
        res[name]["wall_s"] = round(time.monotonic() - t0, 2)
    res["mem"] = memory(t)
    res["alive_after"] = t.alive() if t.a_roots else True
    return res
