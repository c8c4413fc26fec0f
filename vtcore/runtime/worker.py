"""A worker of ``vt serve`` with ``options { workers N; }``: no root, no capabilities.

The master (:mod:`vtcore.runtime.master`) starts it as the workers' user, hands it
accepted connections (SCM_RIGHTS, each with the challenge vtun's handshake must use) and
the parsed config.  The worker runs the handshakes and the data paths, all of the
parsing of network input; for a host's lock, device, up/down commands and stat lines it
asks the master on the :mod:`~vtcore.runtime.control` channel.  It dies with the master
(``PR_SET_PDEATHSIG``): no worker outlives it holding devices.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib
import os
import pickle
import pkgutil
import signal
import socket
import sys
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import structlog
from vt_api import Device, DeviceRequest

from vtcore.admission import HostBackoff
from vtcore.config.model import Host
from vtcore.plugins import Plugins
from vtcore.runtime.client import Client
from vtcore.runtime.commands import Substitutions
from vtcore.runtime.control import Channel
from vtcore.runtime.server import DEAD_SESSION_WAIT, Server
from vtcore.runtime.session import HostOps, SessionError
from vtcore.runtime.stats import STAT_INTERVAL
from vtcore.runtime.tunnel import Counters

log = structlog.get_logger("vt.worker")

UP_TIMEOUT = 600.0
"""Bound on the master's answer to up/down (it bounds each waited command itself)."""
STATUS_PAGE = 40
"""Sessions per status message (about 1 KiB each; a control message holds 64 KiB)."""

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38


@dataclass(frozen=True)
class Handed:
    """A connection the master handed over: its number and vtun's challenge for it."""

    conn: int
    chal: bytes


HANDED: ContextVar[Handed | None] = ContextVar("vt_handed", default=None)
"""The connection the current task serves (set before its task is made)."""


def _handed() -> Handed:
    handed = HANDED.get()
    if handed is None:
        raise RuntimeError("a worker's connection task without its hand-off")
    return handed


class MasterGrants:
    """:class:`vtcore.runtime.server.Grants` asked of the master."""

    def __init__(self, channel: Channel, plugins: Plugins) -> None:
        self.channel = channel
        self.plugins = plugins

    def challenge(self) -> bytes:
        return _handed().chal

    async def claim(self, host: Host, response: bytes, plog: Any) -> tuple[bool, Any]:
        conn = _handed().conn
        answer, _ = await self.channel.ask({"op": "claim", "conn": conn, "host": host.name,
                                            "response": response.hex()})
        ok = answer.get("ok") is True
        return ok, conn if ok else None

    def release(self, lock: Any) -> None:
        if lock is not None:
            self.channel.post({"op": "release", "conn": lock})

    def ops(self, host: Host, options: Any) -> HostOps:
        return MasterOps(self.channel, _handed().conn, host, options, self.plugins)


class MasterOps(HostOps):
    """A worker session's device, commands and stat lines, done by the master."""

    def __init__(self, channel: Channel, conn: int, host: Host, options: Any,
                 plugins: Plugins) -> None:
        super().__init__(host, options, plugins.registry)
        self.channel = channel
        self.conn = conn

    async def open_device(self, request: DeviceRequest) -> Device:
        answer, fds = await self.channel.ask({"op": "device", "conn": self.conn,
                                              "type": request.tunnel_type,
                                              "offload": request.offload,
                                              "split": request.split,
                                              "runs": request.runs})
        backend = self.registry.devices.get(request.tunnel_type)
        if answer.get("ok") is not True or len(fds) != 1 or backend is None \
                or backend.adopt is None:
            for fd in fds:
                os.close(fd)
            raise SessionError(str(answer.get("error") or "the master gave no device"))
        return backend.adopt(fds[0], answer.get("state") or {})

    async def up(self, device: Device, subs: Substitutions) -> None:
        await self.channel.ask({"op": "up", "conn": self.conn,
                                "local": [subs.local_addr, subs.local_port],
                                "remote": [subs.remote_addr, subs.remote_port]},
                               timeout=UP_TIMEOUT)

    async def down(self, subs: Substitutions) -> None:
        with contextlib.suppress(EOFError, TimeoutError):
            await self.channel.ask({"op": "down", "conn": self.conn}, timeout=UP_TIMEOUT)

    async def write_stats(self, counters: Counters, first: float) -> None:
        delay = first
        while True:
            await asyncio.sleep(delay)
            delay = STAT_INTERVAL
            self.channel.post({"op": "stat", "conn": self.conn,
                               "counters": [counters.byte_in, counters.byte_out,
                                            counters.comp_in, counters.comp_out]})


class ParentPrivileged:
    """A client worker's :class:`vtcore.runtime.client.Privileged`: its root parent."""

    def __init__(self, channel: Channel, client: Client, plugins: Plugins) -> None:
        self.channel = channel
        self.client = client
        self.plugins = plugins
        self.conn = 0

    async def begin(self) -> HostOps:
        self.conn += 1
        answer, _ = await self.channel.ask({"op": "claim", "conn": self.conn,
                                            "host": self.client.host.name, "response": ""})
        if answer.get("ok") is not True:
            raise SessionError("the parent process refused the session")
        return MasterOps(self.channel, self.conn, self.client.host, self.client.config.options,
                         self.plugins)

    def end(self) -> None:
        self.channel.post({"op": "release", "conn": self.conn})

    async def pinned(self) -> bool:
        answer, _ = await self.channel.ask({"op": "pinned"})
        if "error" in answer:
            raise OSError(str(answer["error"]))
        return answer.get("pinned") is True

    async def remember(self) -> None:
        await self.channel.ask({"op": "remember"})


class Worker:
    """The worker's loop: the master's requests in; a :class:`Server` for the sessions,
    or (a client's worker) the :class:`Client`."""

    def __init__(self, sock: socket.socket, plugins: Plugins) -> None:
        self.plugins = plugins
        self.channel = Channel(sock, self.on_request)
        self.server: Server | None = None
        self.client: Client | None = None
        self._client_task: asyncio.Task | None = None
        self._ending: asyncio.Task | None = None
        self.exit_status = 0
        self._stopping = False

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stop)
        loop.add_signal_handler(signal.SIGINT, lambda: None)  # the master decides
        loop.add_signal_handler(signal.SIGHUP, self._restart)
        loop.add_signal_handler(signal.SIGUSR1, self._reset)
        try:
            await self.channel.run()
        finally:
            if self.server is not None:
                await self.server.shutdown("server shutting down")
            if self.client is not None and self._client_task is not None:
                self.client.stop()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._client_task, 20)
            self.channel.close()
        return self.exit_status

    def _stop(self) -> None:
        """SIGTERM (the master is stopping): end the sessions first, their down commands
        asked of the master while the channel is still up; then close it."""
        if self._stopping:
            return
        self._stopping = True
        if self.client is not None and self._client_task is not None \
                and not self._client_task.done():
            self.client.stop()  # its end closes the channel (below)
            return
        self._ending = asyncio.get_running_loop().create_task(self._end_sessions())

    async def _end_sessions(self) -> None:
        try:
            if self.server is not None:
                await self.server.shutdown("server shutting down")
        finally:
            with contextlib.suppress(OSError):
                self.channel.sock.shutdown(socket.SHUT_RDWR)

    def _restart(self) -> None:
        if self.client is not None:
            self.client.restart()

    def _reset(self) -> None:
        if self.client is not None:
            self.client._reset()
        elif self.server is not None:
            self.server.reset_counters()

    def _client_done(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is None:
            self.exit_status = task.result()
        else:
            self.exit_status = 1
            if not task.cancelled():
                exc = task.exception()
                log.error("client crashed", error=f"{type(exc).__name__}: {exc}")
        with contextlib.suppress(OSError):
            self.channel.sock.shutdown(socket.SHUT_RDWR)

    async def on_request(self, msg: dict, fds: list[int]) -> None:
        op = msg.get("op")
        if op == "conn":
            self._take_connection(msg, fds)
        elif op == "config":
            self._load_config(fds)
        elif op == "status":
            await self.channel.answer(msg["id"], self.status(int(msg.get("offset") or 0)))
        elif op == "vacate":
            await self._vacate(str(msg["host"]), bool(msg["kill"]))
            await self.channel.answer(msg["id"], {})
        elif op == "reset" and self.server is not None:
            self.server.reset_counters()
        else:
            for fd in fds:
                os.close(fd)

    def _load_config(self, fds: list[int]) -> None:
        with os.fdopen(fds[0], "rb") as memfd:
            state = pickle.load(memfd)  # the master's own pickle: the worker trusts it
        if state.get("role") == "client":
            if self.client is None:
                self.client = Client(state["config"], state["host"], state["server"],
                                     self.plugins, state["overrides"])
                self.client.privileged = ParentPrivileged(self.channel, self.client,
                                                          self.plugins)
                self._client_task = asyncio.get_running_loop().create_task(self.client._run())
                self._client_task.add_done_callback(self._client_done)
            return
        if self.server is None:
            self.server = Server(state["path"], state["config"], self.plugins,
                                 state["overrides"])
            self.server.grants = MasterGrants(self.channel, self.plugins)
            # The master spreads a guesser's connections over every worker: each keeps
            # its share of a host's failure budget, so that all of them still allow about
            # one budget (and, in back-off, one try per interval per worker).
            workers = max(1, int(state.get("workers", 1)))
            self.server.backoff = HostBackoff(free=max(1, -(-HostBackoff().free // workers)))
        else:
            self.server.config = state["config"]
            log.info("config reloaded", hosts=len(state["config"].hosts))

    def _take_connection(self, msg: dict, fds: list[int]) -> None:
        conn = socket.socket(fileno=fds[0])
        if self.server is None:
            conn.close()
            return
        try:
            addr = conn.getpeername()
        except OSError:
            conn.close()
            return
        HANDED.set(Handed(int(msg["conn"]), bytes.fromhex(msg["chal"])))
        task = self.server.spawn(conn, addr)  # its task copies this context: HANDED
        if msg.get("last"):  # inetd mode: this connection is the worker's only one
            task.add_done_callback(lambda _task: self._stop())

    async def _vacate(self, name: str, kill: bool) -> None:
        """The master lets a new session of ``name`` in: end this worker's sessions of it
        whose peer does not answer, or (``killold``) all of them; return once ended."""
        server = self.server
        if server is None:
            return
        if not kill:
            await server._end_dead_sessions(name, log)
            return
        old = list(server.live.get(name, []))
        for live in old:
            live.session.stop("replaced by a new connection (multi killold)")
        if old:
            await asyncio.wait([live.task for live in old], timeout=DEAD_SESSION_WAIT)

    def status(self, offset: int = 0) -> dict:
        """One page of this worker's status: :data:`STATUS_PAGE` sessions from
        ``offset`` (a control message is bounded), ``more`` if others follow."""
        if self.client is not None:
            doc = self.client.status()
        elif self.server is None:
            return {"sessions": []}
        else:
            full = self.server.status()
            doc = {key: full[key] for key in ("sessions", "handshakes", "backoff",
                                              "handshake_results", "closed")}
        sessions = doc["sessions"]
        doc["sessions"] = sessions[offset:offset + STATUS_PAGE]
        doc["more"] = offset + STATUS_PAGE < len(sessions)
        return doc


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option})")


LAZY_STDLIB = (
    "encodings.idna", "stringprep", "unicodedata",  # getaddrinfo() of a name
    "concurrent.futures.thread",  # asyncio.to_thread, the loop's resolver
)
"""Standard modules imported on first use (Python may be installed where only root reads:
``/root/.pyenv``)."""


def preload(plugins: Plugins) -> None:
    """Import, while still root, every module a session may import later: vtcore's
    runtime and those of every loaded plugin's package (the code may be installed where
    only root reads).  A module that fails to import is skipped: it would fail as root."""
    for name in LAZY_STDLIB:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    packages = {"vtcore", "vt_api"}
    for plugin in plugins.pm.get_plugins():
        name = getattr(plugin, "__name__", "") or type(plugin).__module__
        packages.add(name.split(".")[0])
    for name in sorted(packages):
        module = sys.modules.get(name)
        path = getattr(module, "__path__", None)
        if path is None:
            continue
        for info in pkgutil.walk_packages(path, prefix=f"{name}."):
            if ".tests" in info.name or ".test_" in info.name or info.name.endswith(
                    ("__main__", ".demo", ".manpages", ".testing")):
                continue
            with contextlib.suppress(Exception):
                importlib.import_module(info.name)


def reroot_imports() -> None:
    """Keep the Python installation importable after the drop where only root could
    reach it (``/root/.pyenv``: ``/root`` is 0700): open its prefixes now and import
    through ``/proc/self/fd/N`` (a process may always walk its own descriptors), for
    ``sys.path`` and every imported package's ``__path__``.  The files themselves stay
    what they are (world-readable code); only the walk through ``/root`` is skipped."""
    roots: dict[str, int] = {}
    for prefix in {sys.base_prefix, sys.prefix, sys.base_exec_prefix, sys.exec_prefix}:
        real = os.path.realpath(prefix)
        if real not in roots and os.path.isdir(real):
            roots[real] = os.open(real, os.O_PATH | os.O_DIRECTORY)
    ordered = sorted(roots.items(), key=lambda item: len(item[0]), reverse=True)

    def moved(path: str) -> str:
        real = os.path.realpath(path) if path else path
        for root, fd in ordered:
            if real == root or real.startswith(root + os.sep):
                return f"/proc/self/fd/{fd}{real[len(root):]}"
        return path

    sys.path[:] = [moved(p) for p in sys.path]
    for module in list(sys.modules.values()):
        path = getattr(module, "__path__", None)
        if isinstance(path, list):
            path[:] = [moved(p) for p in path]
    sys.path_importer_cache.clear()
    importlib.invalidate_caches()


_LATE: set[str] = set()


def _late_import(event: str, args: tuple) -> None:
    """Name, once, a module first imported after the drop: where only root can read the
    code, that import fails (the module belongs in :data:`LAZY_STDLIB` or at the top of
    its plugin's modules)."""
    if event == "import" and args and args[0] not in sys.modules and args[0] not in _LATE:
        _LATE.add(args[0])
        log.warning("module imported after dropping privileges", module=args[0])


def drop_privileges(uid: int, gid: int, master_pid: int, plugins: Plugins) -> None:
    """Become ``uid``/``gid`` with no supplementary groups and no capabilities (a
    change of user from root clears them all), never gain privileges again (no setuid
    programs), and die with the master.  A master that is not root starts its workers
    as its own user: there is nothing to drop."""
    if os.geteuid() == 0:
        if uid == 0 or gid == 0:
            raise SystemExit("refusing to run a worker as root")
        preload(plugins)
        reroot_imports()
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
        sys.addaudithook(_late_import)
    # After the change of user, which clears it; then check the master still lives.
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != master_pid:
        os._exit(1)
    _prctl(PR_SET_NO_NEW_PRIVS, 1)


async def run_worker(fd: int, plugins: Plugins) -> int:
    structlog.contextvars.bind_contextvars(worker=os.getpid())
    sock = socket.socket(fileno=fd)
    return await Worker(sock, plugins).run()
