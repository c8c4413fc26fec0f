"""``vt serve`` with ``options { workers N; }``: the root master of unprivileged workers.

OpenSSH's privilege separation in nginx's shape.  The master reads the config, listens,
and hands each accepted connection to the worker with the fewest sessions (SCM_RIGHTS),
with a fresh challenge for vtun's handshake; it parses nothing from the network.  A
worker runs the handshake and the data path as an unprivileged user
(:mod:`vtcore.runtime.worker`) and asks the master for the rest, on a channel whose
every message is checked (:func:`vtcore.runtime.control.parse_request`):

- ``claim``: the host it authenticated on a connection it was given, once; the master
  checks the client's answer to its own challenge (vtun's handshake), then takes the
  host's lock as ``multi`` says (asking the workers holding the host's sessions to end
  them: ``vacate``);
- ``device``: the claimed host's device, once; the master opens it and passes the
  descriptor; ``up``/``down``: the host's commands, once each, in that order;
- ``release``; ``stat``: a stat file line.

A worker that sends anything else (another host's device, a second device, an address
that is no address) is killed and logged, and only its sessions end: the master runs
their down commands, closes their devices, releases their locks and starts a new worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import pickle
import pwd
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any

import structlog
from vt_api import Device, DeviceRequest, PortableDevice

from vtcore import log as vtlog
from vtcore import metrics
from vtcore.config.model import Config, Host
from vtcore.notify import Notifier
from vtcore.plugins import Plugins
from vtcore.protocol.challenge import check_response
from vtcore.runtime import fsguard, locks, trust
from vtcore.runtime.client import server_port
from vtcore.runtime.commands import Substitutions
from vtcore.runtime.control import (
    Channel,
    Claim,
    Down,
    OpenDevice,
    Pinned,
    Release,
    Remember,
    Request,
    Stat,
    Up,
    Violation,
    parse_request,
)
from vtcore.runtime.netio import peer_name
from vtcore.runtime.priority import LINK_NICE
from vtcore.runtime.server import (
    DEAD_SESSION_WAIT,
    ServerOptions,
    install_server_signals,
    reload_config,
)
from vtcore.runtime.session import HostOps
from vtcore.runtime.stats import append_stat_line, stat_line
from vtcore.runtime.status import StatusServer
from vtcore.runtime.tunnel import Counters

log = structlog.get_logger("vt.master")

DEFAULT_USERS = ("vt", "nobody")
"""The workers' user when ``options`` names none: the first that exists."""
MAX_HANDED = 4096
"""Hand-offs a worker has not claimed yet that the master remembers (oldest forgotten:
a worker evicts its half-open handshakes long before)."""
STATUS_TIMEOUT = 2.0
MAX_STATUS_PAGES = 400
"""Bound on the pages of one worker's status (:data:`vtcore.runtime.worker.STATUS_PAGE`
sessions each)."""
RESTART_DELAYS = (0.0, 0.5, 1.0, 2.0, 5.0)
"""Wait before restarting a worker that died, by how many died young in a row."""
YOUNG = 5.0
"""A worker that dies within this many seconds of its start died young."""
EXIT_GRACE = 2.0
"""Seconds a worker whose channel closed has to exit before it is killed."""


class SetupError(Exception):
    """The master cannot start its workers (``str()``: one line)."""


def worker_account(options) -> tuple[int, int, str]:
    """``(uid, gid, name)`` of the workers' user: ``user``/``group`` from ``options``,
    else the first of :data:`DEFAULT_USERS` that exists.  Never root."""
    if os.geteuid() != 0:  # nothing to drop: the workers run as this user
        return os.getuid(), os.getgid(), pwd.getpwuid(os.getuid()).pw_name
    names = (options.user,) if options.user else DEFAULT_USERS
    for name in names:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        gid = entry.pw_gid
        if options.group:
            try:
                gid = grp.getgrnam(options.group).gr_gid
            except KeyError:
                raise SetupError(f"group {options.group} does not exist") from None
        if entry.pw_uid == 0 or gid == 0:
            raise SetupError(f"workers must not run as root (user {name})")
        return entry.pw_uid, gid, name
    raise SetupError(f"user {' or '.join(names)} does not exist (see the README: "
                     "useradd --system --no-create-home --shell /usr/sbin/nologin vt)")


CAP_SETGID = 6
CAP_SETUID = 7


def default_workers(euid: int, cap_eff: int, cpus: int) -> tuple[int, str]:
    """Workers when ``options`` sets none (issue 18): one per CPU this process may run on,
    if it can start them unprivileged; else 0 and why.  Pure: the caller reads the
    effective uid, ``CapEff`` and the CPU affinity."""
    if euid != 0:
        return 0, "not root: nothing to separate"
    missing = [name for name, bit in (("CAP_SETUID", CAP_SETUID), ("CAP_SETGID", CAP_SETGID))
               if not cap_eff >> bit & 1]
    if missing:
        return 0, f"no {' and '.join(missing)} to start unprivileged workers"
    return max(1, cpus), ""


def _cap_eff() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def resolve_workers(config: Config, plugins: Plugins) -> int:
    """``options.workers`` if set (0: one process), else :func:`default_workers` --
    falling back to one process, with a warning, where workers cannot run (no workers'
    user, a device backend that cannot move to a worker).  An explicit ``workers N``
    that cannot run is the caller's :class:`SetupError`."""
    if config.options.workers is not None:
        return config.options.workers
    count, why = default_workers(os.geteuid(), _cap_eff(), len(os.sched_getaffinity(0)))
    if count:
        try:
            worker_account(config.options)
            check_portable(config, plugins)
        except SetupError as exc:
            count, why = 0, str(exc)
    if not count and os.geteuid() == 0:
        log.warning("workers off: one process runs every session as root", reason=why)
    return count


def check_portable(config: Config, plugins: Plugins) -> None:
    """Every host's device backend must move to a worker (``adopt``)."""
    for host in config.hosts.values():
        backend = plugins.registry.devices.get(host.type)
        if backend is not None and backend.adopt is None:
            raise SetupError(f"host {host.name}: device backend {backend.name} cannot run in "
                             "a worker (no adopt); set workers 0")


@dataclass(eq=False)
class Grant:
    """A host a worker claimed on one connection, and what the master did for it."""

    conn: int
    worker: WorkerProc
    host: Host
    lock: Any
    options: Any
    device: Device | None = None
    subs: Substitutions | None = None
    upped: bool = False
    downed: bool = False
    kept: bool = False
    """``device`` is the last session's (``persist keep``): not yet given for this one."""
    released: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(eq=False)
class WorkerProc:
    slot: int
    proc: asyncio.subprocess.Process
    channel: Channel
    started: float
    handed: OrderedDict[int, bytes] = field(default_factory=OrderedDict)
    """Connection -> the challenge sent with it, until its claim."""
    status: dict = field(default_factory=dict)
    """Its last status answer."""
    task: asyncio.Task | None = None
    pidfd: int = -1

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        """Through a pidfd: never a reused pid, and never ``Popen.send_signal``, whose
        poll() would reap the child under asyncio's watcher (its exit status lost)."""
        with contextlib.suppress(ProcessLookupError, OSError):
            signal.pidfd_send_signal(self.pidfd, sig)


class Master:
    """The root process of a server with workers."""

    def __init__(self, config_path: str, config: Config, plugins: Plugins,
                 overrides: ServerOptions, listener: socket.socket | None,
                 count: int) -> None:
        self.config_path = config_path
        self.config = config
        self.plugins = plugins
        self.overrides = overrides
        self.listener = listener
        self.count = count
        self.uid, self.gid, self.user = worker_account(config.options)
        check_portable(config, plugins)
        self.workers: list[WorkerProc | None] = [None] * count
        self.grants: dict[int, Grant] = {}
        self.claimed: set[str] = set()
        self._conn_ids = 0
        self._young: Counter[int] = Counter()
        self._stopping = asyncio.Event()
        self._background: set[asyncio.Task] = set()
        self.violations = 0
        self.restarts = 0

    # ------------------------------------------------------------------ lifecycle

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        assert self.listener is not None, "inetd mode: serve_one()"
        install_server_signals(loop, self._stopping.set, self.reload, self.reset_counters)
        await asyncio.gather(*(self._start_worker(slot) for slot in range(self.count)))
        address = peer_name(self.listener.getsockname())
        log.info("listening", address=address, hosts=len(self.config.hosts),
                 workers=self.count, user=self.user)
        status = StatusServer("serve", str(self.listener.getsockname()[1]), self.status,
                              refresh=self.refresh)
        await status.start()
        accept = loop.create_task(self._accept_loop())
        try:
            async with (Notifier().serving(lambda: self.status_line(address)),
                        metrics.serving(self.config.options.metrics, self.status,
                                        self.refresh)):
                await self._stopping.wait()
        finally:
            accept.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await accept
            self.listener.close()
            await self._shutdown()
            await status.close()

    async def serve_one(self, conn: socket.socket) -> None:
        """Inetd mode: one worker for the one connection; return when it is done."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self._stopping.set)
        self.count = 0  # no restart: the connection went with the worker
        try:
            await self._start_worker(0)
            worker = self.workers[0]
            assert worker is not None and worker.task is not None
            await self._hand_off(conn, last=True)
            conn.close()
            stop = loop.create_task(self._stopping.wait())
            await asyncio.wait([worker.task, stop], return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        """SIGTERM the workers (they end their sessions: down commands through us), wait,
        then clean up after any that did not make it."""
        self.count = 0  # no restarts
        workers = [w for w in self.workers if w is not None]
        for w in workers:
            w.signal(signal.SIGTERM)
        tasks = [w.task for w in workers if w.task is not None]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=20)
            for w in workers:
                if w.task in late:
                    w.signal(signal.SIGKILL)
            if late:
                await asyncio.wait(late, timeout=10)

    def status_line(self, address: str) -> str:
        sessions = sum(len(w.status.get("sessions", [])) for w in self.workers if w)
        return f"listening on {address}, {self.count} workers, {sessions} session(s)"

    # ------------------------------------------------------------------ workers

    def _argv(self, fd: int) -> list[str]:
        dest, level = vtlog.ACTIVE or (vtlog.Destination("auto"), "info")
        fmt = {"journal": "auto"}.get(dest.fmt, dest.fmt)
        return [sys.executable, "-m", "vtcore", "--log-format", fmt, "--log-level", level,
                "worker", "--fd", str(fd), "--master", str(os.getpid()),
                "--uid", str(self.uid), "--gid", str(self.gid),
                "--facility", str(dest.facility)]

    async def _start_worker(self, slot: int) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        dest = vtlog.ACTIVE[0] if vtlog.ACTIVE else None
        stderr: Any = subprocess.DEVNULL
        if dest is not None and dest.stream is not None:
            with contextlib.suppress(AttributeError, OSError, ValueError):
                stderr = dest.stream.fileno()
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._argv(theirs.fileno()), pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, cwd="/")
        finally:
            theirs.close()
        with contextlib.suppress(OSError):  # vtund's link priority, for the data paths
            os.setpriority(os.PRIO_PROCESS, proc.pid, LINK_NICE)
        worker: WorkerProc

        async def handle(msg: dict, fds: list[int]) -> None:
            await self._on_request(worker, msg, fds)

        worker = WorkerProc(slot, proc, Channel(ours, handle), loop.time(),
                            pidfd=os.pidfd_open(proc.pid))
        self.workers[slot] = worker
        worker.task = loop.create_task(self._watch(worker))
        await self._send_config(worker)
        # A barrier: the channel keeps order, so the answer comes once the worker has
        # loaded the config.  "listening" and READY=1 then mean every worker can serve.
        await self._ask_status(worker, STATUS_TIMEOUT * 10)
        log.info("worker started", worker=proc.pid, slot=slot)

    async def _send_config(self, worker: WorkerProc) -> None:
        """The parsed config for a worker, in a memory file (any size; the worker reads
        it as root's own pickle, which it trusts: never the other way round)."""
        fd = os.memfd_create("vt-config", os.MFD_CLOEXEC)
        try:
            os.write(fd, pickle.dumps(self._state()))
            os.lseek(fd, 0, os.SEEK_SET)
            await worker.channel.tell({"op": "config"}, [fd])
        finally:
            os.close(fd)

    def _state(self) -> dict:
        """What a worker is given: the config, the command line's overrides."""
        return {"role": "server", "path": self.config_path, "config": self.config,
                "overrides": self.overrides, "workers": self.count}

    async def _watch(self, worker: WorkerProc) -> None:
        """Serve the worker's channel until it closes or misbehaves; then make sure the
        process is gone, end its sessions and start another."""
        why = "exited"
        try:
            await worker.channel.run()
        except Violation as exc:
            why = self._violated(worker, str(exc))
        finally:
            # Its channel is closed: it is of no more use.  A worker ending by itself (a
            # client's, with its exit status) gets a moment; then it is killed.
            try:
                await asyncio.wait_for(asyncio.shield(worker.proc.wait()), EXIT_GRACE)
            except TimeoutError:
                worker.signal(signal.SIGKILL)
            await worker.proc.wait()
            pidfd, worker.pidfd = worker.pidfd, -1
            os.close(pidfd)
            worker.channel.close()
            await self._worker_gone(worker, why)

    def _violated(self, worker: WorkerProc, why: str) -> str:
        self.violations += 1
        log.error("worker misbehaved: killed", worker=worker.pid, error=why)
        worker.signal(signal.SIGKILL)
        return f"killed: {why}"

    async def _worker_gone(self, worker: WorkerProc, why: str) -> None:
        loop = asyncio.get_running_loop()
        rc = worker.proc.returncode
        ended = [g for g in self.grants.values() if g.worker is worker]
        log.warning("worker ended", worker=worker.pid, status=rc, reason=why,
                    sessions=len(ended))
        for grant in ended:
            await self._close_grant(grant)
        if self.workers[worker.slot] is worker:
            self.workers[worker.slot] = None
        if self._stopping.is_set() or worker.slot >= self.count:
            return
        young = loop.time() - worker.started < YOUNG
        self._young[worker.slot] = self._young[worker.slot] + 1 if young else 0
        delay = RESTART_DELAYS[min(self._young[worker.slot], len(RESTART_DELAYS) - 1)]
        await asyncio.sleep(delay)
        if not self._stopping.is_set():
            self.restarts += 1
            try:
                await self._start_worker(worker.slot)
            except OSError as exc:
                log.error("cannot restart worker", slot=worker.slot, error=str(exc))

    # ------------------------------------------------------------------ connections

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self.listener is not None
        while True:
            try:
                conn, _ = await loop.sock_accept(self.listener)
            except OSError as exc:
                log.warning("accept failed", error=exc.strerror)
                await asyncio.sleep(0.1)
                continue
            try:
                await self._hand_off(conn)
            finally:
                conn.close()

    def _pick(self) -> WorkerProc | None:
        """The live worker with the fewest sessions (then the fewest waiting hand-offs)."""
        live = [w for w in self.workers if w is not None and w.proc.returncode is None]
        if not live:
            return None
        held = Counter(g.worker.slot for g in self.grants.values())
        return min(live, key=lambda w: (held[w.slot], len(w.handed), w.slot))

    async def _hand_off(self, conn: socket.socket, last: bool = False) -> None:
        worker = self._pick()
        if worker is None:
            log.warning("no worker to take a connection: closed")
            return
        self._conn_ids += 1
        conn_id = self._conn_ids
        chal = os.urandom(16)
        worker.handed[conn_id] = chal
        while len(worker.handed) > MAX_HANDED:
            worker.handed.popitem(last=False)
        try:
            await worker.channel.tell({"op": "conn", "conn": conn_id, "chal": chal.hex(),
                                       "last": last}, [conn.fileno()])
        except (EOFError, TimeoutError, OSError) as exc:
            worker.handed.pop(conn_id, None)
            log.warning("hand-off failed", worker=worker.pid, error=str(exc))

    # ------------------------------------------------------------------ requests

    async def _on_request(self, worker: WorkerProc, msg: dict, fds: list[int]) -> None:
        for fd in fds:  # a worker never sends descriptors
            os.close(fd)
        try:
            if fds:
                raise Violation("sent descriptors")
            request = parse_request(msg)
            answer, out = await self._serve(worker, request)
        except Violation as exc:
            self._violated(worker, str(exc))
            return
        if answer is None:
            return
        try:
            await worker.channel.answer(request.id, answer, out)
        except (EOFError, TimeoutError, OSError):
            pass

    def _grant(self, worker: WorkerProc, conn: int, what: str) -> Grant:
        grant = self.grants.get(conn)
        if grant is None or grant.worker is not worker:
            raise Violation(f"{what} for a connection it holds no claim on")
        return grant

    async def _serve(self, worker: WorkerProc,
                     request: Request) -> tuple[dict | None, list[int] | None]:
        if isinstance(request, Claim):
            return await self._claim(worker, request), None
        if isinstance(request, Pinned | Remember):
            raise Violation("a client's request to a server")
        grant = self._grant(worker, request.conn, type(request).__name__.lower())
        if isinstance(request, OpenDevice):
            return await self._open_device(grant, request)
        if isinstance(request, Up):
            if grant.device is None or grant.upped:
                raise Violation("up without a device, or twice")
            grant.upped = True
            ends = request
            grant.subs = Substitutions(grant.device.name, grant.host.name,
                                       ends.local[0], ends.local[1],
                                       ends.remote[0], ends.remote[1])
            await self._ops(grant).up(grant.device, grant.subs)
            return {"ok": True}, None
        if isinstance(request, Down):
            if grant.downed:
                raise Violation("down twice")
            await self._down(grant)
            return {"ok": True}, None
        if isinstance(request, Release):
            await self._close_grant(grant)
            return None, None
        if isinstance(request, Stat):
            if grant.host.stat:
                counters = Counters()
                (counters.byte_in, counters.byte_out, counters.comp_in,
                 counters.comp_out) = request.counters
                try:
                    append_stat_line(grant.options.statdir, grant.host.name,
                                     stat_line(counters))
                except (fsguard.UnsafePath, OSError) as exc:
                    log.warning("cannot write stat file", host=grant.host.name, error=str(exc))
            return None, None
        raise Violation("unhandled request")  # pragma: no cover - parse_request's types

    async def _claim(self, worker: WorkerProc, request: Claim) -> dict:
        chal = worker.handed.pop(request.conn, None)
        if chal is None:
            raise Violation("claim for a connection it was not given, or a second claim")
        host = self.config.hosts.get(request.host)
        if host is None:
            return {"ok": False}  # a reload removed it meanwhile
        if request.response:
            if not check_response(chal, request.response, host.password_bytes(),
                                  host.sslauth):
                raise Violation(f"claim of host {host.name} without the client's proof")
        elif not self.plugins.registry.secure_modes:
            raise Violation("claim without a proof, and no secure mode is installed")
        ok, lock = await self._take_lock(host)
        if not ok:
            return {"ok": False}
        self.grants[request.conn] = Grant(request.conn, worker, host, lock,
                                          self.config.options)
        self.claimed.discard(host.name)
        return {"ok": True}

    async def _open_device(self, grant: Grant,
                           request: OpenDevice) -> tuple[dict, list[int] | None]:
        if grant.device is not None and not grant.kept:
            raise Violation("a second device")
        grant.kept, kept, grant.device = False, grant.device, None
        if kept is not None:  # persist keep: the last session's, if its modes still do
            if (bool(getattr(kept, "offload", False)) == request.offload
                    and bool(getattr(kept, "split", False)) == request.split
                    and bool(getattr(kept, "runs", False)) == request.runs
                    and isinstance(kept, PortableDevice)):
                grant.device = kept
                fd, state = kept.export()
                return {"ok": True, "state": state}, [fd]
            kept.close()
        host = grant.host
        kind = self._device_type(grant, request)
        backend = self.plugins.registry.devices.get(kind)
        if backend is None or backend.adopt is None:
            return {"ok": False, "error": f"no device backend for type {kind} in a "
                    "worker"}, None
        try:
            device = backend.open(DeviceRequest(
                kind, host.device, host.name, offload=request.offload,
                gro=bool(getattr(host, "vtmode", True)), split=request.split,
                runs=request.runs and backend.runs))
        except OSError as exc:
            return {"ok": False, "error": f"cannot open {kind} device: {exc}"}, None
        if not isinstance(device, PortableDevice):
            device.close()
            return {"ok": False, "error": f"the {kind} device cannot move to a worker"}, None
        grant.device = device
        fd, state = device.export()
        return {"ok": True, "state": state}, [fd]

    def _device_type(self, grant: Grant, request: OpenDevice) -> str:
        """A server's host decides its type: a worker asking another is not to be trusted."""
        if request.type != grant.host.type:
            raise Violation(f"device of type {request.type[:20]!r} for a {grant.host.type} host")
        return grant.host.type

    def _ops(self, grant: Grant) -> HostOps:
        """The session's privileged half, as a one-process server does it."""
        return HostOps(grant.host, grant.options, self.plugins.registry)

    async def _down(self, grant: Grant) -> None:
        if grant.upped and not grant.downed and grant.subs is not None:
            grant.downed = True
            await self._ops(grant).down(grant.subs)

    async def _close_grant(self, grant: Grant) -> None:
        """The session is over (or its worker is gone): down if owed, device, lock."""
        if self.grants.get(grant.conn) is not grant:
            return
        del self.grants[grant.conn]
        try:
            await asyncio.shield(self._down(grant))
        finally:
            if grant.device is not None:
                grant.device.close()
                grant.device = None
            locks.release(grant.lock)
            grant.released.set()

    # ------------------------------------------------------------------ multi

    async def _take_lock(self, host: Host) -> tuple[bool, Any]:
        """As :meth:`vtcore.runtime.server.Server._take_lock`, over every worker."""
        mode = host.multi
        if mode == "no" and host.name in self.claimed:
            return False, None
        if mode != "killold":
            await self._vacate(host.name, kill=False)
        if mode == "yes":
            return True, None
        old = [g for g in self.grants.values() if g.host.name == host.name]
        if mode == "no" and (old or host.name in self.claimed):
            return False, None
        self.claimed.add(host.name)
        path = None
        try:
            if old:
                log.info("killing old session", host=host.name)
                await self._vacate(host.name, kill=True)
            path = await asyncio.to_thread(locks.acquire, self.config.options.lockdir,
                                           host.name, mode)
        except (fsguard.UnsafePath, OSError) as exc:
            log.error("cannot lock host", host=host.name, error=str(exc))
        finally:
            if path is None:
                self.claimed.discard(host.name)
        return path is not None, path

    async def _vacate(self, name: str, kill: bool) -> None:
        """Ask every worker holding sessions of ``name`` to end the dead ones (or, with
        ``kill``, all), and wait (bounded) until the master has closed them."""
        held = [g for g in self.grants.values() if g.host.name == name]
        workers = {g.worker for g in held}
        if not workers:
            return
        asks = [w.channel.ask({"op": "vacate", "host": name, "kill": kill},
                              timeout=DEAD_SESSION_WAIT + 10) for w in workers]
        await asyncio.gather(*asks, return_exceptions=True)
        gone = held if kill else [g for g in held if g.conn not in self.grants]
        waits = [asyncio.ensure_future(g.released.wait()) for g in gone]
        if waits:
            _, late = await asyncio.wait(waits, timeout=DEAD_SESSION_WAIT)
            for task in late:
                task.cancel()

    # ------------------------------------------------------------------ operations

    def reload(self) -> None:
        """SIGHUP: re-read the config and give it to every worker; live sessions keep
        the profile they started with."""
        def portable(config: Config) -> str | None:
            try:
                check_portable(config, self.plugins)
            except SetupError as exc:
                return str(exc)
            return None

        config = reload_config(self.config_path, self.plugins.registry, portable)
        if config is None:
            return
        self.config = config
        for worker in self.workers:
            if worker is not None:
                self._spawn(self._send_config(worker))

    def reset_counters(self) -> None:
        for worker in self.workers:
            if worker is not None:
                worker.channel.post({"op": "reset"})
        log.info("counters reset")

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def refresh(self) -> None:
        """Ask every worker for its sessions now (bounded): ``status()`` shows them."""
        await asyncio.gather(*(self._ask_status(w) for w in self.workers if w is not None))

    async def _ask_status(self, worker: WorkerProc, timeout: float = STATUS_TIMEOUT) -> None:
        """``worker.status``, asked a page at a time (each message is bounded); kept as
        it was if the worker does not answer in ``timeout`` per page."""
        doc: dict = {}
        sessions: list = []
        try:
            for _ in range(MAX_STATUS_PAGES):
                answer, _ = await worker.channel.ask(
                    {"op": "status", "offset": len(sessions)}, timeout=timeout)
                page = answer.get("sessions")
                sessions += page if isinstance(page, list) else []
                doc = answer
                if answer.get("more") is not True or not page:
                    break
        except (EOFError, TimeoutError, OSError):
            return
        doc.pop("re", None)
        doc.pop("more", None)
        worker.status = {**doc, "sessions": sessions}

    def status(self) -> dict:
        """The document ``vt status`` shows: every worker's sessions, with its pid."""
        sessions: list[dict] = []
        results: Counter[str] = Counter()
        pending = evicted = 0
        closed: dict[str, dict[str, int]] = {}
        backoff: list = []
        workers = []
        for worker in self.workers:
            if worker is None:
                continue
            listed: list[dict] = []
            try:  # a worker's document: shown, never trusted to be well-formed
                doc = worker.status
                listed = [s for s in doc.get("sessions", []) if isinstance(s, dict)]
                hs = doc.get("handshakes") or {}
                pending += int(hs.get("pending", 0))
                evicted += int(hs.get("evicted", 0))
                results.update({str(k): int(v) for k, v in
                                (doc.get("handshake_results") or {}).items()})
                for host, counters in (doc.get("closed") or {}).items():
                    mine = closed.setdefault(str(host), {})
                    for key, value in counters.items():
                        mine[str(key)] = mine.get(str(key), 0) + int(value)
                backoff += [b for b in doc.get("backoff") or [] if isinstance(b, dict)]
            except (AttributeError, TypeError, ValueError):
                log.warning("worker status unreadable", worker=worker.pid)
            for session in listed:
                session["worker"] = worker.pid
            sessions += listed
            workers.append({"pid": worker.pid, "slot": worker.slot,
                            "sessions": len(listed)})
        return {"role": "server", "config": self.config_path,
                "backoff": _merge_backoff(backoff),
                "listen": peer_name(self.listener.getsockname()) if self.listener else None,
                "workers": workers, "user": self.user, "restarts": self.restarts,
                "violations": self.violations, "sessions": sessions,
                "handshakes": {"pending": pending, "evicted": evicted},
                "handshake_results": dict(results), "closed": closed}


def _merge_backoff(entries: list[dict]) -> list[dict]:
    """One line per host in back-off: every worker keeps its share of the budget."""
    merged: dict[str, dict] = {}
    for entry in entries:
        try:
            host = str(entry["host"])
            one = {"failures": int(entry["failures"]), "refused": int(entry["refused"]),
                   "interval": float(entry["interval"]),
                   "next_try_in": float(entry["next_try_in"])}
        except (KeyError, TypeError, ValueError):
            continue
        was = merged.get(host)
        if was is None:
            merged[host] = {"host": host, **one}
            continue
        was["failures"] += one["failures"]
        was["refused"] += one["refused"]
        was["interval"] = max(was["interval"], one["interval"])
        was["next_try_in"] = min(was["next_try_in"], one["next_try_in"])
    return list(merged.values())


class ClientMaster(Master):
    """``vt run`` with ``options { workers N; }``: the client's root parent.  One worker
    runs the client (connect, handshake, data path) unprivileged; the parent opens the
    device, runs up/down, writes the stat and trust files, and restarts the worker if
    it is killed.  The worker may claim its own host only, one session at a time."""

    def __init__(self, config_path: str, config: Config, plugins: Plugins, host: str,
                 server: str, overrides: Any) -> None:
        super().__init__(config_path, config, plugins, ServerOptions(), None, 1)
        self.host_name = host
        self.server_name = server
        self.client_overrides = overrides
        self.last_conn: dict[int, int] = {}
        """The worker's last session number (each worker counts from 1)."""
        self.kept: Device | None = None
        """``persist keep``: the device between sessions."""
        self.exit_status: int | None = None

    def _state(self) -> dict:
        return {"role": "client", "path": self.config_path, "config": self.config,
                "host": self.host_name, "server": self.server_name,
                "overrides": self.client_overrides}

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop_client)
        for sig in (signal.SIGHUP, signal.SIGUSR1):
            loop.add_signal_handler(sig, self._forward, sig)
        status = StatusServer("run", f"{self.host_name}-{self.server_name}", self.status,
                              refresh=self.refresh)
        await status.start()
        try:
            await self._start_worker(0)
            async with (Notifier().serving(self.status_line),
                        metrics.serving(self.config.options.metrics, self.status,
                                        self.refresh)):
                await self._stopping.wait()
        finally:
            await self._shutdown()
            if self.kept is not None:
                self.kept.close()
            await status.close()
        return self.exit_status if self.exit_status is not None else 1

    def status(self) -> dict:
        """The client's own document (its worker's), with the worker's pid."""
        worker = self.workers[0]
        doc = dict(worker.status) if worker is not None else {}
        sessions = [s for s in doc.get("sessions", []) if isinstance(s, dict)]
        for session in sessions:
            session["worker"] = worker.pid if worker is not None else None
        return {"handshake_results": {}, "closed": {}, **doc, "role": "client",
                "host": self.host_name, "server": self.server_name, "sessions": sessions,
                "workers": [{"pid": worker.pid, "slot": 0, "sessions": len(sessions)}]
                if worker is not None else [], "user": self.user, "restarts": self.restarts,
                "violations": self.violations}

    def status_line(self, address: str = "") -> str:
        sessions = self.workers[0].status.get("sessions") if self.workers[0] else None
        state = "connected to" if sessions else "connecting to"
        port = server_port(self.client_overrides, self.config.options)
        return f"{self.host_name}: {state} {self.server_name}:{port}"

    def _stop_client(self) -> None:
        self.exit_status = 0
        self._forward(signal.SIGTERM)
        self._stopping.set()

    def _forward(self, sig: int) -> None:
        worker = self.workers[0]
        if worker is not None:
            worker.signal(sig)

    async def _worker_gone(self, worker: WorkerProc, why: str) -> None:
        rc = worker.proc.returncode
        if rc is not None and rc >= 0 and not why.startswith("killed"):
            # The client ended (no persist, or stopped): so does its parent.
            for grant in [g for g in self.grants.values() if g.worker is worker]:
                await self._close_grant(grant)
            if self.exit_status is None:
                self.exit_status = rc
            self.count = 0
            self._stopping.set()
            return
        await super()._worker_gone(worker, why)

    async def _serve(self, worker: WorkerProc,
                     request: Request) -> tuple[dict | None, list[int] | None]:
        if isinstance(request, Pinned):
            try:
                pinned = trust.is_pinned(self.config.options.statdir, self.host_name,
                                         self.server_name, self._port())
            except (fsguard.UnsafePath, OSError) as exc:
                return {"error": str(exc)}, None
            return {"pinned": pinned}, None
        if isinstance(request, Remember):
            args = (self.config.options.statdir, self.host_name, self.server_name,
                    self._port())
            try:
                if trust.remember(*args, time.time()):
                    log.info("server speaks secure mode: legacy authentication from it "
                             "will be refused from now on", file=str(trust.record_path(*args)))
            except (fsguard.UnsafePath, OSError) as exc:
                log.warning("cannot remember that the server speaks secure mode",
                            detail="a man in the middle could downgrade later sessions",
                            error=str(exc))
            return {"ok": True}, None
        return await super()._serve(worker, request)

    def _device_type(self, grant: Grant, request: OpenDevice) -> str:
        """The server decides a client's type (it may be any installed one)."""
        if request.type not in self.plugins.registry.devices:
            raise Violation(f"device of unknown type {request.type[:20]!r}")
        return request.type

    def _port(self) -> int:
        return int(getattr(self.client_overrides, "port", None) or self.config.options.port)

    async def _claim(self, worker: WorkerProc, request: Claim) -> dict:
        if request.host != self.host_name or request.response:
            raise Violation(f"claim of host {request.host[:40]}: not this client's")
        if request.conn <= self.last_conn.get(worker.pid, 0) or any(
                g.worker is worker for g in self.grants.values()):
            raise Violation("a second session at once, or an old one again")
        self.last_conn = {worker.pid: request.conn}
        host = self.config.hosts[self.host_name]
        grant = Grant(request.conn, worker, host, None, self.config.options)
        grant.device, self.kept = self.kept, None
        grant.kept = grant.device is not None
        self.grants[request.conn] = grant
        return {"ok": True}

    async def _close_grant(self, grant: Grant) -> None:
        if (grant.host.persist == "keep" and grant.device is not None
                and not self._stopping.is_set() and self.grants.get(grant.conn) is grant):
            self.kept, grant.device = grant.device, None
        await super()._close_grant(grant)
