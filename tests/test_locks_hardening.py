"""Host locks (issue 15, finding 1): a planted lock file never gets a process signalled.

vt reads ``<lockdir>/<host>`` as root and, with ``multi killold``, signals the PID in it.
Each hostile case runs in a PID namespace of its own (tests/lock_sandbox.py), so even a
regression that sends ``kill(-1)`` reaches only the sandbox.  Then the legitimate uses:
``killold`` still ends another vt holding the lock and a vtund (its lock format, its
process title), ``multi no`` still refuses, and a directory someone else could write is
refused at start-up.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from vtcore.runtime import fsguard, locks

pytestmark = pytest.mark.netns  # root: chown, PID namespaces, signalling our own children

SANDBOX = Path(__file__).with_name("lock_sandbox.py")
HOST = "lockt1"


@pytest.fixture
def work():
    d = Path(tempfile.mkdtemp(prefix="vt-locks-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _sandbox(case: str, work: Path) -> dict:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare")
    res = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, str(SANDBOX), case,
         str(work)], capture_output=True, text=True, timeout=60,
        start_new_session=True)  # a wrong kill(0) must reach the sandbox's group only
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"sandbox died (rc={res.returncode}): {res.stdout}{res.stderr}"
    return json.loads(lines[-1])


@pytest.mark.parametrize("case", ["minus1", "minus-pgid", "zero", "one", "foreign",
                                  "plus-foreign", "space-foreign", "symlink"])
def test_planted_lock_signals_nobody_and_is_replaced(case: str, work: Path) -> None:
    """-1 (every process), -PGID, 0 (our group), 1 (init), a live foreign PID (a
    sacrificial ``sleep``), or a symlink: nothing is signalled, the junk is replaced."""
    got = _sandbox(case, work)
    assert got["victim_alive"], got
    assert got["signals"] == [], got
    assert got["result"] == ("locked target-kept" if case == "symlink" else "locked"), got


@pytest.mark.parametrize("case", ["dir-foreign", "dir-world", "dir-symlink"])
def test_unsafe_lockdir_is_refused(case: str, work: Path) -> None:
    """A lockdir another user owns, anyone may write, or that is a symlink: refused,
    and the live PID planted in it is not signalled."""
    got = _sandbox(case, work)
    assert got["victim_alive"], got
    assert got["signals"] == [], got
    assert got["result"].startswith("error: UnsafePath: "), got
    assert "refusing to use this directory" in got["result"], got


def _wait_exit(proc: subprocess.Popen, timeout: float) -> int | None:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


HOLDER = """
import sys, time
from vtcore.runtime import locks
lock = locks.acquire(sys.argv[1], sys.argv[2], "no")
print("held" if lock else "refused", flush=True)
time.sleep(30)
"""


def test_killold_ends_another_vt_and_multi_no_refuses(work: Path) -> None:
    """Another vt process holds the lock (flock + its PID): ``multi no`` refuses without
    a signal; ``killold`` ends it and takes the lock; release removes the file."""
    lockdir = str(work / "lock")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, lockdir, HOST],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert (work / "lock" / HOST).read_text() == f"{holder.pid}\n"
        assert locks.acquire(lockdir, HOST, "no") is None
        assert holder.poll() is None
        start = time.monotonic()
        lock = locks.acquire(lockdir, HOST, "killold")
        assert lock is not None
        assert _wait_exit(holder, 5) == -signal.SIGTERM
        assert time.monotonic() - start < 3
        assert (work / "lock" / HOST).read_text() == f"{os.getpid()}\n"
        locks.release(lock)
        assert not (work / "lock" / HOST).exists()
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait()


def _fake_vtund(work: Path, host: str) -> subprocess.Popen:
    """A process that looks like a vtund session for ``host`` (comm ``vtund``, title
    ``vtund[s]: HOST tty``, as tests/peers.py's real one shows)."""
    exe = work / "vtund"
    if not exe.exists():
        shutil.copy(shutil.which("sleep"), exe)
    return subprocess.Popen([f"vtund[s]: {host} tty", "30"], executable=str(exe),
                            start_new_session=True)


@pytest.mark.parametrize("title_host", [HOST, "otherhost"])
def test_killold_reads_vtunds_lock_format(title_host: str, work: Path) -> None:
    """vtund's lock (its PID and a newline, no flock): ``killold`` ends a vtund carrying
    this host; a vtund carrying another host is not signalled and its stale claim on
    this host's lock is replaced."""
    lockdir = work / "lock"
    lockdir.mkdir(mode=0o700)
    fake = _fake_vtund(work, title_host)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and b"vtund[s]" not in Path(
                f"/proc/{fake.pid}/cmdline").read_bytes():
            time.sleep(0.01)
        (lockdir / HOST).write_text(f"{fake.pid}\n")
        if title_host == HOST:
            assert locks.acquire(str(lockdir), HOST, "no") is None
            assert fake.poll() is None
        lock = locks.acquire(str(lockdir), HOST, "killold")
        assert lock is not None
        if title_host == HOST:
            assert _wait_exit(fake, 5) == -signal.SIGTERM
        else:
            time.sleep(0.2)
            assert fake.poll() is None
        locks.release(lock)
    finally:
        if fake.poll() is None:
            fake.kill()
        fake.wait()


def test_release_leaves_a_lock_taken_over_since(work: Path) -> None:
    """This process takes its own lock over (the in-memory table decided): releasing
    the first one must not remove the second."""
    lockdir = str(work / "lock")
    first = locks.acquire(lockdir, HOST, "killold")
    second = locks.acquire(lockdir, HOST, "killold")
    assert first is not None and second is not None
    locks.release(first)
    assert (work / "lock" / HOST).read_text() == f"{os.getpid()}\n"
    locks.release(second)
    assert not (work / "lock" / HOST).exists()


def test_prepare_creates_private_dirs_and_refuses_unsafe_ones(work: Path) -> None:
    fresh = work / "a" / "lock"
    fsguard.prepare(str(fresh))
    st = fresh.stat()
    assert (st.st_mode & 0o777, st.st_uid) == (0o700, os.geteuid())
    bad = work / "bad"
    bad.mkdir(mode=0o700)
    os.chown(bad, 65534, 65534)
    with pytest.raises(fsguard.UnsafePath, match="owned by uid 65534"):
        fsguard.prepare(str(bad))


def test_server_refuses_to_start_on_a_foreign_lockdir(work: Path) -> None:
    """``vt serve`` creates lockdir/statdir at start-up; one another user owns stops it
    with one line, before it listens."""
    lockdir = work / "lock"
    lockdir.mkdir(mode=0o755)
    os.chown(lockdir, 65534, 65534)
    cfg = work / "vtund.conf"
    cfg.write_text(f"options {{ lockdir {lockdir}; statdir {work}/stat; }}\n"
                   f"{HOST} {{ passwd Vt-test-pw1; type tun; }}\n")
    cfg.chmod(0o600)
    res = subprocess.run([sys.executable, "-m", "vtcore", "serve", "-n", "-f", str(cfg),
                          "-P", "1"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 1, res
    assert res.stderr.strip().splitlines() == [
        f"vt: {lockdir}: owned by uid 65534, not by root or uid 0; refusing to use this "
        "directory"], res.stderr
    assert not (work / "stat").exists() or (work / "stat").stat().st_mode & 0o777 == 0o700


@pytest.mark.vtund
def test_killold_ends_a_real_vtund_session() -> None:
    """A real vtund carries the host (its lock in /var/lock/vtund, its format); a vt
    server on the same machine with ``multi killold`` takes the host over: the vtund
    session process ends and the lock names the vt server."""
    from behaviour import conf, wait_for
    from netns import two_hosts
    from peers import VtClient, VtServer, VtundClient, VtundServer, requires_vtund

    requires_vtund()
    host = f"lk{os.getpid()}"
    lock = Path("/var/lock/vtund") / host
    up = ["program /bin/sh \"-c 'exec sleep 60'\""]
    scfg = conf(host, type="tty", proto="tcp", multi="killold", up=up)
    ccfg = conf(host, up=["program /bin/sh \"-c 'exec cat > /dev/null'\""])
    try:
        with two_hosts() as p, VtundServer(p.a, scfg) as vs, \
                VtundClient(p.b, ccfg, host, p.a_addr):
            old = int(wait_for(lambda: lock.exists() and lock.read_text().strip(), 10,
                               "vtund's lock"))
            assert old != vs.proc.pid and locks.is_vtund_for(old, host)
            with VtServer(p.a, scfg, port=5001) as s, \
                    VtClient(p.b, ccfg, host, p.a_addr, port=5001):
                s.wait_log(r"killing old connection.*holder=vtund", timeout=15)
                wait_for(lambda: not Path(f"/proc/{old}").exists(), 10, "vtund session end")
                wait_for(lambda: lock.exists() and lock.read_text() == f"{s.proc.pid}\n", 10,
                         "vt's lock")
                s.wait_log(r"session opened", timeout=10)
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()


FLOCKER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(30)
"""


def test_held_lock_naming_another_pid_is_not_signalled(work: Path) -> None:
    """A lock held (flock) by one process but naming another: neither is signalled and
    ``killold`` refuses rather than guess."""
    lockdir = work / "lock"
    lockdir.mkdir(mode=0o700)
    victim = subprocess.Popen(["sleep", "30"], start_new_session=True)
    (lockdir / HOST).write_text(f"{victim.pid}\n")
    holder = subprocess.Popen([sys.executable, "-c", FLOCKER, str(lockdir / HOST)],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert locks.acquire(str(lockdir), HOST, "killold") is None
        time.sleep(0.2)
        assert victim.poll() is None and holder.poll() is None
    finally:
        for proc in (victim, holder):
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def test_stat_file_is_never_written_through_a_symlink(work: Path) -> None:
    """``stat yes`` appends to ``<statdir>/<host>``: a symlink planted there is refused
    and its target left alone."""
    from vtcore.runtime.stats import append_stat_line

    statdir = work / "stat"
    statdir.mkdir(mode=0o700)
    target = work / "target"
    target.write_text("")
    (statdir / HOST).symlink_to(target)
    with pytest.raises(fsguard.UnsafePath, match="symlink"):
        append_stat_line(str(statdir), HOST, "line\n")
    assert target.read_text() == ""
    (statdir / HOST).unlink()
    append_stat_line(str(statdir), HOST, "line\n")
    assert (statdir / HOST).read_text() == "line\n"
