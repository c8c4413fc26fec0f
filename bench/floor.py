"""The interpreter's floor under the idle-ping target: what any Python relay adds per hop.

An idle ping through a tunnel crosses the daemons four times (client out, server in,
server out, client in), each time right after a wake-up from ``epoll_wait`` with caches
gone cold over the idle gap.  This measures, on loopback and on the machine of the run,
a UDP relay between a C pinger and a C echo server, 20 ms between pings, as:

- ``c``: the relay in C (``floor/relay.c``), the baseline;
- ``python-epoll``: a bare ``select.epoll`` loop in Python, the least Python can do;
- ``asyncio``: ``loop.add_reader`` callbacks;
- ``vt-dataloop``: vt's DataLoop with direct readers (``vtcore/runtime/loop.py``).

Each relay is two hops of a round trip, so ``(RTT - RTT of c) / 2`` is what it adds per hop.
Four times the ``python-epoll`` figure is the least a Python data path adds to an idle
ping, before it does any tunnel work: if that is above the target's 50 us, the target
needs the data path compiled.  Loopback only; every process is ours and ends with the run.
"""

from __future__ import annotations

import argparse
import selectors
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent / "tests") not in sys.path:  # the harness, when run as a script
    sys.path.insert(0, str(HERE.parent / "tests"))

from netns import _stop as stop_group  # noqa: E402

SOURCES = ("relay", "echo", "pinger")
RELAYS = ("c", "python-epoll", "asyncio", "vt-dataloop")
_PY_MODE = {"python-epoll": "epoll", "asyncio": "asyncio", "vt-dataloop": "dataloop"}
READY_TIMEOUT = 5.0


class FloorError(RuntimeError):
    """The floor could not be measured (no C compiler, a relay that did not start)."""


def build(into: Path) -> dict[str, Path]:
    """Compile the three C programs; ``FloorError`` without a working ``cc``."""
    out = {}
    for name in SOURCES:
        exe = into / name
        try:
            subprocess.run(["cc", "-O2", "-o", str(exe), str(HERE / "floor" / f"{name}.c")],
                           check=True, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as e:
            detail = getattr(e, "stderr", "") or str(e)
            raise FloorError(f"cannot build floor/{name}.c: {detail.strip()[:200]}") from None
        out[name] = exe
    return out


def _start(argv: list[str]) -> subprocess.Popen:
    """Start a helper and wait (bounded) for its "ready" line."""
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    deadline = time.monotonic() + READY_TIMEOUT
    with selectors.DefaultSelector() as sel:
        sel.register(p.stdout, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if sel.select(left) and p.stdout.readline().strip() == "ready":
                return p
            if p.poll() is not None:
                break
    _stop(p)
    raise FloorError(f"{Path(argv[0]).name} {' '.join(argv[1:])} did not start: "
                     f"{(p.stderr.read() or '').strip()[:200]}")


def _stop(p: subprocess.Popen) -> None:
    """The harness's stop (TERM, then KILL, to the helper's own group); pipes closed."""
    stop_group(p)
    for f in (p.stdout, p.stderr):
        if f:
            f.close()


def _relay_argv(relay: str, exes: dict[str, Path], ports: tuple[int, int, int]) -> list[str]:
    args = [str(p) for p in ports]
    if relay == "c":
        return [str(exes["relay"]), *args]
    return [sys.executable, str(HERE / "floor_relay.py"), _PY_MODE[relay], *args]


def measure(pings: int = 200, rounds: int = 2, gap: float = 0.02,
            relays: tuple[str, ...] = RELAYS, base_port: int = 47100) -> dict:
    """Round trips through each relay, interleaved over ``rounds``; medians and per-hop cost."""
    rtts: dict[str, list[float]] = {r: [] for r in relays}
    lost = dict.fromkeys(relays, 0)
    with tempfile.TemporaryDirectory(prefix="vt-floor-") as tmp:
        exes = build(Path(tmp))
        ports = (base_port, base_port + 1, base_port + 2)
        echo = _start([str(exes["echo"]), str(ports[2])])
        try:
            for _ in range(rounds):
                for relay in relays:
                    proc = _start(_relay_argv(relay, exes, ports))
                    try:
                        out = subprocess.run(
                            [str(exes["pinger"]), str(ports[0]), str(pings), str(int(gap * 1e6))],
                            capture_output=True, text=True, check=True,
                            timeout=pings * (gap + 1.0) + 10,
                        ).stdout.split()
                    finally:
                        _stop(proc)
                    rtts[relay] += [float(v) for v in out if v != "lost"]
                    lost[relay] += sum(v == "lost" for v in out)
        finally:
            _stop(echo)
    return summarize(rtts, lost, gap)


def summarize(rtts: dict[str, list[float]], lost: dict[str, int], gap: float) -> dict:
    rows = {}
    for relay, vals in rtts.items():
        vals = sorted(vals)
        rows[relay] = {
            "n": len(vals),
            "lost": lost.get(relay, 0),
            "p50_us": statistics.median(vals) if vals else None,
            "p90_us": vals[int(len(vals) * 0.9)] if vals else None,
        }
    base = rows.get("c", {}).get("p50_us")
    for row in rows.values():
        p50 = row["p50_us"]
        row["per_hop_us"] = (p50 - base) / 2 if p50 is not None and base is not None else None
    return {"gap_ms": gap * 1e3, "relays": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pings", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    try:
        res = measure(args.pings, args.rounds)
    except FloorError as e:
        print(f"floor: {e}", file=sys.stderr)
        return 1
    for relay, row in res["relays"].items():
        hop = row["per_hop_us"]
        print(f"{relay:13} p50 {row['p50_us']:7.1f} us  p90 {row['p90_us']:7.1f} us  "
              f"per hop over C {'' if hop is None else f'{hop:+.1f} us'}  lost {row['lost']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
