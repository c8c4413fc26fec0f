"""``options { metrics ADDR:PORT; }``: a Prometheus endpoint made from the status document.

Nothing is counted here: each scrape takes the same snapshot ``vt status`` shows (taken
on the event loop's thread, so no session changes under it) and turns it into metrics.
Per session (labels ``host``, ``peer``): bytes and frames each way, drops by reason,
rekeys, seconds since a frame last came in.  Per host: the same totals over its ended and
live sessions, and how many sessions are up.  Per daemon: handshakes by result and (a
client) reconnects.  ``prometheus_client`` serves it over HTTP from its own thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

log = structlog.get_logger("vt.metrics")

SNAPSHOT_TIMEOUT = 5.0
"""A scrape waits this long for the event loop; a wedged loop fails the scrape."""

# counter -> (metric, label name, label value)
_TRAFFIC = {
    "byte_in": ("device_bytes", "direction", "in"),
    "byte_out": ("device_bytes", "direction", "out"),
    "comp_in": ("link_bytes", "direction", "in"),
    "comp_out": ("link_bytes", "direction", "out"),
    "frames_in": ("frames", "direction", "in"),
    "frames_out": ("frames", "direction", "out"),
    "bad_frames": ("dropped_frames", "reason", "bad"),
    "unknown_frames": ("dropped_frames", "reason", "unknown"),
    "too_big": ("oversize_packets", "action", "too_big"),
    "fragmented": ("oversize_packets", "action", "fragmented"),
}
_HELP = {
    "device_bytes": "Bytes written to (in) and read from (out) the tunnel device.",
    "link_bytes": "Frame payload bytes received from (in) and sent to (out) the peer.",
    "frames": "Frames received from (in) and sent to (out) the peer.",
    "dropped_frames": "Frames dropped, by reason (decode, encode, device, link, bad, unknown).",
    "oversize_packets": "Packets larger than the path carries: answered with an ICMP "
                        "\"too big\" (too_big) or sent as IPv4 fragments (fragmented).",
    "rekeys": "Secure-mode rekeys (epochs this end moved on).",
}


def _traffic(counters: Mapping[str, int]) -> Iterator[tuple[str, str, str, int]]:
    """(metric, label, value, count) for each counter; every ``dropped_*`` is a drop."""
    for name, count in counters.items():
        if name.startswith("dropped_"):
            yield "dropped_frames", "reason", name.removeprefix("dropped_"), count
        elif name in _TRAFFIC:
            yield (*_TRAFFIC[name], count)


def fold(totals: dict[str, int], counters: Mapping[str, int]) -> None:
    """Add an ended session's counters to its host's totals (kept by the daemon)."""
    for name, count in counters.items():
        totals[name] = totals.get(name, 0) + count


def fold_session(closed: dict[str, dict[str, int]], status: Mapping) -> None:
    """An ended session (its ``session_status``) into its host's totals."""
    fold(closed.setdefault(status["host"], {}),
         {**status["counters"], "rekeys": status.get("rekeys", 0)})


class StatusCollector:
    """A prometheus_client collector over a daemon's ``status()`` document."""

    def __init__(self, snapshot: Callable[[], dict], loop: asyncio.AbstractEventLoop,
                 refresh: Callable[[], Coroutine[Any, Any, None]] | None = None) -> None:
        self.snapshot = snapshot
        self.loop = loop
        self.refresh = refresh
        """A master's: ask its workers first (a scrape sees the counters of now)."""

    def _on_loop(self) -> dict:
        if self.refresh is not None:
            with contextlib.suppress(Exception):  # stale is better than no scrape
                asyncio.run_coroutine_threadsafe(self.refresh(), self.loop).result(
                    SNAPSHOT_TIMEOUT)
        future: concurrent.futures.Future = concurrent.futures.Future()

        def take() -> None:
            try:
                future.set_result(self.snapshot())
            except Exception as exc:  # reported to the scraper as a failed scrape
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(take)
        return future.result(SNAPSHOT_TIMEOUT)

    def collect(self) -> Iterator[Metric]:
        doc = self._on_loop()
        sessions = doc.get("sessions", [])
        yield from _session_metrics(sessions)
        yield from _host_metrics(sessions, doc.get("closed", {}))
        handshakes = CounterMetricFamily("vt_handshakes", "Handshakes by result.",
                                         labels=["result"])
        for result, count in sorted(doc.get("handshake_results", {}).items()):
            handshakes.add_metric([result], count)
        yield handshakes
        if doc.get("role") == "client":
            reconnects = CounterMetricFamily("vt_reconnects", "Reconnections of the client.",
                                             labels=["host"])
            reconnects.add_metric([doc["host"]], doc.get("reconnects", 0))
            yield reconnects


def _families(prefix: str, labels: list[str]) -> dict[str, CounterMetricFamily]:
    out = {}
    for name, help_ in _HELP.items():
        extra = {"dropped_frames": ["reason"], "oversize_packets": ["action"],
                 "rekeys": []}.get(name, ["direction"])
        out[name] = CounterMetricFamily(f"vt_{prefix}_{name}", help_, labels=[*labels, *extra])
    return out


def _session_metrics(sessions: list[dict]) -> Iterator[Metric]:
    fams = _families("session", ["host", "peer"])
    age = GaugeMetricFamily("vt_session_last_frame_age_seconds",
                            "Seconds since a frame last came in.", labels=["host", "peer"])
    for s in sessions:
        ids = [s["host"], s["peer"]]
        for metric, _label, value, count in _traffic(s["counters"]):
            fams[metric].add_metric([*ids, value], count)
        fams["rekeys"].add_metric(ids, s.get("rekeys", 0))
        age.add_metric(ids, s.get("last_frame_age", 0.0))
    yield from fams.values()
    yield age


def _host_metrics(sessions: list[dict], closed: Mapping[str, Mapping[str, int]]
                  ) -> Iterator[Metric]:
    totals: dict[str, dict[str, int]] = {h: dict(c) for h, c in closed.items()}
    up: dict[str, int] = dict.fromkeys(totals, 0)
    for s in sessions:
        fold_session(totals, s)
        up[s["host"]] = up.get(s["host"], 0) + 1
    fams = _families("host", ["host"])
    sessions_up = GaugeMetricFamily("vt_sessions_up", "Sessions up, per host.", labels=["host"])
    for host in sorted(totals):
        for metric, _label, value, count in _traffic(totals[host]):
            fams[metric].add_metric([host, value], count)
        fams["rekeys"].add_metric([host], totals[host].get("rekeys", 0))
        sessions_up.add_metric([host], up[host])
    yield from fams.values()
    yield sessions_up


def check_address(address: tuple[str, int] | None) -> None:
    """Raise OSError now if the endpoint cannot listen (before a daemon detaches)."""
    if address is None:
        return
    host, port = address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))


@contextlib.asynccontextmanager
async def serving(address: tuple[str, int] | None, snapshot: Callable[[], dict],
                  refresh: Callable[[], Coroutine[Any, Any, None]] | None = None
                  ) -> AsyncIterator[None]:
    """The endpoint on ``address`` while inside (nothing when None).  A failure to listen
    is logged; the tunnels run on without metrics."""
    httpd = None
    if address is not None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(StatusCollector(snapshot, asyncio.get_running_loop(), refresh))
        try:
            httpd, _thread = start_http_server(address[1], address[0], registry)
            log.info("metrics endpoint listening", address=f"{address[0]}:{address[1]}")
        except OSError as exc:
            log.error("metrics endpoint failed", address=f"{address[0]}:{address[1]}",
                      error=exc.strerror or str(exc))
    try:
        yield
    finally:
        if httpd is not None:
            await asyncio.to_thread(httpd.shutdown)
            httpd.server_close()
