"""``vt serve``: accept clients, authenticate them as vtund does, carry their sessions.

All sessions live in one process on one event loop, each in its own task: an error in
one is caught at the task boundary, logged, and ends only that session.  Memory per
idle session is a few buffers, not a forked process.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from vt_api.wire import source_key

from vtcore import metrics
from vtcore.admission import HandshakeSlots, HostBackoff
from vtcore.api import HandshakeRefused
from vtcore.config import ConfigErrors, check_config, load_config
from vtcore.config.model import Config, Host
from vtcore.notify import Notifier
from vtcore.plugins import Plugins
from vtcore.protocol.errors import ProtocolError
from vtcore.protocol.events import Accept, Challenge, ChallengeAnswered, HostAnnounced, Reject
from vtcore.protocol.handshake import ServerHandshake, pack_msg
from vtcore.protocol.keepalive import PROBE_TIMEOUT
from vtcore.runtime import fsguard, locks
from vtcore.runtime.native import HOST_TOKEN, refusal, server_features, takes_runs
from vtcore.runtime.netio import drive, peer_name, send_all
from vtcore.runtime.secure import drive_secure, safe_log_fields
from vtcore.runtime.session import (
    HostOps,
    Session,
    SessionError,
    flag_letters,
    secure_label,
    server_flags,
    server_settings,
)
from vtcore.runtime.status import StatusServer, session_status
from vtcore.runtime.trust import legacy_warnings
from vtcore.runtime.wrapping import WrapFailed, sniff, sniffers, wrap, wrapper_for

MAX_PENDING_HANDSHAKES = 256
"""Connections still in the handshake.  A new one is never queued: it takes a slot,
evicting the oldest half-open handshake of its source, or of the busiest source."""
PER_SOURCE_HANDSHAKES = 16
"""Handshakes at once from one IPv4 address or IPv6 /64."""
NOTICE_WINDOW = 10.0
"""Evictions are logged at most once per this many seconds (a flood must not flood the log)."""
DEAD_SESSION_WAIT = 10.0
"""Bound on the wait for a replaced session's ``down`` commands and device release."""

log = structlog.get_logger("vt.server")


def _own_task() -> asyncio.Task:
    """The connection's task, which keys its handshake slot, guard and guess.  Every
    connection is handled in the task :meth:`Server.spawn` made for it (never from a bare
    loop callback), so there is one: its absence is a bug, not a peer's doing."""
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("a connection is handled outside its own task")
    return task


_EARLY_HUP: list[int] = []


def hold_early_reload() -> None:
    """From before the listen to the loop's handler, a SIGHUP (a reload asked as soon as
    the port answers) is remembered rather than fatal; :func:`early_reload` says so once
    the handler is in."""
    signal.signal(signal.SIGHUP, lambda _sig, _frame: _EARLY_HUP.append(1))


def early_reload() -> bool:
    """Was a reload asked before the loop could take it?  (Asked once.)"""
    asked = bool(_EARLY_HUP)
    _EARLY_HUP.clear()
    return asked


def reload_config(path: str, registry,
                  check: Callable[[Config], str | None] | None = None) -> Config | None:
    """SIGHUP's config, checked (``check``: a further test, saying what is wrong), or
    None and one logged line: a bad file never replaces the running one."""
    try:
        config = load_config(path)
        errors = check_config(config, registry)
        if errors:
            raise ConfigErrors(errors)
    except ConfigErrors as exc:
        why: str | None = str(exc).splitlines()[0]
    else:
        why = check(config) if check is not None else None
    if why is not None:
        log.error("config reload failed, keeping the old one", error=why)
        return None
    log.info("config reloaded", hosts=len(config.hosts))
    return config


def install_server_signals(loop: asyncio.AbstractEventLoop, stop: Callable[[], None],
                           reload: Callable[[], None], reset: Callable[[], None]) -> None:
    """A server's signals (one process or a master): TERM/INT stop, HUP reloads (also
    one asked before the loop was up), USR1 resets the counters."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    loop.add_signal_handler(signal.SIGHUP, reload)
    loop.add_signal_handler(signal.SIGUSR1, reset)
    if early_reload():
        reload()


class ListenError(OSError):
    """The listening socket could not be made; ``str()`` names the address and port."""

    def __str__(self) -> str:
        return str(self.args[0])


class Grants(Protocol):
    """The privileged steps of accepting a client: the challenge, the host's lock
    (``multi``), and the session's device and commands (its :class:`HostOps`)."""

    def challenge(self) -> bytes: ...

    async def claim(self, host: Host, response: bytes, plog: Any) -> tuple[bool, Any]:
        """``(allowed, lock)`` for an authenticated ``host`` (``response``: the client's
        answer to :meth:`challenge`, empty after secure mode)."""
        ...

    def release(self, lock: Any) -> None: ...

    def ops(self, host: Host, options: Any) -> HostOps | None: ...


class LocalGrants:
    """All in this process: the lock file, the device and the commands are the server's."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def challenge(self) -> bytes:
        return os.urandom(16)

    async def claim(self, host: Host, response: bytes, plog: Any) -> tuple[bool, Any]:
        return await self.server._take_lock(host, plog)

    def release(self, lock: Any) -> None:
        if lock is not None:
            locks.release(lock)

    def ops(self, host: Host, options: Any) -> HostOps | None:
        return None


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
        self.slots: HandshakeSlots[asyncio.Task] = HandshakeSlots(MAX_PENDING_HANDSHAKES,
                                                                 PER_SOURCE_HANDSHAKES)
        self.backoff = HostBackoff()
        self._evictions_logged = (float("-inf"), 0)
        self._attempts: dict[asyncio.Task, str] = {}
        """Handshake task -> the host whose back-off budget its guess holds (a secure msg1
        being judged): one that ends without a verdict (evicted, timed out) failed."""
        self._guards: dict[asyncio.Task, asyncio.Timeout] = {}
        """Handshake task -> the hard bound on its unauthenticated part."""
        self._stopping = asyncio.Event()
        self._claimed: set[str] = set()
        self.listener: socket.socket | None = None
        self.handshake_results: Counter[str] = Counter()
        self.closed: dict[str, dict[str, int]] = {}
        """Per host: the counters of its ended sessions (metrics' per-host totals)."""
        self.letters = flag_letters(self.plugins.registry)
        self.grants: Grants = LocalGrants(self)
        """Who locks hosts and opens devices: this process, or a worker's master."""

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
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((addr, port))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            hint = (" (another program listens there: 'ss -ltnp' shows which; or give "
                    "-P PORT)") if exc.errno == errno.EADDRINUSE else ""
            raise ListenError(f"cannot listen on {peer_name((addr, port))}: "
                              f"{exc.strerror or exc}{hint}") from None
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
            async with (Notifier().serving(lambda: self.status_line(address)),
                        metrics.serving(self.config.options.metrics, self.status)):
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
        now = asyncio.get_running_loop().time()
        return {"role": "server", "config": self.config_path,
                "listen": peer_name(self.listener.getsockname()) if self.listener else None,
                "sessions": [session_status(s) for s in self.sessions()],
                "handshakes": {"pending": len(self.slots), "evicted": self.slots.evicted},
                "backoff": self.backoff.snapshot(now),
                "handshake_results": dict(self.handshake_results), "closed": self.closed}

    def status_line(self, address: str) -> str:
        """The one-line STATUS= the service manager shows."""
        return f"listening on {address}, {len(self.sessions())} session(s)"

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        install_server_signals(loop, self._stopping.set, self.reload, self.reset_counters)

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
            # A ready backlog is accepted without the loop turning: let evicted handshakes
            # close their sockets before the next one is taken.
            await asyncio.sleep(0)

    def spawn(self, conn: socket.socket, addr) -> asyncio.Task:
        """Start ``conn``'s handshake in a slot of its own, evicting (cancelling) the
        handshake that :class:`HandshakeSlots` picks when its source or the server is
        full: no socket ever waits for a slot, so the accepted ones stay bounded."""
        loop = asyncio.get_running_loop()
        task = loop.create_task(self.handle(conn, addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # Closed however the task ends: one evicted before it ever ran has no ``finally``.
        task.add_done_callback(lambda _task: conn.close())
        source = source_key(addr[0]) if isinstance(addr, tuple) and addr else "local"
        evicted = self.slots.admit(task, source)
        for old in evicted:
            old.cancel()
        if evicted:
            self._log_evictions(loop.time())
        return task

    def _log_evictions(self, now: float) -> None:
        at, count = self._evictions_logged
        if now - at >= NOTICE_WINDOW:
            log.warning("handshake slots full: evicting the oldest half-open handshakes",
                        evicted=self.slots.evicted - count, pending=len(self.slots),
                        per_source=PER_SOURCE_HANDSHAKES)
            self._evictions_logged = (now, self.slots.evicted)

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
        config = reload_config(self.config_path, self.plugins.registry)
        if config is not None:
            self.config = config

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
        loop = asyncio.get_running_loop()
        # One deadline for the whole handshake, not per message: a client dribbling a
        # byte at a time holds its slot no longer than a silent one.  The outer bound
        # (a little later) only backs up the inner one, which answers ERR first; it is
        # lifted once the client is proven (taking the host's lock must not be cut).
        deadline = loop.time() + self.timeout
        try:
            try:
                async with asyncio.timeout_at(deadline + 2.0) as guard:
                    self._guards[_own_task()] = guard
                    conn, wrapped, endpoints = await self._unwrap(conn, deadline)
                    accepted = await self._authenticate(conn, plog, deadline, peer, wrapped)
            except WrapFailed as exc:
                self.handshake_results["denied"] += 1
                plog.warning("denied: bad stream wrapping", host="?", error=str(exc))
                return
            except TimeoutError:
                self.handshake_results["denied"] += 1
                plog.warning("denied: handshake timed out", host="?")
                return
            finally:
                self._authenticated()
            self.handshake_results["denied" if accepted is None else "accepted"] += 1
            if accepted is None:
                return
            await self._run_session(conn, *accepted, peer, endpoints)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one session's bug must never reach the listener
            plog.error("session crashed", error=f"{type(exc).__name__}: {exc}")
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    async def _unwrap(self, conn: socket.socket, deadline: float):
        """``(stream, transport name, real endpoints)``: the connection inside the wrapping
        transport whose greeting the client sent first, or ``(conn, "", None)``."""
        protos = {host.proto for host in self.config.hosts.values()}
        found = await sniff(conn, sniffers(self.plugins.registry, protos))
        if found is None:
            return conn, "", None
        left = max(0.1, deadline - asyncio.get_running_loop().time())
        inner, endpoints = await wrap(found, conn, "server", {}, left)
        return inner, found.name, endpoints

    def _authenticated(self) -> None:
        """The handshake of the current task is over (proven or not): its slot is free
        and it can no longer be evicted (so never while it takes the host's lock).  A
        guess left without a verdict (evicted after its msg1) counts as failed: else
        evicting one's own handshakes would be a way round the budget."""
        task = _own_task()
        self.slots.release(task)
        guard = self._guards.pop(task, None)
        if guard is not None and not guard.expired():
            with contextlib.suppress(RuntimeError):  # its ``async with`` has ended
                guard.reschedule(None)
        host = self._attempts.get(task)
        if host is not None:
            self._verdict(host, False, log)

    async def _refuse_backoff(self, conn: socket.socket, hs: ServerHandshake, host: str,
                              plog) -> None:
        """``ERR`` for a host in back-off.  Not logged per attempt (a flood would flood
        the log): the back-off notice, once per window, and ``vt status`` tell."""
        plog.debug("denied: host in back-off", host=host)
        with contextlib.suppress(OSError, TimeoutError):
            await send_all(conn, hs.send(Reject()), 1.0)

    def _verdict(self, host: str, ok: bool, plog) -> None:
        """The current attempt for ``host`` proved the password, or spent a guess.  A
        failure is logged when the host's back-off (re)starts, once per window."""
        if self._attempts.pop(_own_task(), None) is None:
            return
        now = asyncio.get_running_loop().time()
        if ok:
            self.backoff.succeeded(host, now)
            return
        notice = self.backoff.failed(host, now)
        if notice is not None:
            plog.warning("host in back-off: too many failed authentications", host=host,
                         failures=notice.failures, interval=notice.interval,
                         refused=notice.refused)

    async def _authenticate(self, conn: socket.socket, plog: Any, deadline: float,
                            peer: str, wrapped: str = "") -> tuple[Host, Any, Session] | None:
        """Run the server side of the handshake, all of it by ``deadline`` (loop time);
        return ``(host, lock, session)`` (the arguments of :meth:`_run_session`, the
        session's device open) or None."""
        hs = ServerHandshake()
        loop = asyncio.get_running_loop()
        name = "?"

        def left() -> float:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            return remaining

        try:
            while True:
                event = await drive(conn, hs, self.timeout, deadline)
                if isinstance(event, HostAnnounced):
                    name = event.host
                    if not self.backoff.allow(name, loop.time(), reserve=False):
                        await self._refuse_backoff(conn, hs, name, plog)
                        return None
                    mode, offer = self._secure_offer(event)
                    if offer is not None:
                        return await self._secure(conn, mode, offer, hs.transcript,
                                                  event, plog, deadline, peer, wrapped)
                    await send_all(conn, hs.send(Challenge(self.grants.challenge())), left())
                elif isinstance(event, ChallengeAnswered):
                    host = self.config.hosts.get(event.host)
                    if not self.backoff.allow(name, loop.time()):
                        await self._refuse_backoff(conn, hs, name, plog)
                        return None
                    self._attempts[_own_task()] = name
                    ok = self._password_ok(hs, host)
                    lock = None
                    if not ok:
                        # The operator's log tells the two apart; the peer's ERR does not.
                        if host is None:
                            plog.warning("denied: unknown host", host=event.host)
                        else:
                            plog.warning("denied: authentication failed", host=event.host)
                        self._verdict(name, False, plog)
                    else:
                        self._verdict(name, True, plog)
                        self._authenticated()
                        why = self._refusal(host, hs.host_extra, plog, wrapped)
                        if why is not None:
                            await send_all(conn, hs.send(Reject(why)), min(1.0, left()))
                            return None
                        assert host is not None  # ok: the password matched its profile
                        ok, lock = await self.grants.claim(host, event.response, plog)
                        if not ok:
                            plog.warning("denied: host already connected", host=event.host)
                    if not ok:
                        await send_all(conn, hs.send(Reject()), min(1.0, left()))
                        return None
                    assert host is not None  # ok: the password matched its profile
                    features = server_features(host, hs.host_extra, self._stream(host),
                                               takes_runs(self.plugins.registry, (host.type,)))
                    session = self._new_session(host, features, None, peer)
                    try:
                        # Its device first: a server that cannot open it says ERR now
                        # rather than OK and a session that ends at once.
                        await session.open_device()
                        flags = server_flags(host, features, self.letters)
                        await send_all(conn, hs.send(Accept(flags)), self.timeout)
                    except BaseException as exc:
                        self.grants.release(lock)
                        self._claimed.discard(host.name)
                        session.close_device()
                        if not isinstance(exc, SessionError):
                            raise
                        plog.error("denied: cannot set up the host", host=host.name,
                                   error=str(exc))
                        await send_all(conn, hs.send(Reject()), min(1.0, left()))
                        return None
                    for warning in legacy_warnings(host.sslauth):
                        plog.warning("weak authentication", host=host.name, detail=warning)
                    return host, lock, session
        except HandshakeRefused as exc:
            plog.warning("denied: secure mode", host=name, error=str(exc))
            with contextlib.suppress(OSError, TimeoutError, RuntimeError):
                await send_all(conn, hs.send(Reject()), 1.0)
        except (ProtocolError, UnicodeError) as exc:
            plog.warning("denied: bad handshake", host=name, error=str(exc))
            with contextlib.suppress(OSError, TimeoutError):
                await send_all(conn, hs.send(Reject()), 1.0)
        except TimeoutError:
            plog.warning("denied: handshake timed out", host=name)
            # vtund answers a timed-out handshake with ERR too.
            with contextlib.suppress(OSError, TimeoutError, RuntimeError):
                await send_all(conn, hs.send(Reject()), 1.0)
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
                      event: HostAnnounced, plog, deadline: float, peer: str, wrapped: str = ""):
        """Run a secure-mode handshake; return ``(host, lock, session)``.  Its settings
        travel inside the sealed handshake, so a device that will not open can only
        end the connection afterwards (the client sees it close at once)."""
        loop = asyncio.get_running_loop()
        backoff = False

        def guess() -> None:
            """msg1 is in: the password is about to be tried, so the budget is asked
            now (a client that never sends msg1 spends nothing)."""
            nonlocal backoff
            task = _own_task()
            if task in self._attempts:
                return
            if not self.backoff.allow(event.host, loop.time()):
                backoff = True
                raise HandshakeRefused("host in back-off")
            self._attempts[task] = event.host

        source = conn.getpeername()[0] if conn.family != socket.AF_UNIX else "local"
        if not mode.admit(source, loop.time()):
            plog.warning("denied: too many secure handshakes", host=event.host)
            await send_all(conn, pack_msg("ERR\n"), 1.0)
            return None
        try:
            host = self.config.hosts.get(event.host)
            tokens = (HOST_TOKEN, *event.extra)
            features = (server_features(host, tokens, self._stream(host),
                                        takes_runs(self.plugins.registry, (host.type,)))
                        if host is not None else "")
            flags = server_flags(host, "", self.letters) if host is not None else "<T>"
            password = host.password_bytes() if host is not None else None
            await send_all(conn, offer, max(0.0, deadline - loop.time()))
            sh = mode.server_handshake(offer, event.host, password, flags,
                                       {"features": features}, prefix + offer)
            established = await drive_secure(conn, sh, self.timeout, deadline=deadline,
                                             on_message=guess)
        except HandshakeRefused as exc:
            if backoff:
                plog.debug("denied: host in back-off", host=event.host)
                return None
            if host is None:
                plog.warning("denied: unknown host", host=event.host, error=str(exc))
            else:
                plog.warning("denied: secure mode", host=event.host, error=str(exc))
            self._verdict(event.host, False, plog)  # if msg1 reached the PAKE: a guess
            return None
        finally:
            mode.release()
        self._verdict(event.host, True, plog)
        self._authenticated()
        if self._refusal(host, tokens, plog, wrapped) is not None:
            return None
        assert host is not None  # established: the password matched its profile
        ok, lock = await self.grants.claim(host, b"", plog)
        if not ok:
            plog.warning("denied: host already connected", host=event.host)
            return None
        plog.info("secure mode established", host=event.host, **safe_log_fields(established))
        assert host is not None  # established: the password matched its profile
        session = self._new_session(host, features, (mode, established), peer)
        try:
            await session.open_device()
        except SessionError as exc:
            self.grants.release(lock)
            self._claimed.discard(host.name)
            plog.error("cannot set up the host", host=host.name, error=str(exc))
            return None
        return host, lock, session

    def _refusal(self, host, tokens: tuple[str, ...], plog, wrapped: str = "") -> str | None:
        """Log and return (for ``ERR``) why an authenticated peer cannot have this host
        (a plugin feature it did not offer, or a wrapping ``proto`` it did not use), or None."""
        why = refusal(host, tokens)
        if why is None and wrapper_for(self.plugins.registry, host.proto) is not None \
                and wrapped != host.proto:
            why = (f"host {host.name} needs proto {host.proto}, which the peer did not speak "
                   f"(vtund, or vt without proto {host.proto})", f"needs proto {host.proto}")
        if why is None:
            return None
        plog.warning("denied: feature not offered", host=host.name, error=why[0])
        return why[1]

    @staticmethod
    def _password_ok(hs: ServerHandshake, host) -> bool:
        """Constant-time check; an unknown host costs the same work as a known one."""
        if host is None:
            hs.check(os.urandom(16))
            return False
        return hs.check(host.password_bytes(), host.sslauth)

    async def _take_lock(self, host, plog):
        """``multi``: allow, refuse, or end the old session (``killold``).

        Before that, whatever ``multi`` says, an old session of this host whose peer no
        longer answers a probe is ended (its device, ``down`` and lock released): that
        peer is gone, and the new connection is most likely the same one restarted.
        Returns ``(allowed, lock path or None)``."""
        mode = host.multi
        if mode == "no" and host.name in self._claimed:
            return False, None
        if mode != "killold":
            await self._end_dead_sessions(host.name, plog)
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
            await asyncio.wait([live.task for live in old], timeout=DEAD_SESSION_WAIT)
        try:
            path = await asyncio.to_thread(locks.acquire, self.config.options.lockdir,
                                           host.name, mode)
        except (fsguard.UnsafePath, OSError) as exc:
            plog.error("cannot lock host", host=host.name, error=str(exc))
            path = None
        if path is None:
            self._claimed.discard(host.name)
        return path is not None, path

    async def _end_dead_sessions(self, name: str, plog) -> None:
        """Probe the peers of ``name``'s live sessions at once; end and wait out those
        that do not answer (within ~3 s: :data:`vtcore.protocol.keepalive.PROBE_TIMEOUT`)."""
        old = list(self.live.get(name, []))
        if not old:
            return
        answers = await asyncio.gather(*(self._peer_answers(live) for live in old))
        dead = [live for live, alive in zip(old, answers, strict=True) if not alive]
        for live in dead:
            plog.info("replacing a session whose peer does not answer", host=name,
                      old_peer=live.session.peer)
            live.session.stop("replaced: the peer did not answer a probe")
        if dead:
            await asyncio.wait([live.task for live in dead], timeout=DEAD_SESSION_WAIT)

    @staticmethod
    async def _peer_answers(live: _Live) -> bool:
        try:
            return await asyncio.wait_for(live.session.peer_answers(), PROBE_TIMEOUT + 2)
        except TimeoutError:
            return False

    def _stream(self, host) -> bool:
        """The host's frames travel on a byte stream: tcp, or a wrapping transport's."""
        transport = self.plugins.registry.transports.get(host.proto)
        return host.proto == "tcp" or (transport is not None and transport.wrap is not None)

    def _new_session(self, host, features: str, secure, peer: str) -> Session:
        label = secure_label(*secure) if secure is not None else None
        settings = server_settings(host, features, label)
        return Session(host=host, options=self.config.options, settings=settings,
                       registry=self.plugins.registry, peer=peer, stat=host.stat,
                       secure=secure, ops=self.grants.ops(host, self.config.options))

    async def _run_session(self, conn: socket.socket, host, lock, session: Session,
                           peer: str, endpoints=None) -> None:
        settings = session.settings
        task = _own_task()
        live = _Live(session, task, lock)
        self.live.setdefault(host.name, []).append(live)
        self._claimed.discard(host.name)
        slog = log.bind(host=host.name, peer=peer)
        slog.info("session opened", proto=settings.transport, type=settings.tunnel_type)
        reason = "?"
        try:
            reason = await session.run(conn, nat_hack=host.nat_hack == "server",
                                       endpoints=endpoints)
        except SessionError as exc:
            reason = str(exc)
            slog.error("session failed", error=reason)
        finally:
            lives = self.live.get(host.name, [])
            if live in lives:
                lives.remove(live)
            if not lives:
                self.live.pop(host.name, None)
            self.grants.release(lock)
            session.close_device()  # opened before OK: the link may have failed first
            metrics.fold_session(self.closed, session_status(session))
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
    from vtcore.runtime.master import Master, resolve_workers

    if resolve_workers(config, plugins):
        await Master(config_path, config, plugins, overrides, None, 1).serve_one(sock)
        return
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
