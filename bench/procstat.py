"""Resource readings of daemon processes from /proc: CPU time, peak RSS and PSS.

The benchmark starts every daemon itself, so it knows the root PIDs; forked session
children (vtund forks one per connection) are found by walking parent links.  Readings
are taken while the processes are alive: a child's CPU time is lost once it exits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

_TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        fields = _stat_fields(int(name))
        if fields is None:
            continue
        kids.setdefault(int(fields[1]), []).append(int(name))
    return kids


def tree(roots: list[int]) -> list[int]:
    """``roots`` and all their live descendants (bounded by the process table)."""
    kids = _children_map()
    seen: list[int] = []
    todo = [p for p in roots if os.path.exists(f"/proc/{p}")]
    while todo and len(seen) < 100_000:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.append(pid)
        todo.extend(kids.get(pid, []))
    return seen


def tree_cpu(roots: list[int]) -> tuple[float, int]:
    """CPU seconds summed over ``roots`` and every live descendant, and how many processes
    that was: a server that forks (vtund's session children, vt's workers) counted whole."""
    pids = tree(roots)
    return cpu_seconds(pids), len(pids)


def cpu_seconds(pids: list[int]) -> float:
    """utime+stime (plus waited-for children's) of ``pids``, in seconds."""
    total = 0
    for pid in pids:
        f = _stat_fields(pid)
        if f is not None:
            # fields[0] is state (field 3); utime..cstime are fields 14..17.
            total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    return total / _TICK


def _status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def _rollup_kb(pids: list[int], fields: tuple[str, ...]) -> int:
    """Sum of ``fields`` of /proc/PID/smaps_rollup over ``pids`` (gone processes count 0)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith(fields):
                        total += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def pss_kb(pids: list[int]) -> int:
    """Sum of proportional set sizes (shared pages split between sharers)."""
    return _rollup_kb(pids, ("Pss:",))


def anon_pss_kb(pids: list[int]) -> int:
    """The anonymous and shmem part of the PSS: what a process allocates, as opposed to
    the file pages (libraries) it maps, whose share falls whenever another process maps
    the same files (the scale test's client runs the same libpython as vt's server)."""
    return _rollup_kb(pids, ("Pss_Anon:", "Pss_Shmem:"))


@dataclass
class Usage:
    """One side's daemon processes at one instant."""

    cpu_s: float
    hwm_kb: int
    pss_kb: int
    anon_pss_kb: int
    nprocs: int


def usage(roots: list[int]) -> Usage:
    """CPU seconds, summed peak RSS (VmHWM) and summed PSS of ``roots`` and descendants."""
    pids = tree(roots)
    return Usage(
        cpu_s=cpu_seconds(pids),
        hwm_kb=sum(_status_kb(p, "VmHWM") for p in pids),
        pss_kb=pss_kb(pids),
        anon_pss_kb=anon_pss_kb(pids),
        nprocs=len(pids),
    )
