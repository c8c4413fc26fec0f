"""One tunnel session after a successful handshake, for either role.

Opens the link (the transport's business), the device (kept across reconnects with
``persist keep``), builds the frame chain, runs ``up``, carries traffic, runs ``down``
exactly once per ``up``, and closes what it opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog
from vt_api import (
    CONN_CLOSE,
    ClosableModule,
    DatagramLink,
    Device,
    DeviceRequest,
    Endpoints,
    FrameModule,
    LinkSettings,
    PacingModule,
    PluginFailed,
    Registry,
    SecureMode,
    StdioDevice,
)

from vtcore.protocol.flags import VTUND_LETTERS, Flags, Letters, format_flags
from vtcore.protocol.keepalive import KeepAlive
from vtcore.runtime.commands import Substitutions, run_commands
from vtcore.runtime.native import confirmed_compressor, feature_settings, legacy_cipher
from vtcore.runtime.netio import peer_name
from vtcore.runtime.priority import PROCESS as LINK_PRIORITY
from vtcore.runtime.secure import safe_log_fields
from vtcore.runtime.stats import write_stats_forever
from vtcore.runtime.status import module_names
from vtcore.runtime.tunnel import PROBES, Counters, Tunnel
from vtcore.transports.base import as_link

DEFAULT_KEEPALIVE = (30, 4)


class SessionError(Exception):
    """The session could not be set up (device, transport, missing module)."""


# ------------------------------------------------------------------ negotiation


def _compress(host) -> tuple[str, int] | None:
    comp = host.compress
    if not comp:
        return None
    method, level = comp
    return (method, max(1, int(level)))


def server_settings(host, features: str = "", secure: str | None = None) -> LinkSettings:
    """What the server's profile dictates for a session (``features``: vt-native ones
    granted to a vt client, see :mod:`vtcore.runtime.native`; ``secure``: the secure
    mode's label, when one ran)."""
    return LinkSettings(
        host=host.name,
        role="server",
        transport=host.proto,
        tunnel_type=host.type,
        compress=_compress(host),
        encrypt=host.encrypt if isinstance(host.encrypt, int) else None,
        speed_out=int(host.speed[0]) if host.speed else 0,
        keepalive=host.keepalive is not None,
        password=host.password_bytes(),
        **_negotiated(host, features, secure),
    )


def _negotiated(host, features: str, secure: str | None) -> dict[str, Any]:
    """The typed fields the vt-native features and a secure mode set, and ``options``:
    the host's plugin keywords plus, for contract 1.0/1.1 plugins, the old mirror."""
    typed = feature_settings(features)
    mirror = {key: value for key, value in typed.items() if value}
    return {**typed, "secure": secure, "options": {**host.extras, **mirror}}


def secure_label(mode: SecureMode, established: object) -> str:
    """``"<mode> <suite>"`` for :attr:`LinkSettings.secure` (what status and logs show)."""
    suite = safe_log_fields(established).get("suite", "")
    return " ".join(w for w in (mode.name, suite) if w)


def flag_letters(registry: Registry) -> Letters:
    """The ``OK FLAGS`` letters of the installed transports and devices (their ``flag``)."""
    return Letters(registry.letters("transport"), registry.letters("device"))


def server_flags(host, features: str = "", letters: Letters = VTUND_LETTERS) -> str:
    """The ``OK FLAGS`` string for a profile (spec 1.5), ``F<features>`` for a vt client."""
    comp = _compress(host)
    speed = None
    if host.speed and (host.speed[0] or host.speed[1]):
        speed = int(host.speed[1])
    return format_flags(
        Flags(
            proto=host.proto,
            type=host.type,
            speed=speed,
            zlib=comp[1] if comp and comp[0] == "zlib" else None,
            lzo=comp[1] if comp and comp[0] == "lzo" else None,
            keepalive=host.keepalive is not None,
            encrypt=host.encrypt if legacy_cipher(host.encrypt) else None,
            extra=features,
        ),
        letters,
    )


def client_settings(host, flags: Flags, secure: str | None = None) -> LinkSettings:
    """The client keeps its password, device and keep-alive timing; the rest is the server's."""
    comp = None
    if flags.zlib is not None:
        comp = ("zlib", max(1, flags.zlib))
    elif flags.lzo is not None:
        comp = ("lzo", max(1, flags.lzo))
    else:
        comp = confirmed_compressor(flags.extra)
    return LinkSettings(
        host=host.name,
        role="client",
        transport=flags.proto,
        tunnel_type=flags.type,
        compress=comp,
        encrypt=flags.encrypt,
        speed_out=int(flags.speed or 0),
        keepalive=flags.keepalive,
        password=host.password_bytes(),
        **_negotiated(host, flags.extra, secure),
    )


def build_chain(registry: Registry, settings: LinkSettings) -> list[tuple[str, FrameModule]]:
    """The session's modules with the plugin each belongs to; a feature the peer asks for
    but nobody provides, or a plugin whose ``create`` raises, is a :class:`SessionError`."""
    try:
        chain = registry.named_chain(settings)
    except PluginFailed as exc:
        raise SessionError(str(exc)) from exc
    wanted = {
        "compress": settings.compress is not None,
        "encrypt": settings.encrypt is not None,
        "speed": settings.speed_out > 0,
    }
    for keyword, on in wanted.items():
        if on and not registry.answers(keyword):
            extra = {"compress": settings.compress[0] if settings.compress else "",
                     "encrypt": "crypto", "speed": "shaper"}[keyword]
            raise SessionError(
                f"the session needs {keyword} but no plugin provides it: "
                f"pip install 'vtcore[{extra}]'"
            )
    return chain


def build_pacers(registry: Registry, settings: LinkSettings) -> list[PacingModule]:
    """The session's pacers (``speed``); a ``create`` that raises is a SessionError."""
    try:
        return [pacer for _, pacer in registry.pacers_for(settings)]
    except PluginFailed as exc:
        raise SessionError(str(exc)) from exc


# ------------------------------------------------------------------ privileged half


class HostOps:
    """What a session needs root for: its device, its up and down commands, its stat
    file.  Done here, in the session's own process; a worker's sessions ask the master
    instead (:class:`vtcore.runtime.worker.MasterOps`)."""

    def __init__(self, host, options, registry: Registry) -> None:
        self.host = host
        self.options = options
        self.registry = registry

    async def open_device(self, request: DeviceRequest) -> Device:
        backend = self.registry.devices.get(request.tunnel_type)
        if backend is None:
            raise SessionError(f"no device backend for type {request.tunnel_type}")
        return backend.open(request)

    async def up(self, device: Device, subs: Substitutions) -> None:
        await run_commands(self.host.up, self.options, subs, stdio_fd=device.stdio_fd(),
                           what="up")
        # Our copy of the pty slave / pipe end must go, or the session would not see
        # its program (pppd, ...) exit.
        if isinstance(device, StdioDevice):
            device.release_stdio()

    async def down(self, subs: Substitutions) -> None:
        await run_commands(self.host.down, self.options, subs, stdio_fd=None, what="down")

    async def write_stats(self, counters: Counters, first: float) -> None:
        await write_stats_forever(self.options.statdir, self.host.name, counters, first=first)


# ------------------------------------------------------------------ the session


class Session:
    """A tunnel session; ``run`` returns the reason it ended."""

    def __init__(
        self,
        *,
        host,
        options,
        settings: LinkSettings,
        registry: Registry,
        peer: str,
        device: Device | None = None,
        keep_device: bool = False,
        stat: bool = False,
        secure: tuple[SecureMode, object] | None = None,
        ops: HostOps | None = None,
    ) -> None:
        self.host = host
        self.ops = ops or HostOps(host, options, registry)
        self.options = options
        self.settings = settings
        self.registry = registry
        self.peer = peer
        self.device = device
        self.keep_device = keep_device
        self.stat = stat
        self.secure = secure
        """The secure mode and its established handshake, which wraps the link
        (``settings.secure`` is its label)."""
        self.counters = Counters()
        self.tunnel: Tunnel | None = None
        self.started = time.time()
        self.udp_peer: str | None = None
        """Where a ``nat_hack`` link found its peer (``vt status`` shows it)."""
        self._stop_reason: str | None = None
        self.log = structlog.get_logger("vt.session").bind(host=host.name, peer=peer)

    def stop(self, reason: str) -> None:
        self._stop_reason = reason
        if self.tunnel is not None:
            self.tunnel.stop(reason)

    def _keepalive(self, link) -> KeepAlive | None:
        """The ``K`` flag's keep-alive.  Over datagrams it also probes when data goes
        out into silence (a stream's own retransmits and queue would make that guess
        wrong: an answer may wait behind megabytes of queued data)."""
        if not self.settings.keepalive:
            return None
        interval, count = self.host.keepalive or DEFAULT_KEEPALIVE
        return KeepAlive(interval, count, time.monotonic(),
                         watch_sending=not getattr(link, "stream", False))

    async def peer_answers(self) -> bool:
        """Probe the peer (a new connection claims its host): False once the session
        ended because the peer did not answer in time, True when it answered or the
        session is still being set up (nothing to tell yet)."""
        tunnel = self.tunnel
        if tunnel is None:
            return True
        return await tunnel.probe()

    async def open_device(self) -> Device:
        """The session's device, opened now if it is not yet (``run`` opens it too): a
        server opens it before it accepts the client."""
        offload = self.settings.offload
        segments = self.settings.segments
        runs = self.settings.runs
        if self.device is not None:
            if (bool(getattr(self.device, "offload", False)) == offload
                    and bool(getattr(self.device, "split", False)) == segments
                    and bool(getattr(self.device, "runs", False)) == runs):
                return self.device
            # persist keep across a change of offload: the framing of packets differs.
            self.log.info("reopening device: offload changed", offload=offload,
                          segments=segments, runs=runs)
            self.device.close()
            self.device = None
        try:
            self.device = await self.ops.open_device(
                DeviceRequest(self.settings.tunnel_type, self.host.device, self.host.name,
                              offload=offload, gro=bool(getattr(self.host, "vtmode", True)),
                              split=segments, runs=runs)
            )
        except OSError as exc:
            raise SessionError(f"cannot open {self.settings.tunnel_type} device: {exc}") from exc
        return self.device

    def close_device(self) -> None:
        """Release a device opened for a session that will not run."""
        if self.device is not None:
            self.device.close()
            self.device = None

    def _peer_learnt(self, addr: tuple) -> None:
        self.udp_peer = peer_name(addr)
        self.log.info("udp peer learnt", addr=addr[0], port=addr[1], nat_hack=True)

    async def run(self, sock, *, nat_hack: bool = False,
                  endpoints: Endpoints | None = None) -> str:
        """Carry the session on ``sock``; ``endpoints``: the real connection's, when
        ``sock`` is a wrapped stream (:mod:`vtcore.runtime.wrapping`)."""
        transport = self.registry.transports.get(self.settings.transport)
        if transport is None:
            sock.close()
            raise SessionError(f"no transport {self.settings.transport}")
        if transport.wrap is not None:  # its frames travel as tcp's inside the wrapped stream
            transport = self.registry.transports["tcp"]
        try:
            named = build_chain(self.registry, self.settings)
            pacers = build_pacers(self.registry, self.settings)
        except SessionError:
            sock.close()
            raise
        chain = [module for _, module in named]
        timeout = float(getattr(self.host, "timeout", 30) or 30)
        try:
            link = as_link(await transport.open_link(sock, self.settings, timeout, nat_hack))
        except (OSError, EOFError, TimeoutError, ValueError) as exc:
            raise SessionError(f"{self.settings.transport} link failed: {exc}") from exc
        if endpoints is not None and hasattr(link, "endpoints"):
            link.endpoints = endpoints  # type: ignore[misc]  # TcpLink's is an attribute
        if not link.ready() and isinstance(link, DatagramLink):
            link.on_peer = self._peer_learnt
        if self.secure is not None:
            mode, established = self.secure
            link = mode.wrap_link(established, link, self.settings.role)
        try:
            device = await self.open_device()
        except SessionError:
            # Tell the peer, or over udp its session would hold its addresses until
            # its keep-alive gives up.
            with contextlib.suppress(OSError):
                link.send_control(CONN_CLOSE)
            link.close()
            raise
        ends = link.endpoints
        subs = Substitutions(device.name, self.host.name, ends.local_addr, ends.local_port,
                             ends.remote_addr, ends.remote_port)
        self.log = self.log.bind(device=device.name)
        stat_task = None
        try:
            await self.ops.up(device, subs)
            if self._stop_reason is not None:
                return self._stop_reason
            self.tunnel = Tunnel(link, device, chain, keepalive=self._keepalive(link),
                                 counters=self.counters,
                                 probe=PROBES.get(self.settings.tunnel_type),
                                 names=[name for name, _ in named],
                                 pacers=pacers)
            if self.stat:
                interval = self.host.keepalive[0] if self.host.keepalive else 300
                stat_task = asyncio.get_running_loop().create_task(
                    self.ops.write_stats(self.counters, min(interval, 300)))
            self.log.info("session up", proto=self.settings.transport,
                          type=self.settings.tunnel_type,
                          native=self.settings.native,
                          compress=":".join(map(str, self.settings.compress or ())) or None,
                          offload=bool(getattr(device, "offload", False)),
                          gro=bool(getattr(device, "gro", False)),
                          split=bool(getattr(device, "split", False)),
                          runs=bool(getattr(device, "runs", False)),
                          modules=module_names(self.settings))
            with LINK_PRIORITY.link():
                reason = await self.tunnel.run()
            return self._stop_reason or reason
        finally:
            if stat_task is not None:
                stat_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await stat_task
            link.close()
            for module in chain:
                if isinstance(module, ClosableModule):
                    try:
                        module.close()
                    except Exception as exc:  # a plugin's cleanup must not stop ours
                        self.log.warning("module close failed", module=type(module).__name__,
                                         error=str(exc))
            await asyncio.shield(self.ops.down(subs))
            if not self.keep_device:
                device.close()
                self.device = None
