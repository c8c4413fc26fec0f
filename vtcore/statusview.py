"""``vt status`` for people: the daemons' JSON documents (:mod:`vtcore.runtime.status`)
as ``wg show``-like text, with human units and, under ``--watch``, a throughput sparkline
per session."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

SPARKS = "▁▂▃▄▅▆▇█"
HISTORY = 30
"""Refreshes a ``--watch`` sparkline shows."""


def size(n: float) -> str:
    """Bytes in IEC units: ``512 B``, ``1.50 KiB``, ``3.20 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def rate(n: float | None) -> str:
    """Bytes per second in bits, as links are rated: ``840 bit/s``, ``12.3 Mbit/s``."""
    if n is None:
        return "-"
    bits = n * 8
    for unit in ("bit/s", "kbit/s", "Mbit/s", "Gbit/s"):
        if bits < 1000 or unit == "Gbit/s":
            return f"{bits:.0f} {unit}" if unit == "bit/s" else f"{bits:.1f} {unit}"
        bits /= 1000
    raise AssertionError("unreachable")


def duration(seconds: float) -> str:
    """``1 hour, 2 minutes, 3 seconds`` (as ``wg show``); under a minute with a decimal."""
    if seconds < 60:
        return f"{seconds:.1f} seconds"
    parts = []
    rest = int(seconds)
    for name, span in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        count, rest = divmod(rest, span)
        if count:
            parts.append(f"{count} {name}{'s' if count != 1 else ''}")
    return ", ".join(parts)


def sparkline(values: Iterable[float]) -> str:
    """One block character per value, scaled to the largest."""
    vals = list(values)
    top = max(vals, default=0)
    if top <= 0:
        return SPARKS[0] * len(vals)
    return "".join(SPARKS[min(len(SPARKS) - 1, int(v / top * (len(SPARKS) - 1) + 0.5))]
                   for v in vals)


def session_key(doc: dict, session: dict) -> tuple:
    return (doc.get("pid"), session.get("host"), session.get("peer"), session.get("since"))


class History:
    """Each session's throughput (in + out) across ``--watch`` refreshes."""

    def __init__(self) -> None:
        self.rates: dict[tuple, deque[float]] = {}

    def add(self, docs: list[dict]) -> None:
        seen = set()
        for doc in docs:
            for s in doc.get("sessions", []):
                key = session_key(doc, s)
                seen.add(key)
                r = s.get("rates") or {}
                total = (r.get("byte_in") or 0) + (r.get("byte_out") or 0)
                self.rates.setdefault(key, deque(maxlen=HISTORY)).append(total)
        for key in set(self.rates) - seen:  # ended sessions
            del self.rates[key]


def render(docs: list[dict], history: History | None = None) -> list[str]:
    """The text of ``vt status`` (and of each ``--watch`` refresh)."""
    if not docs:
        return ["no vt running (nothing answers in $VT_RUN_DIR or /run/vt)"]
    lines: list[str] = []
    for doc in docs:
        what = (f"server on {doc.get('listen')}" if doc.get("role") == "server"
                else f"client {doc.get('host')} -> {doc.get('server')}")
        if doc.get("workers") is not None:  # options { workers N; }: the master
            count = len(doc["workers"])
            what += f", {count} worker{'s' if count != 1 else ''} as {doc.get('user')}"
        lines.append(f"pid {doc.get('pid')}: {what}, "
                     f"{len(doc.get('sessions', []))} session(s)")
        for s in doc.get("sessions", []):
            lines += _session(s, history.rates.get(session_key(doc, s)) if history else None)
        for b in doc.get("backoff", []):
            lines.append(f"  back-off: host {b['host']}: {b['failures']} failed, next try in "
                         f"{b['next_try_in']}s (interval {b['interval']}s, "
                         f"{b['refused']} refused)")
    return lines


def _session(s: dict, spark: Iterable[float] | None) -> list[str]:
    c = s["counters"]
    r = s.get("rates") or {}
    mode = "+".join(m for m in ("native", "offload", "segments", "runs") if s.get(m)) or "vtun"
    peer = s["peer"] + (f" (udp {s['udp_peer']})" if s.get("udp_peer") else "")
    dropped = sum(c.get(k, 0) for k in ("dropped_decode", "dropped_encode", "dropped_device",
                                        "dropped_link"))
    out = [
        f"  session {s['host']}",
        f"    peer: {peer}",
        *([f"    worker: {s['worker']}"] if s.get("worker") else []),
        f"    transport: {s['proto']}/{s['type']} {s['device']} [{mode}]",
        f"    compression: {s.get('compress') or 'none'}",
        f"    cipher: {s.get('cipher') or 'none'}",
        f"    uptime: {duration(s['uptime'])}",
        f"    last frame: in {duration(s['last_frame_age'])} ago, "
        f"out {duration(s.get('last_frame_out_age', s['last_frame_age']))} ago",
        f"    transfer: {size(c['byte_in'])} received, {size(c['byte_out'])} sent "
        f"({c['frames_in']}/{c['frames_out']} frames)",
        f"    rate: {rate(r.get('byte_in'))} in, {rate(r.get('byte_out'))} out"
        + (f"  {sparkline(spark)}" if spark else ""),
        f"    drops: bad {c.get('bad_frames', 0)}  unknown {c.get('unknown_frames', 0)}  "
        f"dropped {dropped}",
    ]
    if s.get("rekeys"):
        out.append(f"    rekeys: {s['rekeys']}")
    return out
