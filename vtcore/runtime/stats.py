"""``stat yes``: counters appended to ``<statdir>/<host>`` in vtund's line format."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from vtcore.runtime.tunnel import Counters

STAT_INTERVAL = 300.0


def stat_line(c: Counters, now: float | None = None) -> str:
    """``Mon DD HH:MM:SS byte_in byte_out comp_in comp_out`` (vtund's format)."""
    stamp = time.strftime("%b %d %H:%M:%S", time.localtime(now))
    return f"{stamp} {c.byte_in} {c.byte_out} {c.comp_in} {c.comp_out}\n"


def stat_path(statdir: str, host: str) -> Path:
    return Path(statdir) / host[:20]


async def write_stats_forever(
    statdir: str, host: str, counters: Counters, first: float, interval: float = STAT_INTERVAL
) -> None:
    """Append a line after ``first`` seconds, then every ``interval``; cancelled at the end."""
    path = stat_path(statdir, host)
    path.parent.mkdir(parents=True, exist_ok=True)
    delay = first
    while True:
        await asyncio.sleep(delay)
        delay = interval
        try:
            with path.open("a") as fh:
                fh.write(stat_line(counters))
        except OSError:
            pass
