"""``vt serve``: accept clients, authenticate them as vtund does, carry their sessions.

All sessions live in one process on one event loop, each in its own task: an error in
one is caught at the task boundary, logged, and ends only that session.  Memory per
idle session is a few buffers, not a forked process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from dataclasses import dataclass, field
from typing import Any

import structlog

from vtcore.api import HandshakeRefused
from vtcore.config import ConfigErrors, check_config, load_config
from vtcore.config.model import Config, Host
from vtcore.plugins import Plugins
from vtcore.protocol.errors import ProtocolError
from vtcore.protocol.events import ChallengeAnswered, HostAnnounced
from vtcore.protocol.handshake import ServerHandshake, pack_msg
from vtcore.runtime import locks
from vtcore.runtime.native import HOST_TOKEN, server_features
from vtcore.runtime.netio import peer_name, recv_some, send_all
from vtcore.runtime.secure import drive_secure, safe_log_fields
from vtcore.runtime.session import (
    Session,
    SessionError,
    flag_letters,
    server_flags,
    server_settings,
)
from vtcore.runtime.status import StatusServer, session_status

MAX_PENDING_HANDSHAKES = 256
"""Connections still in the handshake; more wait in the kernel's backlog."""

log = structlog.get_logger("vt.server")


@dataclass
class ServerOptions:
    """Command-line overrides of the config's ``options``."""

    port: int | None = None
    bind: str | None = None
    timeout: int | None = None
    ipv6: bool | None = None


@dataclass
class _Live:
    session: Session
    task: asyncio.Task
    lock: object = None


@dataclass
class Server:
    config_path: str
    config: Config
    plugins: Plugins
    overrides: ServerOptions = field(default_factory=ServerOptions)

    def __post_init__(self) -> None:
        self.live: dict[str, list[_Live]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._handshakes = asyncio.Semaphore(MAX_PENDING_HANDSHAKES)
        self._stopping = asyncio.Event()
        self._claimed: set[str] = set()
        self.listener: socket.socket | None = None
        self.letters = flag_letters(self.plugins.registry)

    # ------------------------------------------------------------------ settings

    @property
    def timeout(self) -> float:
        return float(self.overrides.timeout or self.config.options.timeout or 30)

    def _listen_addr(self) -> tuple[int, str]:
        opts = self.config.options
        ipv6 = self.overrides.ipv6 if self.overrides.ipv6 is not None else opts.family == "ipv6"
        family = socket.AF_INET6 if ipv6 else socket.AF_INET
        addr = self.overrides.bind
        if addr is None and opts.bindaddr is not None:
            addr = opts.bindaddr.addr or _iface_addr(opts.bindaddr.iface, family)
        if addr and ":" in addr:
            family = socket.AF_INET6
        return family, addr or ("::" if family == socket.AF_INET6 else "0.0.0.0")

    def make_listener(self) -> socket.socket:
        family, addr = self._listen_addr()
        port = self.overrides.port or self.config.options.port
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((addr, port))
        sock.listen(128)
        sock.setblocking(False)
        return sock

    # ------------------------------------------------------------------ lifecycle

    async def serve(self) -> None:
        """Listen until SIGTERM/SIGINT; then end every session cleanly."""
        loop = asyncio.get_running_loop()
        self.listener = self.listener or self.make_listener()
        self._install_signals(loop)
        address = peer_name(self.listener.getsockname())
        log.info("listening", address=address, hosts=len(self.config.hosts))
        status = StatusServer("serve", str(self.listener.getsockname()[1]), self.status)
        await status.start()
        accept = loop.create_task(self._accept_loop())
        try:
            await self._stopping.wait()
        finally:
            accept.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await accept
            self.listener.close()
            await self.shutdown("server shutting down")
            await status.close()

    def status(self) -> dict:
        """The document ``vt status`` shows."""
        return {"role": "server", "config": self.config_path,
                "listen": peer_name(self.listener.getsockname()) if self.listener else None,
                "sessions": [session_status(s) for s in self.sessions()]}

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        loop.add_signal_handler(signal.SIGUSR1, self.reset_counters)

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        listener = self.listener
        assert listener is not None, "make_listener() first"
        while True:
            try:
                conn, addr = await loop.sock_accept(listener)
            except OSError as exc:
                log.warning("accept failed", error=exc.strerror)
                await asyncio.sleep(0.1)
                continue
            self.spawn(conn, addr)

    def spawn(self, conn: socket.socket, addr) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(self.handle(conn, addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def shutdown(self, reason: str) -> None:
        sessions = set()
        for lives in list(self.live.values()):
            for live in lives:
                sessions.add(live.task)
                live.session.stop(reason)
        # Connections still in the handshake have nothing to wind down: a silent client
        # must not hold the exit up until its handshake times out.
        for t in self._tasks:
            if t not in sessions:
                t.cancel()
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            _, still = await asyncio.wait(pending, timeout=15)
            for t in still:
                t.cancel()

    def reload(self) -> None:
        """SIGHUP: re-read the config; live sessions keep the profile they started with."""
        try:
            config = load_config(self.config_path)
            errors = check_config(config, self.plugins.registry)
            if errors:
                raise ConfigErrors(errors)
        except ConfigErrors as exc:
            log.error("config reload failed, keeping the old one", error=str(exc).splitlines()[0])
            return
        self.config = config
        log.info("config reloaded", hosts=len(config.hosts))

    def reset_counters(self) -> None:
        for lives in self.live.values():
            for live in lives:
                live.session.counters.reset()
        log.info("counters reset")

    def sessions(self) -> list[Session]:
        return [live.session for lives in self.live.values() for live in lives]

    # ------------------------------------------------------------------ one client

    async def handle(self, conn: socket.socket, addr) -> None:
        peer = peer_name(addr)
        plog = log.bind(peer=peer)
        conn.setblocking(False)
        try:
            async with self._handshakes:
                accepted = await self._authenticate(conn, plog)
            if accepted is None:
                return
            await self._run_session(conn, *accepted, peer)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one session's bug must never reach the listener
            plog.error("session crashed", error=f"{type(exc).__name__}: {exc}")
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    async def _authenticate(self, conn: socket.socket,
                           plog: Any) -> tuple[Host, Any, str, Any] | None:
        """Run the server side of the handshake; return ``(host, lock, features,
        established)`` (the arguments of :meth:`_run_session`) or None."""
        hs = ServerHandshake()
        timeout = self.timeout
        name = "?"
        greeting = hs.initiate()
        host_block = b""
        try:
            await send_all(conn, greeting, timeout)
            # Each message must be complete within ``timeout``: a client dribbling one
            # byte at a time cannot hold a handshake slot for longer.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while True:
                event = hs.next_event()
                if event is None:
                    left = deadline - loop.time()
                    if left <= 0:
                        raise TimeoutError
                    data = await recv_some(conn, left, hs.bytes_needed)
                    if not name or name == "?":
                        host_block += data
                    hs.receive_data(data)
                    continue
                if isinstance(event, HostAnnounced):
                    name = event.host
                    mode, offer = self._secure_offer(event)
                    if offer is not None:
                        return await self._secure(conn, mode, offer, greeting + host_block,
                                                  event, plog)
                    await send_all(conn, hs.send_challenge(os.urandom(16)), timeout)
                    deadline = loop.time() + timeout
                elif isinstance(event, ChallengeAnswered):
                    host = self.config.hosts.get(event.host)
                    ok = self._password_ok(hs, host)
                    lock = None
                    if not ok:
                        plog.warning("denied: authentication failed", host=event.host)
                    else:
                        ok, lock = await self._take_lock(host, plog)
                        if not ok:
                            plog.warning("denied: host already connected", host=event.host)
                    if not ok:
                        await send_all(conn, hs.reject(), timeout)
                        return None
                    assert host is not None  # ok: the password matched its profile
                    features = server_features(host, hs.host_extra)
                    try:
                        await send_all(conn, hs.accept(server_flags(host, features, self.letters)), timeout)
                    except BaseException:
                        locks.release(lock)
                        self._claimed.discard(host.name)
                        raise
                    return host, lock, features, None
        except HandshakeRefused as exc:
            plog.warning("denied: secure mode", host=name, error=str(exc))
            with contextlib.suppress(OSError, TimeoutError, RuntimeError):
                await send_all(conn, hs.reject(), 1.0)
        except (ProtocolError, UnicodeError) as exc:
            plog.warning("denied: bad handshake", host=name, error=str(exc))
            with contextlib.suppress(OSError, TimeoutError):
                await send_all(conn, hs.reject(), 1.0)
        except TimeoutError:
            plog.warning("denied: handshake timed out", host=name)
            # vtund answers a timed-out handshake with ERR too.
            with contextlib.suppress(OSError, TimeoutError, RuntimeError):
                await send_all(conn, hs.reject(), 1.0)
        except (EOFError, OSError) as exc:
            plog.info("handshake aborted by peer", host=name, error=str(exc))
        return None

    # ------------------------------------------------------------------ secure mode

    def _secure_offer(self, event: HostAnnounced):
        """``(mode, offer block)`` when a secure mode takes this client, else (None, None)."""
        modes = self.plugins.registry.secure_modes
        if not modes:
            return None, None
        host = self.config.hosts.get(event.host)
        word = host.encrypt if host is not None and isinstance(host.encrypt, str) else None
        mode = self.plugins.registry.secure_mode_for(word) or next(iter(modes.values()))
        offer = mode.server_offer(event.host, event.extra, host is not None, word)
        return (mode, offer) if offer is not None else (None, None)

    async def _secure(self, conn: socket.socket, mode, offer: bytes, prefix: bytes,
                      event: HostAnnounced, plog):
        """Run a secure-mode handshake; return ``(host, lock, features, established)``."""
        loop = asyncio.get_running_loop()
        peer = conn.getpeername()[0] if conn.family != socket.AF_UNIX else "local"
        if not mode.admit(peer, loop.time()):
            plog.warning("denied: too many secure handshakes", host=event.host)
            await send_all(conn, pack_msg("ERR\n"), 1.0)
            return None
        try:
            host = self.config.hosts.get(event.host)
            features = server_features(host, (HOST_TOKEN,)) if host is not None else ""
            flags = server_flags(host, "", self.letters) if host is not None else "<T>"
            password = host.password_bytes() if host is not None else None
            await send_all(conn, offer, self.timeout)
            sh = mode.server_handshake(offer, event.host, password, flags,
                                       {"features": features}, prefix + offer)
            established = await drive_secure(conn, sh, self.timeout)
        except HandshakeRefused as exc:
            plog.warning("denied: secure mode", host=event.host, error=str(exc))
            return None
        finally:
            mode.release()
        ok, lock = await self._take_lock(host, plog)
        if not ok:
            plog.warning("denied: host already connected", host=event.host)
            return None
        plog.info("secure mode established", host=event.host, **safe_log_fields(established))
        return host, lock, features, (mode, established)

    @staticmethod
    def _password_ok(hs: ServerHandshake, host) -> bool:
        """Constant-time check; an unknown host costs the same work as a known one."""
        if host is None:
            hs.check(os.urandom(16))
            return False
        return hs.check(host.password_bytes(), host.sslauth)

    async def _take_lock(self, host, plog):
        """``multi``: allow, refuse, or end the old session (``killold``).

        Returns ``(allowed, lock path or None)``."""
        mode = host.multi
        if mode == "yes":
            return True, None
        old = self.live.get(host.name, [])
        if mode == "no" and (old or host.name in self._claimed):
            return False, None
        # Claimed before the first await, so two handshakes cannot both pass.
        self._claimed.add(host.name)
        for live in old:
            plog.info("killing old session", host=host.name)
            live.session.stop("replaced by a new connection (multi killold)")
        if old:
            await asyncio.wait([live.task for live in old], timeout=10)
        path = await asyncio.to_thread(locks.acquire, self.config.options.lockdir, host.name, mode)
        if path is None:
            self._claimed.discard(host.name)
        return path is not None, path

    async def _run_session(self, conn: socket.socket, host, lock, features: str,
                           established, peer: str) -> None:
        settings = server_settings(host, features, established)
        session = Session(host=host, options=self.config.options, settings=settings,
                          registry=self.plugins.registry, peer=peer, stat=host.stat)
        task = asyncio.current_task()
        assert task is not None  # run as the connection's task
        live = _Live(session, task, lock)
        self.live.setdefault(host.name, []).append(live)
        self._claimed.discard(host.name)
        slog = log.bind(host=host.name, peer=peer)
        slog.info("session opened", proto=settings.transport, type=settings.tunnel_type)
        reason = "?"
        try:
            reason = await session.run(conn, nat_hack=host.nat_hack == "server")
        except SessionError as exc:
            reason = str(exc)
            slog.error("session failed", error=reason)
        finally:
            lives = self.live.get(host.name, [])
            if live in lives:
                lives.remove(live)
            if not lives:
                self.live.pop(host.name, None)
            if lock is not None:
                locks.release(lock)
            slog.info("session closed", reason=reason, **session.counters.as_dict())


def _iface_addr(iface: str | None, family: int) -> str | None:
    """The first address of ``iface`` (``bindaddr { iface eth0; }``)."""
    if not iface:
        return None
    try:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            idx = ipr.link_lookup(ifname=iface)
            if not idx:
                return None
            for msg in ipr.get_addr(index=idx[0], family=family):
                return msg.get_attr("IFA_ADDRESS")
    except Exception:
        return None
    return None


def _detach_stdio() -> None:
    """Point stdin, and stdout/stderr where they are the client's socket (a real inetd
    passes it as 0, 1 and 2), at /dev/null, as vtund does: what up/down commands or
    Python print must never land in the tunnel's byte stream."""
    import stat

    null = os.open(os.devnull, os.O_RDWR)
    try:
        for fd in (0, 1, 2):
            try:
                is_sock = stat.S_ISSOCK(os.fstat(fd).st_mode)
            except OSError:
                is_sock = True  # closed: keep later opens from landing on 0-2
            if fd == 0 or is_sock:
                os.dup2(null, fd)
    finally:
        os.close(null)


async def serve_inetd(config_path: str, config, plugins: Plugins,
                      overrides: ServerOptions) -> None:
    """``-i``: the client connection is stdin; one session, then exit."""
    sock = socket.socket(fileno=os.dup(0))
    _detach_stdio()
    server = Server(config_path, config, plugins, overrides)
    loop = asyncio.get_running_loop()
    def stop_all() -> None:
        for session in server.sessions():
            session.stop("signal")

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop_all)
    try:
        addr = sock.getpeername()
    except OSError:
        addr = None
    await server.handle(sock, addr)
