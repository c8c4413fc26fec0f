"""Plant one hostile lock and let vt take the host lock with ``multi killold``, inside a
PID namespace of its own (``unshare --pid --fork --mount-proc``).

Started as PID 1 of that namespace, it runs the case as PID 2, so that even a wrong
``kill(-1)``, ``kill(0)`` or ``kill(1)`` only reaches these two and the sacrificial
``sleep``: never the test machine.
Prints one JSON line: did the victim survive, which signals reached this script, and
what ``locks.acquire`` returned.

    unshare --pid --fork --mount-proc python lock_sandbox.py CASE WORKDIR
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HOST = "lockt1"
NOBODY = 65534


def plant(case: str, work: Path, victim: int) -> Path:
    """Make the lock directory for ``case`` with its hostile content; return it."""
    lockdir = work / "lock"
    lockdir.mkdir(mode=0o700)
    lock = lockdir / HOST
    contents = {"minus1": "-1\n", "minus-pgid": f"-{victim}\n", "zero": "0\n", "one": "1\n",
                "foreign": f"{victim}\n", "plus-foreign": f"+{victim}\n",
                "space-foreign": f" {victim}\n"}
    if case in contents:
        lock.write_text(contents[case])
    elif case == "symlink":
        target = work / "target"
        target.write_text(f"{victim}\n")
        lock.symlink_to(target)
    elif case == "dir-foreign":
        lock.write_text(f"{victim}\n")
        os.chown(lockdir, NOBODY, NOBODY)
    elif case == "dir-world":
        lock.write_text(f"{victim}\n")
        lockdir.chmod(0o1777)
    elif case == "dir-symlink":
        real = work / "elsewhere"
        lockdir.rename(real)
        (real / HOST).write_text(f"{victim}\n")
        lockdir.symlink_to(real)
    else:
        raise SystemExit(f"unknown case {case}")
    return lockdir


def _record(got: list[str]) -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, lambda s, _f: got.append(signal.Signals(s).name))


def as_init() -> None:
    """PID 1: run the case as PID 2 (so that a lock naming PID 1 is not "ours"), and
    report the signals that reached either of us."""
    got: list[str] = []
    _record(got)
    child = subprocess.run([sys.executable, *sys.argv], stdout=subprocess.PIPE, text=True,
                           timeout=50)
    lines = [ln for ln in child.stdout.splitlines() if ln.startswith("{")]
    report = json.loads(lines[-1]) if lines else {"result": f"died: {child.returncode}"}
    report["signals"] = got + report.get("signals", [])
    print(json.dumps(report), flush=True)


def main() -> None:
    if os.getpid() == 1:
        as_init()
        return
    case, work = sys.argv[1], Path(sys.argv[2])
    got: list[str] = []
    _record(got)
    victim = subprocess.Popen(["sleep", "30"], start_new_session=True)
    result = "?"
    try:
        lockdir = plant(case, work, victim.pid)
        from vtcore.runtime import locks

        try:
            lock = locks.acquire(str(lockdir), HOST, "killold")
            result = "locked" if lock else "refused"
            if lock is not None and (work / "target").exists():
                result += " target-kept"
        except Exception as exc:  # what the server would log
            result = f"error: {type(exc).__name__}: {exc}"
        time.sleep(0.2)
        alive = victim.poll() is None
    finally:
        if victim.poll() is None:
            victim.kill()
        victim.wait()
    print(json.dumps({"victim_alive": alive, "signals": got, "result": result}), flush=True)


if __name__ == "__main__":
    main()
