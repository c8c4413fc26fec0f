"""Host locks for ``multi no`` and ``multi killold``, in vtund's format.

``<lockdir>/<host>`` holds the decimal PID of the process carrying the session and a
newline, as vtund writes it.  vt's server carries every session in one process, so it
also keeps the live sessions per host in memory: the file stops a second vt or vtund
process, the table stops a second session here.

vt sends SIGTERM and SIGKILL, as root, to the PID it reads, so nothing in the file is
trusted on its own word:

* ``lockdir`` is created 0700 at start-up and refused when someone else could write to
  it (:mod:`vtcore.runtime.fsguard`); files are opened with ``O_NOFOLLOW``.
* vt holds an ``flock()`` on its lock file for the whole session (taken before the file
  is linked into place), so a live vt lock is one whose lock is held, and its PID must be
  the holder ``/proc/locks`` names.  A file nobody holds is never vt's.
* A file nobody holds is a live vtund lock only if its PID (> 1) is a process of ours
  whose ``/proc/PID/comm`` is ``vtund`` and whose title (``/proc/PID/cmdline``) is
  vtund's for this very host (``vtund[s]: HOST ...``).  Anything else is stale and
  replaced, with a warning; nothing is signalled.
* The process is signalled through a pidfd opened before it was checked, so a PID reused
  after the check cannot receive the signal.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import select
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from vtcore.runtime import fsguard

KILL_WAIT = 5.0
MAX_LOCK_TEXT = 32
MAX_PROC_LOCKS = 1 << 20
_PID = re.compile(rb"([0-9]{1,10})\n?")
_VTUND_TITLE = re.compile(r"vtund\[[sc]\]: (\S+)")

log = structlog.get_logger("vt.locks")


@dataclass
class HostLock:
    """A lock this process holds: the file's path and its open, ``flock``-ed descriptor."""

    path: Path
    fd: int


def parse_pid(text: bytes) -> int | None:
    """vtund's lock text (``"1234\\n"``) -> the PID; None for anything else, and for
    PIDs 0 and 1 and negative ones (``kill(-1)`` is every process)."""
    m = _PID.fullmatch(text)
    pid = int(m.group(1)) if m else 0
    return pid if pid > 1 else None


def _ours(pid: int) -> bool:
    """The process runs as root or as us (a user's process is never a lock holder)."""
    try:
        return os.stat(f"/proc/{pid}").st_uid in (0, os.geteuid())
    except OSError:
        return False


def _read_proc(pid: int, name: str, limit: int = 4096) -> bytes:
    try:
        with open(f"/proc/{pid}/{name}", "rb") as fh:
            return fh.read(limit)
    except OSError:
        return b""


def is_vtund_for(pid: int, host: str) -> bool:
    """``pid`` is a vtund of ours carrying ``host`` (vtund titles itself
    ``vtund[s]: HOST ...`` once the session is authenticated)."""
    if not _ours(pid) or _read_proc(pid, "comm").strip() != b"vtund":
        return False
    title = _read_proc(pid, "cmdline").split(b"\0", 1)[0].decode("latin-1")
    m = _VTUND_TITLE.match(title)
    return m is not None and m.group(1) == host


def flock_holders(st: os.stat_result) -> set[int]:
    """PIDs holding an ``flock()`` on the file ``st`` describes (from ``/proc/locks``)."""
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", "rb") as fh:
            text = fh.read(MAX_PROC_LOCKS).decode("latin-1")
    except OSError:
        return set()
    holders = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) > 5 and parts[1] == "FLOCK" and parts[5] == want and parts[4].isdigit():
            holders.add(int(parts[4]))
    return holders


def _create(dfd: int, name: str, pid: int) -> int | None:
    """Write the lock to a temporary file, ``flock`` it, then link it into place; the
    descriptor (still locked) or None if a lock exists."""
    tmp = f".{name}.{pid}.{time.monotonic_ns()}"
    fd = fsguard.open_file(dfd, tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, f"{pid}\n".encode())
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.link(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
    except FileExistsError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dfd)
    return fd


def _remove(dfd: int, name: str, st: os.stat_result | None) -> None:
    """Unlink ``name`` if it is still the file ``st`` describes (None: whatever it is)."""
    with contextlib.suppress(OSError):
        now = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        if st is None or (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
            os.unlink(name, dir_fd=dfd)


def _holder(dfd: int, name: str, host: str) -> tuple[str, int | None, os.stat_result | None]:
    """Who holds the existing lock: ``("vt", pid)``, ``("vtund", pid)``, ``("busy",
    None)`` (held, but not by the PID it names: never signalled) or ``("stale", None)``."""
    try:
        fd = fsguard.open_file(dfd, name, os.O_RDONLY)
    except FileNotFoundError:
        return "gone", None, None
    except (fsguard.UnsafePath, OSError) as exc:
        log.warning("ignoring unsafe lock file", host=host, error=str(exc))
        return "stale", None, None
    try:
        st = os.fstat(fd)
        pid = parse_pid(os.read(fd, MAX_LOCK_TEXT))
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            held = False
        except BlockingIOError:
            held = True
    finally:
        os.close(fd)
    if held:
        if pid is not None and pid in flock_holders(st) and _ours(pid):
            return "vt", pid, st
        return "busy", None, st
    if pid is not None and is_vtund_for(pid, host):
        return "vtund", pid, st
    return "stale", None, st


def _wait_exit(pidfd: int, timeout: float) -> bool:
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(max(0, int(timeout * 1000))))


def _end_process(pid: int, still_holder) -> None:
    """SIGTERM ``pid`` (SIGKILL after 5 s), as vtund does, if ``still_holder()`` after
    the pidfd is open: the signal then reaches the process that was checked, or none."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        if not still_holder() or _wait_exit(pidfd, 0):
            return
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signal.SIGTERM)
            if not _wait_exit(pidfd, KILL_WAIT):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                _wait_exit(pidfd, 1.0)
    finally:
        os.close(pidfd)


def acquire(lockdir: str, host: str, mode: str) -> HostLock | None:
    """Take the host lock; return it, or ``None`` if ``multi no`` refuses.

    ``killold`` ends another vt or vtund process holding it.  A lock held by this very
    process is the in-memory table's business, so it is taken over here.  Raises
    :class:`fsguard.UnsafePath` or OSError when ``lockdir`` cannot be used.
    """
    pid = os.getpid()
    name = fsguard.check_name(host)
    with fsguard.private_dir(lockdir) as dfd:
        for _ in range(4):
            fd = _create(dfd, name, pid)
            if fd is not None:
                return HostLock(Path(lockdir) / name, fd)
            kind, holder, st = _holder(dfd, name, host)
            if kind == "gone":
                continue
            if kind == "stale" or holder == pid:
                if kind == "stale":
                    log.info("removing stale lock", host=host)
                _remove(dfd, name, st)
                continue
            if kind == "busy" or holder is None:  # only "vt" and "vtund" name a holder
                log.warning("lock holder unnamed, not signalled", host=host)
                return None
            if mode != "killold":
                return None
            log.info("killing old connection", host=host, pid=holder, holder=kind)
            if kind == "vt":
                _end_process(holder, lambda h=holder, s=st: h in flock_holders(s))
            else:
                _end_process(holder, lambda h=holder: is_vtund_for(h, host))
    return None


def release(lock: HostLock | None) -> None:
    """Remove the lock file if it is still ours, then let go of the ``flock``."""
    if lock is None:
        return
    try:
        with fsguard.private_dir(str(lock.path.parent), create=False) as dfd:
            _remove(dfd, lock.path.name, os.fstat(lock.fd))
    except (fsguard.UnsafePath, OSError):
        pass
    finally:
        os.close(lock.fd)
