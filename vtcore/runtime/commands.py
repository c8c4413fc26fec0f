"""``up`` and ``down`` commands, run as vtund runs them.

Substitution (``%%`` and ``%d`` device, ``%A``/``%P`` local address/port, ``%a``/``%p``
remote address/port, ``%h`` host; any other ``%X`` is ``X``), argument splitting
(spaces separate, ``'...'`` groups, ``\\`` escapes), ``program`` without a path runs
under ``/bin/sh -c``.  A failing command is logged and the session goes on.
Unlike vtund, the session waits for its ``up`` list before the first packet reaches
the device, so the interface is configured before traffic flows.
"""

from __future__ import annotations

import asyncio
import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import structlog

PPP_DELAY = 10.0
"""vtund sleeps this long after starting pppd so routes can follow."""
WAIT_LIMIT = 300.0
"""Upper bound on a ``wait`` command; past it the command is killed and logged."""

log = structlog.get_logger("vt.commands")


@dataclass(frozen=True)
class Substitutions:
    device: str
    host: str
    local_addr: str = ""
    local_port: int = 0
    remote_addr: str = ""
    remote_port: int = 0

    def table(self) -> Mapping[str, str]:
        return {
            "%": self.device,
            "d": self.device,
            "A": self.local_addr,
            "P": str(self.local_port),
            "a": self.remote_addr,
            "p": str(self.remote_port),
            "h": self.host,
        }


def substitute(text: str, subs: Substitutions) -> str:
    """vtund's ``subst_opt``: ``%X`` replaced from the table, unknown ``%X`` -> ``X``."""
    table = subs.table()
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "%" and i + 1 < n:
            key = text[i + 1]
            out.append(table.get(key, key))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def split_args(text: str) -> list[str]:
    """vtund's ``split_args``: spaces separate, single quotes group, backslash escapes."""
    args: list[str] = []
    cur: list[str] = []
    in_word = False
    quoted = False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            cur.append(text[i + 1])
            in_word = True
            i += 2
            continue
        if ch == "'":
            quoted = not quoted
            in_word = True
        elif ch in " \t" and not quoted:
            if in_word:
                args.append("".join(cur))
                cur = []
                in_word = False
        else:
            cur.append(ch)
            in_word = True
        i += 1
    if in_word:
        args.append("".join(cur))
    return args


def command_argv(cmd, options, subs: Substitutions) -> list[str]:
    """The argv a config ``Command`` runs as."""
    args = substitute(cmd.args or "", subs)
    if cmd.kind == "program":
        if cmd.path is None:
            return ["/bin/sh", "-c", args]
        return [cmd.path, *split_args(args)]
    prog = getattr(options, cmd.kind)
    return [prog, *split_args(args)]


def _waits(cmd) -> bool:
    return bool(cmd.wait) or cmd.kind in ("ifconfig", "route", "firewall", "ip")


async def run_commands(
    commands: Sequence,
    options,
    subs: Substitutions,
    *,
    stdio_fd: int | None = None,
    what: str = "up",
    env: Mapping[str, str] | None = None,
) -> int:
    """Run a command list in order; return how many failed.  Never raises."""
    failed = 0
    for cmd in commands:
        argv = command_argv(cmd, options, subs)
        shown = " ".join(shlex.quote(a) for a in argv)
        stdin = stdout = stdio_fd if stdio_fd is not None else asyncio.subprocess.DEVNULL
        stderr = asyncio.subprocess.DEVNULL if stdio_fd is not None else None
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=stdin, stdout=stdout, stderr=stderr,
                env={**os.environ, **(env or {})}, start_new_session=True,
            )
        except OSError as exc:
            failed += 1
            log.warning("command failed to start", list=what, command=shown, error=exc.strerror)
            continue
        if _waits(cmd):
            try:
                rc = await asyncio.wait_for(proc.wait(), WAIT_LIMIT)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                rc = -9
            if rc != 0:
                failed += 1
                log.warning("command failed", list=what, command=shown, status=rc)
            else:
                log.debug("command done", list=what, command=shown)
        else:
            _reap_later(proc)
            log.debug("command started", list=what, command=shown, pid=proc.pid)
        if cmd.kind == "ppp":
            await asyncio.sleep(PPP_DELAY)
    return failed


_background: set[asyncio.Task] = set()


def _reap_later(proc: asyncio.subprocess.Process) -> None:
    task = asyncio.get_running_loop().create_task(proc.wait())
    _background.add(task)
    task.add_done_callback(_background.discard)
