"""``stat yes``: counters appended to ``<statdir>/<host>`` in vtund's line format."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import structlog

from vtcore.runtime import fsguard
from vtcore.runtime.tunnel import Counters

log = structlog.get_logger("vt.stats")

STAT_INTERVAL = 300.0


def stat_line(c: Counters, now: float | None = None) -> str:
    """``Mon DD HH:MM:SS byte_in byte_out comp_in comp_out`` (vtund's format)."""
    stamp = time.strftime("%b %d %H:%M:%S", time.localtime(now))
    return f"{stamp} {c.byte_in} {c.byte_out} {c.comp_in} {c.comp_out}\n"


def stat_path(statdir: str, host: str) -> Path:
    return Path(statdir) / host[:20]


def append_stat_line(statdir: str, host: str, line: str) -> None:
    """Append to the host's file: never through a symlink, never in a directory or file
    someone else could write (:mod:`vtcore.runtime.fsguard`)."""
    path = stat_path(statdir, host)
    with fsguard.private_dir(statdir) as dfd:
        fd = fsguard.open_file(dfd, path.name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


async def write_stats_forever(
    statdir: str, host: str, counters: Counters, first: float, interval: float = STAT_INTERVAL
) -> None:
    """Append a line after ``first`` seconds, then every ``interval``; cancelled at the end."""
    delay = first
    while True:
        await asyncio.sleep(delay)
        delay = interval
        try:
            append_stat_line(statdir, host, stat_line(counters))
        except (fsguard.UnsafePath, OSError) as exc:
            log.warning("cannot write stat file", host=host, error=str(exc))
