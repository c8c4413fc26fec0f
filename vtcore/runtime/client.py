"""``vt run HOST SERVER``: connect, authenticate, carry the session; reconnect if persistent.

The server dictates protocol, type, compression, cipher, shaping and keep-alive
through ``OK FLAGS``; the client keeps its password, device, keep-alive timing,
up/down commands, ``persist``, ``stat`` and ``nat_hack``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import socket
import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import Protocol

import structlog

from vtcore import metrics
from vtcore.api import HandshakeRefused
from vtcore.notify import Notifier
from vtcore.plugins import Plugins
from vtcore.protocol.errors import ProtocolError
from vtcore.protocol.events import Accepted, Answer, Challenged, Denied
from vtcore.protocol.flags import format_flags, parse_flags
from vtcore.protocol.handshake import ClientHandshake
from vtcore.runtime import fsguard, reconnect, trust
from vtcore.runtime.native import (
    HOST_TOKEN,
    confirmation_error,
    host_tokens,
    plugin_compressor,
    takes_runs,
)
from vtcore.runtime.netio import drive, peer_name, send_all
from vtcore.runtime.secure import drive_secure, safe_log_fields
from vtcore.runtime.session import (
    HostOps,
    Session,
    SessionError,
    client_settings,
    flag_letters,
    secure_label,
)
from vtcore.runtime.status import StatusServer, session_status
from vtcore.runtime.trust import legacy_warnings
from vtcore.runtime.wrapping import WrapFailed, wrap, wrapper_for

STABLE_AFTER = 30.0
"""A session that lasted this long resets the back-off."""
QUICK_RETRY_FOR = 10.0
"""After a session in which the server's side ran (we heard from it), attempts follow
every ``reconnect.FIRST`` s for this long before the back-off grows: a restarted server
is back in seconds.  A server that fails each session before its tunnel runs (its
device busy...) does not qualify, so it cannot draw an attempt a second for ever."""

SECURE_AUTH_FAILED = "authentication failed"
"""What a secure mode's refusal says for a wrong password or an unknown host
(vt_crypto.secure.errors.AUTH_FAILED): the same words to the peer for both."""

log = structlog.get_logger("vt.client")


class ConnectError(Exception):
    """Connecting or authenticating failed (one line, for the log)."""


class AuthFailed(ConnectError):
    """The server refused this host's authentication: retrying soon will not help."""


@dataclass
class ClientOptions:
    port: int | None = None
    timeout: int | None = None
    persist: bool = False
    ipv6: bool | None = None


def server_port(overrides: ClientOptions, options) -> int:
    """The server's port: ``-P``, else ``options.port``."""
    return overrides.port or options.port


class Privileged(Protocol):
    """What a client worker asks of its root parent (:mod:`vtcore.runtime.worker`)."""

    async def begin(self) -> HostOps:
        """A new session's device, commands and stat lines, done by the parent."""
        ...

    def end(self) -> None: ...

    async def pinned(self) -> bool: ...

    async def remember(self) -> None: ...


class Client:
    def __init__(self, config, host_name: str, server: str, plugins: Plugins,
                 overrides: ClientOptions | None = None) -> None:
        self.config = config
        self.host = config.hosts[host_name]
        self.server = server
        self.plugins = plugins
        self.o = overrides or ClientOptions()
        self.session: Session | None = None
        self.stopping = False
        self._wake = asyncio.Event()
        self._restart = False
        self.sessions_run = 0
        self.reconnects = 0
        self.handshake_results: Counter[str] = Counter()
        self.closed: dict[str, dict[str, int]] = {}
        self.log = log.bind(host=self.host.name, server=server)
        self.privileged: Privileged | None = None
        """Set in a worker (``options { workers N; }``): its root parent opens the device,
        runs the commands and keeps the trust records."""

    @property
    def persist(self) -> bool:
        return self.o.persist or self.host.persist in ("yes", "keep")

    @property
    def port(self) -> int:
        return server_port(self.o, self.config.options)

    def stop(self, reason: str = "signal") -> None:
        self.stopping = True
        self._wake.set()
        if self.session is not None:
            self.session.stop(reason)

    def restart(self) -> None:
        """SIGHUP: end the current session and reconnect at once (even without persist,
        as vtund does)."""
        self._wake.set()
        if self.session is not None:
            self._restart = True
            self.session.stop("restart requested (SIGHUP)")

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self.restart)
        loop.add_signal_handler(signal.SIGUSR1, self._reset)
        status_server = StatusServer("run", f"{self.host.name}-{self.server}", self.status)
        await status_server.start()
        try:
            async with (Notifier().serving(self.status_line),
                        metrics.serving(self.config.options.metrics, self.status)):
                return await self._run()
        finally:
            await status_server.close()

    def status_line(self) -> str:
        """The one-line STATUS= the service manager shows."""
        state = "connected to" if self.session is not None else "connecting to"
        return f"{self.host.name}: {state} {self.server}:{self.port}"

    def status(self) -> dict:
        """The document ``vt status`` shows."""
        return {"role": "client", "host": self.host.name, "server": self.server,
                "sessions_run": self.sessions_run, "reconnects": self.reconnects,
                "handshake_results": dict(self.handshake_results), "closed": self.closed,
                "sessions": [session_status(self.session)] if self.session else []}

    async def _run(self) -> int:
        device = None
        delay = reconnect.FIRST
        status = 0
        quick_until = 0.0
        while not self.stopping:
            started = time.monotonic()
            peer_lost = False
            ceiling = reconnect.MAX
            try:
                try:
                    sock, flags, secure, endpoints = await self.connect()
                except ConnectError:
                    self.handshake_results["failed"] += 1
                    raise
                self.handshake_results["accepted"] += 1
                label = secure_label(*secure) if secure is not None else None
                settings = client_settings(self.host, flags, label)
                ops = await self.privileged.begin() if self.privileged else None
                self.session = Session(
                    host=self.host, options=self.config.options, settings=settings,
                    registry=self.plugins.registry, peer=self.server, device=device,
                    keep_device=self.host.persist == "keep", stat=self.host.stat,
                    secure=secure, ops=ops,
                )
                letters = flag_letters(self.plugins.registry)
                self.log.info("connected", flags=format_flags(flags, letters))
                self.sessions_run += 1
                reason = await self.session.run(sock, nat_hack=self.host.nat_hack == "client",
                                                endpoints=endpoints)
                device = self.session.device
                peer_lost = self.session.tunnel is not None and self.session.tunnel.peer_lost
                self.log.info("session closed", reason=reason, **self.session.counters.as_dict())
                status = 0
                heard = self.session.counters.echo_received or self.session.counters.frames_in
                if heard:
                    quick_until = time.monotonic() + QUICK_RETRY_FOR
            except (ConnectError, SessionError) as exc:
                self.log.error("session failed", error=str(exc))
                status = 1
                if isinstance(exc, AuthFailed):
                    ceiling, quick_until = reconnect.AUTH_MAX, 0.0
            finally:
                if self.session is not None:
                    metrics.fold_session(self.closed, session_status(self.session))
                    if self.privileged is not None:
                        self.privileged.end()
                self.session = None
            restart, self._restart = self._restart, False
            if self.stopping or not (self.persist or restart):
                break
            self.reconnects += 1
            if restart or peer_lost:
                # SIGHUP, or the server stopped answering (most likely it is being
                # restarted): try at once; a refused connect then backs off as usual.
                delay = reconnect.FIRST
                self.log.info("reconnecting", delay=0)
                continue
            if time.monotonic() - started > STABLE_AFTER:
                delay = reconnect.FIRST
            self._wake.clear()
            wait = reconnect.jittered(delay, random.random())
            self.log.info("reconnecting", delay=round(wait, 2), ceiling=ceiling)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            if time.monotonic() >= quick_until:
                delay = reconnect.grown(delay, ceiling)
        if device is not None:
            device.close()
        return 0 if self.stopping else status

    def _reset(self) -> None:
        if self.session is not None:
            self.session.counters.reset()
        self.log.info("counters reset")

    async def _open_socket(self) -> socket.socket:
        timeout = float(self.o.timeout or self.host.timeout or 30)
        want6 = self.o.ipv6 if self.o.ipv6 is not None else self.config.options.family == "ipv6"
        loop = asyncio.get_running_loop()
        wanted = socket.AF_INET6 if want6 else socket.AF_UNSPEC
        try:
            # An address needs no resolver: asking the loop's would start a thread that
            # then idles for the life of the client.
            infos = socket.getaddrinfo(self.server, self.port, wanted, socket.SOCK_STREAM, 0,
                                       socket.AI_NUMERICHOST)
        except socket.gaierror:
            try:
                infos = await loop.getaddrinfo(self.server, self.port, type=socket.SOCK_STREAM,
                                               family=wanted)
            except socket.gaierror as exc:
                raise ConnectError(f"cannot resolve {self.server}: {exc.strerror}") from None
        last: Exception | None = None
        tried = f"{self.server}:{self.port}"
        for fam, typ, proto, _, addr in infos:
            sock = socket.socket(fam, typ, proto)
            sock.setblocking(False)
            try:
                src = self.host.srcaddr
                if src is not None and (src.addr or src.port or src.iface):
                    if src.iface:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE,
                                        src.iface.encode())
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    any_addr = "::" if fam == socket.AF_INET6 else "0.0.0.0"
                    sock.bind((src.addr or any_addr, src.port or 0))
                await asyncio.wait_for(loop.sock_connect(sock, addr), timeout)
                return sock
            except (OSError, TimeoutError) as exc:
                sock.close()
                last, tried = exc, peer_name(addr)
        if isinstance(last, ConnectionRefusedError):
            raise ConnectError(f"connection refused by {tried} (nothing listens there)")
        reason = "timed out" if isinstance(last, TimeoutError) else getattr(last, "strerror", last)
        raise ConnectError(f"cannot connect to {self.server}:{self.port}: {reason}")

    def _secure_mode(self):
        """The secure mode this client can speak (its host's, or any installed one)."""
        reg = self.plugins.registry
        return reg.secure_mode_for(self.host.encrypt) or next(iter(reg.secure_modes.values()),
                                                               None)

    async def _is_pinned(self) -> bool:
        if self.privileged is not None:
            return await self.privileged.pinned()
        return self._pinned()

    def _pinned(self) -> bool:
        return trust.is_pinned(self.config.options.statdir, self.host.name, self.server,
                               self.port)

    def _accepts(self, mode, reply: bytes, require: bool, pinned: bool) -> bool:
        """The secure mode takes ``reply``; a refusal says when only memory required it."""
        try:
            return mode.client_accepts(reply, self.host.name, require)
        except HandshakeRefused as exc:
            if not pinned:
                raise
            path = trust.record_path(self.config.options.statdir, self.host.name,
                                     self.server, self.port)
            raise HandshakeRefused(f"{exc}; this server spoke secure mode before "
                                   f"(remembered in {path})") from None

    def _remember(self) -> None:
        """Trust on first use: from now on, no legacy authentication from this server."""
        args = (self.config.options.statdir, self.host.name, self.server, self.port)
        try:
            if trust.remember(*args, time.time()):
                self.log.info("server speaks secure mode: legacy authentication from it "
                              "will be refused from now on", file=str(trust.record_path(*args)))
        except (fsguard.UnsafePath, OSError) as exc:
            self.log.warning("cannot remember that the server speaks secure mode",
                             detail="a man in the middle could downgrade later sessions",
                             error=str(exc))

    def _check_confirmed(self, wanted: str | None, offer: tuple[str, ...],
                         features: str) -> None:
        """Refuse, before any frame, a session whose compressor the two ends did not agree
        on: compressed on one side only, the tunnel would carry garbage."""
        error = confirmation_error(wanted, offer, features, self.server)
        if error is not None:
            raise ConnectError(error)

    def _auth_failed(self) -> AuthFailed:
        return AuthFailed(f"authentication failed for host {self.host.name}: {self.server} "
                          "refused it (wrong password, unknown host, or the host busy or "
                          "broken there)")

    async def connect(self):
        """Connect, wrap (``proto ws`` ...) and authenticate; return the socket, the
        server's flags, the secure mode's ``(mode, established)`` (None on vtund's path)
        and, for a wrapped stream, the real connection's endpoints (else None)."""
        sock, endpoints = await self._wrapped(await self._open_socket())
        sock, flags, secure = await self._authenticate(sock)
        return sock, flags, secure, endpoints

    async def _wrapped(self, sock: socket.socket):
        """``sock`` inside the host's wrapping transport, if its ``proto`` names one."""
        transport = wrapper_for(self.plugins.registry, self.host.proto)
        if transport is None:
            return sock, None
        timeout = float(self.o.timeout or self.config.options.timeout or 30)
        options = {**self.host.extras, "server": self.server}
        try:
            return await wrap(transport, sock, "client", options, timeout)
        except WrapFailed as exc:
            raise ConnectError(f"{self.server}: {exc}") from None

    async def _authenticate(self, sock: socket.socket):
        timeout = float(self.o.timeout or self.config.options.timeout or 30)
        token: tuple[str, ...] = (HOST_TOKEN,) if getattr(self.host, "vtmode", True) else ()
        mode = self._secure_mode()
        configured = self.plugins.registry.secure_mode_for(self.host.encrypt) is not None
        try:
            pinned = mode is not None and not configured and await self._is_pinned()
        except (fsguard.UnsafePath, OSError) as exc:
            sock.close()
            raise ConnectError(f"cannot read what {self.server} spoke before: {exc}") from None
        require = configured or pinned
        if mode is not None and require:
            token = (mode.host_token,)
        wanted = plugin_compressor(self.host.compress)
        token = host_tokens(self.host.name, token, self.plugins.registry.words("compress"),
                            wanted, runs=takes_runs(self.plugins.registry))
        letters = flag_letters(self.plugins.registry)
        hs = ClientHandshake(self.host.name, self.host.password_bytes(), self.host.sslauth,
                             host_extra=token, letters=letters)
        try:
            event = await drive(sock, hs, timeout)
            # The reply to HOST (challenge, offer or ERR) goes to the secure mode first: a
            # client that requires it refuses anything else (a downgrade).
            if mode is not None and token and hs.reply is not None and self._accepts(
                    mode, hs.reply, require, pinned):
                ch = mode.client_handshake(hs.reply, self.host.name,
                                           self.host.password_bytes(), hs.transcript)
                established = await drive_secure(sock, ch, timeout)
                flags = parse_flags(established.settings.flags, letters=letters)
                features = str(established.settings.options.get("features", ""))
                self.log.info("secure mode established", **safe_log_fields(established))
                if not configured:
                    if self.privileged is not None:
                        await self.privileged.remember()
                    else:
                        self._remember()
                self._check_confirmed(wanted, token, features)
                return sock, replace(flags, extra=features), (mode, established)
            if isinstance(event, Challenged):
                await send_all(sock, hs.send(Answer()), timeout)
                event = await drive(sock, hs, timeout)
            if isinstance(event, Accepted):
                for warning in legacy_warnings(self.host.sslauth):
                    self.log.warning("weak authentication", detail=warning)
                self._check_confirmed(wanted, token, event.flags.extra)
                return sock, event.flags, None
            if isinstance(event, Denied) and event.reason:
                # a vt server says why (a plugin feature not offered)
                raise ConnectError(f"connection denied by {self.server}: {event.reason}")
            raise self._auth_failed()
        except HandshakeRefused as exc:
            sock.close()
            if str(exc) == SECURE_AUTH_FAILED:
                raise self._auth_failed() from None
            raise ConnectError(f"{self.server}: {exc}") from None
        except ProtocolError as exc:
            sock.close()
            raise ConnectError(f"bad handshake from {self.server}: {exc}") from None
        except TimeoutError:
            sock.close()
            raise ConnectError(f"handshake with {self.server} timed out") from None
        except (EOFError, OSError) as exc:
            sock.close()
            raise ConnectError(f"handshake with {self.server} failed: {exc}") from None
        except ConnectError:
            sock.close()
            raise


__all__ = ["AuthFailed", "Client", "ClientOptions", "ConnectError", "peer_name"]
