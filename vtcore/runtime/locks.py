"""Host locks for ``multi no`` and ``multi killold``, in vtund's format.

``<lockdir>/<host>`` holds the decimal PID of the process carrying the session and a
newline; it is created atomically (temp file + hard link) and removed at session end.
A lock whose PID is dead (or unreadable) is stale and removed.  vt's server carries
every session in one process, so it also keeps the live sessions per host in memory:
the file stops a second vt or vtund process, the table stops a second session here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

KILL_WAIT = 5.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_lock(path: Path) -> int | None:
    try:
        text = path.read_text()[:32]
        return int(text.strip())
    except (OSError, ValueError):
        return None


def _create(path: Path, pid: int) -> bool:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{pid}.{time.monotonic_ns()}")
    tmp.write_text(f"{pid}\n")
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def acquire(lockdir: str, host: str, mode: str, pid: int | None = None) -> Path | None:
    """Take the host lock; return its path, or ``None`` if ``multi no`` refuses.

    ``killold`` sends SIGTERM to another process holding it (SIGKILL after 5 s), as
    vtund does.  A lock held by this very process is the in-memory table's business,
    so it is taken over here.
    """
    pid = os.getpid() if pid is None else pid
    path = Path(lockdir) / host
    for _ in range(3):
        if _create(path, pid):
            return path
        holder = read_lock(path)
        if holder is None or holder == pid or not _pid_alive(holder):
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        if mode != "killold":
            return None
        with contextlib.suppress(ProcessLookupError):
            os.kill(holder, signal.SIGTERM)
        deadline = time.monotonic() + KILL_WAIT
        while time.monotonic() < deadline and _pid_alive(holder):
            time.sleep(0.1)
        if _pid_alive(holder):
            with contextlib.suppress(ProcessLookupError):
                os.kill(holder, signal.SIGKILL)
        with contextlib.suppress(OSError):
            path.unlink()
    return None


def release(path: Path | None, pid: int | None = None) -> None:
    """Remove the lock if it is still ours."""
    if path is None:
        return
    if read_lock(path) == (os.getpid() if pid is None else pid):
        with contextlib.suppress(OSError):
            path.unlink()
