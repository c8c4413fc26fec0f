"""vt's plugin contract: everything the core and its plugins share.

Registration records, the typed Protocols of every object the runtime calls, the
:class:`Registry` and the hookspecs (:mod:`vt_api.hookspecs`).  This distribution is a
leaf: vtcore, vt-devices and every plugin depend on it, it depends on nothing of vt, so
any of them can import it without a cycle.  pluggy is only used at set-up; the
per-packet path calls the methods of these objects directly.

Compatibility: :data:`CONTRACT_VERSION` follows semantic versioning (the distribution's
version is the same).  Within a major version a plugin written against ``vt-api 1.x``
keeps working: records only gain fields with defaults, Protocols only gain optional
extras (separate Protocols), hooks only gain new hookspecs.  A plugin states
``vt-api>=1.0,<2``.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from vt_api.hookspecs import hookimpl
from vt_api.wire import (
    HANDSHAKE_LENGTH_SIZE,
    MAX_HANDSHAKE_MESSAGE,
    MAX_TEXT,
    MESG_SIZE,
    pack_msg,
    source_key,
    unpack_msg,
)

CONTRACT_VERSION = (1, 5)
"""(major, minor) of this contract; see the module doc for the promise."""

HOST_TOKEN = "vt2"
"""What a vt client appends to its ``HOST:`` line: the server then knows its peer is vt
(native features, secure mode) and never sends it to vtund."""

CONN_CLOSE = 0x1000
ECHO_REQ = 0x2000
ECHO_REP = 0x4000
"""vtun's control flags: what ``Link.send_control`` sends and ``Link.read_frames`` reports."""

Role = Literal["server", "client"]
_T = TypeVar("_T")


class Stage(IntEnum):
    """Where a frame module sits in the chain.

    Encoding (device -> network) runs modules in ascending stage; decoding runs them
    in descending stage.  vtund's order is compression, then encryption, then shaping.
    Third parties pick a value between the named ones to slot in between.
    """

    COMPRESS = 100
    ENCRYPT = 200
    SHAPE = 300


# --------------------------------------------------------------------------- session


@dataclass(frozen=True)
class LinkSettings:
    """What the handshake settled for one session.

    Built by the core from the server's host profile (server side) or from the
    ``OK FLAGS`` reply (client side).  Frame-module factories read it to decide
    whether they take part and how.
    """

    host: str
    role: Role
    transport: str = "tcp"
    """``tcp`` or ``udp``."""
    tunnel_type: str = "tty"
    """``tun``, ``ether``, ``tty`` or ``pipe``."""
    compress: tuple[str, int] | None = None
    """``("zlib", 9)`` or ``("lzo", 1)``; ``None`` when off."""
    encrypt: int | None = None
    """vtund cipher code (1-16, 999 for ``oldblowfish128ecb``); ``None`` when off."""
    speed_out: int = 0
    """kbit/s this side may send; 0 means unshaped."""
    keepalive: bool = False
    password: bytes = field(default=b"", repr=False)
    """The shared secret; never logged (``repr=False``)."""
    options: Mapping[str, object] = field(default_factory=dict)
    """The host section's plugin keywords (``pcap``, ``ws_path`` ...), plain values.  For
    plugins written against contract 1.0/1.1 it also mirrors ``native``,
    ``native_framing``, ``offload`` and ``max_frame`` below (to go in 2.0)."""
    native: bool = False
    """Contract 1.2.  Both ends are vt and agreed on vt-native module formats (``OK
    FLAGS`` features ``n``/``m``): a module may use its own, leaner encoding."""
    native_framing: bool = False
    """Contract 1.2.  TCP frames carry vt-native 4-byte headers (up to ``max_frame``)."""
    offload: bool = False
    """Contract 1.2.  The devices move whole GSO super-packets (``IFF_VNET_HDR``)."""
    segments: bool = False
    """Contract 1.2.  Over UDP: both devices read TCP super-packets and cut them into
    packets in user space (``DeviceRequest.split``); frames still carry one packet each."""
    runs: bool = False
    """Contract 1.4.  With ``segments``: both devices send a super-packet as marked
    segments and join them back (``DeviceRequest.runs``); a frame carries one segment."""
    max_frame: int | None = None
    """Contract 1.2.  The largest frame the session carries, the bound of a module's
    decoded output; None: vtund's (2148 bytes on the wire)."""
    secure: str | None = None
    """Contract 1.2.  ``"<mode> <suite>"`` when a secure mode authenticated the session
    (its link seals every frame); a label, never the live objects (the session keeps
    those)."""


@runtime_checkable
class FrameModule(Protocol):
    """One link of the chain: transforms a frame on the way out, undoes it on the way in.

    ``encode``/``decode`` return the transformed frame, or ``None`` to drop it (the
    linker counts the drop and the session goes on).  A module must never raise on
    bad input from the network: return ``None`` instead.  Modules are per session
    and hold their own stream state (zlib streams, cipher chaining).

    Optional attributes the session honours: ``broken`` (True once the module's stream
    state is lost for good: the session ends, as vtund's would) and ``close()`` (called
    once when the session ends, to release files or other resources).
    """

    def encode(self, frame: bytes) -> bytes | None: ...

    def decode(self, frame: bytes) -> bytes | None: ...


@runtime_checkable
class PacingModule(Protocol):
    """A pacer (the shaper): limits what one session sends.

    After each batch of frames is sent the linker calls ``sent(nbytes, now)``; the result
    is the number of seconds the device reader must pause (0.0 to go on at once).  ``now``
    is passed in, so it is testable without sleeping.  A frame module may implement it
    too (its ``sent`` is called the same way).
    """

    def sent(self, nbytes: int, now: float) -> float: ...


@dataclass(frozen=True)
class PacerType:
    """Registration record of a pacer (``vt_register_pacers``)."""

    name: str
    keyword: str
    """The config keyword it answers, any value (``speed``)."""
    create: Callable[[LinkSettings], PacingModule | None]
    """A pacer for the session, or None when it does not limit this one; once per session."""
    describe: str = ""


@runtime_checkable
class ResyncingModule(Protocol):
    """Optional extra: a chained cipher that lost step (UDP loss) and waits for a frame
    to carry its resync; the linker then sends a probe the peer's kernel drops."""

    @property
    def resync_pending(self) -> bool: ...


@runtime_checkable
class BreakableModule(Protocol):
    """Optional extra: ``broken`` turns True when the module's stream state is lost for
    good (zlib after a bad frame): the session ends, as vtund's would."""

    broken: bool


@runtime_checkable
class ClosableModule(Protocol):
    """Optional extra: ``close()`` is called once when the session ends."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class FrameModuleType:
    """Registration record of a frame module, added through ``vt_register_frame_modules``.

    ``keyword`` and ``words`` say which configuration values this plugin answers to:
    ``keyword="compress", words={"lzo": 2}`` answers ``compress lzo:N``;
    ``keyword="encrypt", words={"aes128cbc": 10, ...}`` answers ``encrypt aes128cbc``
    (the number is the vtund code carried in the ``OK FLAGS`` string);
    ``keyword="speed", words={}`` answers any number.
    ``create`` returns a module for the session, or ``None`` if the session does not
    use it.  It is called once per session, never per packet.
    """

    name: str
    stage: int
    keyword: str
    words: Mapping[str, int]
    create: Callable[[LinkSettings], FrameModule | None]
    describe: str = ""
    """Human summary for ``vt plugins list``, e.g. ``compress lzo:1-9``."""
    levels: tuple[int, int] | None = None
    """Valid ``word:N`` level range, when the keyword takes one."""


# --------------------------------------------------------------------------- devices


@dataclass(frozen=True)
class DeviceRequest:
    """What a session asks of a device backend."""

    tunnel_type: str
    name: str | None = None
    """Requested interface name (``device tun7;``), ``None`` for automatic."""
    host: str = ""
    offload: bool = False
    """vt-native: open tun/tap with ``IFF_VNET_HDR`` and offloads (GSO super-packets,
    each prefixed by a ``virtio_net_hdr``); both ends agree on it at the handshake."""
    gro: bool = False
    """Join received TCP segments into super-packets on write (``write_packets``); local
    only, whatever the peer.  Ignored with ``offload`` and by devices that cannot."""
    split: bool = False
    """vt-native over UDP (contract 1.2, both ends agree, ``LinkSettings.segments``): open
    with TCP segmentation offload, cut each super-packet read into packets, and write
    TCP/UDP packets with their checksum left to the kernel (the peer cut them so too)."""
    runs: bool = False
    """Contract 1.4, with ``split`` (both ends agree, ``LinkSettings.runs``; only asked of a
    backend whose :class:`DeviceBackendType` says ``runs``): send a TCP super-packet as
    marked segments instead of packets, and join the marked segments written to it (the
    format: ``docs/plugins.md``, "Marked segments").  Packets are still written too."""


class Device(Protocol):
    """An open local device, read and written in batches (as wireguard-go's tun device):
    one readiness wake-up moves a batch each way.  Packet devices carry one packet per
    item; stream devices (tty, pipe) carry arbitrary byte chunks.  All file descriptors
    are non-blocking.
    """

    name: str
    """Interface or pty name; substituted for ``%d`` in up/down commands."""
    stream: bool
    """True for byte-stream devices (tty, pipe)."""

    def fileno(self) -> int: ...

    def read_packets(self, limit: int) -> list[bytes]:
        """Read up to ``limit`` packets without blocking (empty list when none).

        Raises ``EOFError`` when the device is gone for good (stream closed)."""
        ...

    def write_packets(self, packets: list[bytes]) -> tuple[int, int]:
        """Write ``packets`` in order; return how many packets and bytes the kernel
        refused (EIO, ENOBUFS, EAGAIN, EINVAL).  The caller counts the drops; a refusal
        never ends a session.  A device may join them (tun/tap in ``gro`` mode)."""
        ...

    def stdio_fd(self) -> int | None:
        """The descriptor up commands get as stdin/stdout (pty slave, pipe end), or None."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class StdioDevice(Protocol):
    """Optional extra of a device handing a descriptor to the up commands (pty, pipe):
    the runtime calls ``release_stdio()`` once they are started, so the session sees
    their program exit."""

    def release_stdio(self) -> None: ...


@runtime_checkable
class BacklogDevice(Protocol):
    """Optional extra of a stream device that keeps what the kernel did not take: while
    ``pending`` bytes wait, the linker watches the descriptor and calls ``flush()``."""

    pending: int

    def flush(self) -> None: ...


@runtime_checkable
class ViewsDevice(Protocol):
    """Optional extra (contract 1.4) of a packet device whose ``write_packets`` takes
    ``memoryview`` items as well as ``bytes`` and keeps none of them after it returns:
    with ``takes_views`` true and no frame module in the chain, the tunnel lets a
    :class:`ViewsLink` hand over views of its receive buffer instead of a copy each."""

    takes_views: bool


@runtime_checkable
class TooBigDevice(Protocol):
    """Optional extra (contract 1.4) of a packet device that can answer a packet too
    large for the path as a router would: the tunnel calls ``too_big(packet, mtu)`` with
    a packet it read and will not send (``mtu``: the largest packet, as read from the
    device, that the link carries now) and the device writes an ICMP "fragmentation
    needed" / "packet too big" back into itself; returns whether it did."""

    def too_big(self, packet: bytes, mtu: int) -> bool: ...


@runtime_checkable
class FragmentDevice(Protocol):
    """Optional extra (contract 1.5) of a packet device that can cut a packet too large
    for the path into fragments, as a router does with IPv4 without DF: the tunnel
    calls ``fragment(packet, mtu)`` with a packet it read, before it would answer
    :class:`TooBigDevice`-style, and sends what it returns instead (each fragment within
    ``mtu``, as read from the device); an empty list when the packet is not to be
    fragmented (DF set, IPv6, not IP), and the tunnel then goes on as before."""

    def fragment(self, packet: bytes, mtu: int) -> list[bytes]: ...


@runtime_checkable
class PortableDevice(Protocol):
    """Optional extra (contract 1.3) of a device another process can carry: with
    ``options { workers N; }`` the privileged master opens the device, runs the up and
    down commands, and hands the descriptor to the unprivileged worker that runs the
    session (SCM_RIGHTS).  The backend's :attr:`DeviceBackendType.adopt` rebuilds the
    device there from what this returns."""

    def export(self) -> tuple[int, dict[str, Any]]:
        """The descriptor the data travels on and the JSON-able state ``adopt`` needs
        (name, modes): never a secret, never another descriptor."""
        ...


BatchDevice = Device
"""The name of :class:`Device` before every device was written in batches."""


@dataclass(frozen=True)
class DeviceBackendType:
    """Registration record of a device backend (``vt_register_devices``)."""

    name: str
    tunnel_type: str
    """The ``type`` keyword it serves: ``tun``, ``ether``, ``tty``, ``pipe``."""
    flag: str
    """The letter in the ``OK FLAGS`` string: ``u``, ``e``, ``t``, ``p``."""
    open: Callable[[DeviceRequest], Device]
    describe: str = ""
    adopt: Callable[[int, Mapping[str, Any]], Device] | None = None
    """Contract 1.3: rebuild a :class:`PortableDevice`'s export around ``fd`` (the
    worker's own copy, which the device then owns).  The adopted device has no stdio
    (the master ran the up commands) and closing it closes only that copy.  ``None``:
    the backend's sessions cannot run in a worker (the server says so at start-up)."""
    runs: bool = False
    """Contract 1.4: its devices honour ``DeviceRequest.runs`` (marked segments).  vt
    offers and grants them only when its own backend for the type says so."""


# --------------------------------------------------------------------------- transports


@dataclass(frozen=True)
class Endpoints:
    """Addresses substituted into up/down commands (``%A %P %a %p``)."""

    local_addr: str
    local_port: int
    remote_addr: str
    remote_port: int


@dataclass(frozen=True)
class Framing:
    """A header scheme: vtun's 2-byte header, vt-native's 4 bytes, or none (sealed
    datagrams).  A transport's own business (the tunnel never frames); published for
    links written against contract 1.0/1.1, which exposed it as ``Link.framing``."""

    header: Callable[[int], bytes]
    """Header of a data frame with that many payload bytes."""
    control: Callable[[int], bytes]
    """A whole control frame for a vtun flag (CONN_CLOSE, ECHO_REQ, ECHO_REP)."""
    max_payload: int
    data: Callable[[bytes], tuple[bytes, bytes]] | None = None
    """Payload -> (head, body) to send; defaults to ``(header(len(p)), p)``."""

    def data_fn(self) -> Callable[[bytes], tuple[bytes, bytes]]:
        if self.data is not None:
            return self.data
        header = self.header
        return lambda p: (header(len(p)), p)


class Link(Protocol):
    """What a transport hands the tunnel after the handshake: a non-blocking carrier of
    frames that owns its framing.  The tunnel only moves batches: ``send`` payloads (the
    link frames them, and a secure link seals them), ``send_control`` for vtun's control
    flags, ``read_frames`` when :meth:`fileno` is readable (a secure link opens them
    there), ``flush`` when it is writable again (contract 1.2; a 1.0/1.1 link with
    ``framing`` and ``write_frames`` is adapted by the core, see :class:`LegacyLink`)."""

    @property
    def max_payload(self) -> int:
        """The largest payload ``send`` carries (a longer one is the caller's to drop).
        It may shrink during a session (contract 1.4: a datagram link learns the path
        MTU); the tunnel reads it for every batch."""
        ...

    @property
    def endpoints(self) -> Endpoints: ...

    @property
    def bad_frames(self) -> int:
        """Malformed frames received and skipped."""
        ...

    @property
    def dropped_out(self) -> int:
        """Frames the kernel refused to send (udp ENOBUFS and the like)."""
        ...

    def fileno(self) -> int: ...

    def read_frames(self, limit: int) -> list[tuple[int, bytes]]:
        """Events available now, as ``(flags, payload)``: ``(0, data)`` for a data frame,
        ``(CONN_CLOSE | ECHO_REQ | ECHO_REP, b"")`` for a control frame; empty when none.

        Raises ``EOFError`` when the peer closed the connection."""
        ...

    def send(self, payloads: list[bytes]) -> None:
        """Frame (seal) each payload in order and send what the kernel takes now: a
        stream queues the rest (see :meth:`backlog`), a datagram link drops it (counted
        in :attr:`dropped_out`)."""
        ...

    def send_control(self, flag: int) -> None:
        """One control frame (``CONN_CLOSE``, ``ECHO_REQ``, ``ECHO_REP``), after what
        was sent before."""
        ...

    def backlog(self) -> int:
        """Bytes queued but not yet accepted by the kernel."""
        ...

    def flush(self) -> None:
        """Send queued bytes; called when the descriptor is writable."""
        ...

    def ready(self) -> bool:
        """False while outgoing frames must be held back (udp ``nat_hack``)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class LegacyLink(Protocol):
    """A link written against contract 1.0/1.1: the tunnel framed for it (``framing``)
    and handed it ``[header, payload, ...]`` lists.  Still accepted: the core wraps it
    into a :class:`Link`.  New links implement ``send``/``send_control`` instead."""

    framing: Framing

    def write_frames(self, parts: list[bytes]) -> None: ...


@runtime_checkable
class DatagramLink(Protocol):
    """Optional extras of a datagram link that learns its peer from the first datagram
    (``nat_hack``): ``admit_first`` (set by a secure mode: only a datagram that
    authenticates may name the peer) and ``on_peer`` (set by the core to log it)."""

    admit_first: Callable[[bytes], bool] | None
    on_peer: Callable[[tuple[Any, ...]], None] | None


@runtime_checkable
class UnreachableLink(Protocol):
    """Optional extra of a datagram link: ``on_unreachable`` (set by the tunnel), called
    when an ICMP error (port, host or net unreachable) comes back for the peer.  It only
    starts a dead-peer probe, so the link need not judge whether the error is genuine; a
    link wrapping another (secure mode's) passes the attribute on to the inner link."""

    on_unreachable: Callable[[], None] | None


@runtime_checkable
class ViewsLink(Protocol):
    """Optional extra (contract 1.4) of a link that can return data frames from
    ``read_frames`` as ``memoryview``s of its receive buffer: the tunnel sets ``views``
    to True only when nothing but a :class:`ViewsDevice` reads them (no frame module),
    and the link then must not reuse that buffer before its next ``read_frames``."""

    views: bool


@runtime_checkable
class PathMtuLink(Protocol):
    """Optional extra (contract 1.4) of a datagram link that can keep its datagrams
    within the path MTU (DF set, no fragment on the wire) and shrink ``max_payload`` to
    it.  The tunnel asks only when a too-large packet costs nothing but itself: no frame
    module in the chain (a stream compressor must never lose a frame it encoded) and a
    :class:`TooBigDevice` to tell the packet's sender.  Returns whether it does."""

    def follow_path_mtu(self) -> bool: ...


OpenLink = Callable[[socket.socket, "LinkSettings", float, bool], Awaitable[Link]]
"""``open_link(sock, settings, timeout, nat_hack)``: runs after the handshake on its TCP
socket; with ``nat_hack`` a datagram link is not ``ready()`` until its peer's first
datagram names the peer's address."""


WrapStream = Callable[[socket.socket, Role, Mapping[str, object], float],
                      Awaitable[socket.socket]]
"""``wrap(sock, role, options, timeout)`` (contract 1.1): carries the whole TCP connection,
vtun's handshake included, inside another protocol (a WebSocket ...).  It runs on the
client right after the TCP connect, on the server right after the accept, and returns
the stream the core then uses as if it were the connection (typically one end of a
``socket.socketpair()`` whose other end the wrapper relays).  From then on it owns
``sock``.  ``options``: the host's plugin keywords plus ``"server"`` (the name dialled)
on the client; empty on the server (the host is not known yet).  Errors: ``OSError``
(``ConnectionError``), ``EOFError``, ``TimeoutError`` or ``ValueError``, one line."""


@dataclass(frozen=True)
class TransportType:
    """Registration record of a transport (``vt_register_transports``)."""

    name: str
    """The ``proto`` word it answers."""
    flag: str
    """Its letter in the ``OK FLAGS`` string (``T``, ``U``)."""
    open_link: OpenLink
    describe: str = ""
    wrap: WrapStream | None = None
    """Contract 1.1: a stream wrapper (:data:`WrapStream`).  A wrapping transport's frames
    travel as on ``proto tcp`` inside the wrapped stream: the core opens the ``tcp`` link
    on it and never calls this record's ``open_link``."""
    greets_with: bytes = b""
    """Contract 1.1, with ``wrap``: the bytes a wrapping client sends first (``b"GET "``).
    A server whose config has a host with this ``proto`` waits a moment after each accept
    for them (vtund's clients send nothing first) and wraps the connection when they come."""


# --------------------------------------------------------------------------- secure modes


class HandshakeRefused(Exception):
    """A handshake extension refused the peer; the message is one line, safe to log."""


class SansIOHandshake(Protocol):
    """A handshake extension's state machine, driven by the core's socket loop.

    Messages on the wire are a :data:`HANDSHAKE_LENGTH_SIZE`-byte big-endian length and a
    body of 1 to :data:`MAX_HANDSHAKE_MESSAGE` bytes; the core reads exactly one message
    at a time (the length, then the body: ``receive_data`` gets each as it completes), so
    nothing of the tunnel is read into the handshake, and it runs ``receive_data`` off
    the event loop (a PAKE step may take milliseconds).  Errors: :class:`HandshakeRefused`.
    """

    def receive_data(self, data: bytes) -> None: ...

    def data_to_send(self) -> bytes: ...

    def next_event(self) -> object | None:
        """The established session (has ``.settings.flags``, ``.settings.options``), or None."""
        ...

    def timed_out(self) -> None:
        """Raise the extension's time-out error."""
        ...

    def connection_lost(self) -> None:
        """Raise the extension's connection-lost error."""
        ...


class SecureMode(Protocol):
    """A replacement for vtund's challenge/response, negotiated only between vt ends.

    Registered with ``registry.add_secure_mode(...)`` from ``vt_register_secure_modes``.
    The core: a vt client always appends ``host_token`` to its ``HOST:`` line; the server
    asks :meth:`server_offer` and, given a block, sends it instead of ``OK CHAL`` and runs
    :meth:`server_handshake`; the client asks :meth:`client_accepts` about the server's
    reply.  After the handshake the transport's link is wrapped by :meth:`wrap_link`.
    """

    name: str
    words: frozenset[str]
    """``encrypt`` words selecting this mode (kept as words by the config check)."""
    host_token: str

    def server_offer(self, host: str, extra: tuple[str, ...], host_known: bool,
                     encrypt_word: str | None) -> bytes | None:
        """The 50-byte block replacing ``OK CHAL``, or None for vtund's path.
        Raises :class:`HandshakeRefused` for a secure host whose client cannot do it."""
        ...

    def server_handshake(self, offer: bytes, host: str, password: bytes | None, flags: str,
                         options: Mapping[str, object],
                         transcript: bytes) -> SansIOHandshake:
        ...

    def client_accepts(self, block: bytes, host: str, require: bool) -> bool:
        """True if ``block`` (the reply to ``HOST:``) starts this mode; False to go on
        with vtund's path.  Raises :class:`HandshakeRefused` when ``require`` and the
        server did not offer it (downgrade)."""
        ...

    def client_handshake(self, offer: bytes, host: str, password: bytes,
                         transcript: bytes) -> SansIOHandshake:
        ...

    def wrap_link(self, established: Any, link: Link, role: Role) -> Link:
        """A Link sealing every frame (data and control) of ``link``.

        A datagram link still waiting for its peer's address (``nat_hack``: not
        ``ready()``) has an ``admit_first`` attribute: set it to a check that accepts
        only a datagram that authenticates, so a forged one cannot name the peer."""
        ...

    def admit(self, source: str, now: float) -> bool:
        """Cheap flood check before any expensive work; pair with :meth:`release`."""
        ...

    def release(self) -> None: ...


# --------------------------------------------------------------------------- registry


class RegistryError(Exception):
    """Two plugins registered the same name, or answer the same config word."""


ANY = "*"
"""In :func:`answers`: the record answers every value of its keyword (``words={}``)."""


@dataclass(frozen=True)
class Kind:
    """One kind of registration: its hook, its table in :class:`Registry` and what a record
    answers in a config.  :data:`KINDS` is the one list of them the core reads."""

    name: str
    """As shown by ``vt plugins list`` and in errors: ``device``, ``frame module`` ..."""
    hook: str
    """The hookspec that registers it."""
    table: str
    """The :class:`Registry` attribute holding the records, keyed by :attr:`key`."""
    key: Callable[[Any], str]
    answers: Callable[[Any], frozenset[tuple[str, str]]]
    """The ``(keyword, word)`` pairs the record answers (``word`` is :data:`ANY` for all)."""
    provides: Callable[[Any], str]
    """One line for ``vt plugins list``."""
    letter: Callable[[Any], str | None] = lambda item: None
    """The record's letter in vtund's ``OK FLAGS`` string, if it has one."""


def _module_answers(item: FrameModuleType) -> frozenset[tuple[str, str]]:
    return frozenset((item.keyword, w) for w in (item.words or (ANY,)))


KINDS: tuple[Kind, ...] = (
    Kind("device", "vt_register_devices", "devices", lambda d: d.tunnel_type,
         lambda d: frozenset({("type", d.tunnel_type)}), lambda d: f"type {d.tunnel_type}",
         lambda d: d.flag),
    Kind("transport", "vt_register_transports", "transports", lambda t: t.name,
         lambda t: frozenset({("proto", t.name)}), lambda t: f"proto {t.name}",
         lambda t: t.flag),
    Kind("frame module", "vt_register_frame_modules", "frame_modules", lambda m: m.name,
         _module_answers, lambda m: m.describe or f"{m.keyword} {m.name}"),
    Kind("secure mode", "vt_register_secure_modes", "secure_modes", lambda s: s.name,
         lambda s: frozenset(("encrypt", w) for w in s.words),
         lambda s: "encrypt " + "|".join(sorted(s.words)) + " (secure mode)"),
    Kind("pacer", "vt_register_pacers", "pacers", lambda p: p.name,
         lambda p: frozenset({(p.keyword, ANY)}), lambda p: p.describe or f"{p.keyword} (pacer)"),
)
KIND_BY_NAME = {k.name: k for k in KINDS}

RESERVED_LETTERS = frozenset("<>CLSKEF")
"""``OK FLAGS`` letters with a fixed meaning (speed, compression, keep-alive, cipher,
vt features): no device or transport may take them."""


class PluginFailed(Exception):
    """A plugin's code raised (or returned garbage) at run time; the message names it."""


@dataclass(repr=False)
class Registry:
    """Collects what plugins register.  Keyed by name; a duplicate name or a config word
    another plugin already answers is refused with :class:`RegistryError`."""

    devices: dict[str, DeviceBackendType] = field(default_factory=dict)
    transports: dict[str, TransportType] = field(default_factory=dict)
    frame_modules: dict[str, FrameModuleType] = field(default_factory=dict)
    secure_modes: dict[str, SecureMode] = field(default_factory=dict)
    pacers: dict[str, PacerType] = field(default_factory=dict)
    owner: dict[tuple[str, str], str] = field(default_factory=dict)
    """(kind, name) -> plugin name, for ``vt plugins list``."""
    current_plugin: str = ""

    def __repr__(self) -> str:  # what pluggy's tracing shows as the hook's argument
        return "Registry(" + ", ".join(f"{k.table.replace('_', ' ')}: {len(self.table(k))}"
                                       for k in KINDS) + ")"

    def table(self, kind: Kind) -> dict[str, Any]:
        table: dict[str, Any] = getattr(self, kind.table)
        return table

    def records(self) -> list[tuple[Kind, str, Any]]:
        """Every registered record as ``(kind, key, record)``, kinds in :data:`KINDS` order."""
        return [(k, key, item) for k in KINDS for key, item in self.table(k).items()]

    def _add(self, kind: Kind, item: object) -> None:
        name = kind.key(item)
        table = self.table(kind)
        if name in table:
            raise RegistryError(
                f"{kind.name} {name!r} registered by {self.owner[(kind.name, name)]} "
                f"and again by {self.current_plugin}"
            )
        wanted = kind.answers(item)
        for other_kind, other_name, other in self.records():
            clash = _clash(wanted, other_kind.answers(other))
            if clash:
                raise RegistryError(
                    f"{kind.name} {name!r} of {self.current_plugin} answers '{clash}', "
                    f"already answered by {other_kind.name} {other_name!r} of "
                    f"{self.owner[(other_kind.name, other_name)]}"
                )
        self._check_letter(kind, name, item)
        table[name] = item
        self.owner[(kind.name, name)] = self.current_plugin

    def _check_letter(self, kind: Kind, name: str, item: object) -> None:
        letter = kind.letter(item)
        if letter is None:
            return
        if len(letter) != 1 or not letter.isascii() or not letter.isalpha() \
                or letter in RESERVED_LETTERS:
            raise RegistryError(
                f"{kind.name} {name!r} of {self.current_plugin}: flag {letter!r} must be one "
                f"letter, not one of {''.join(sorted(RESERVED_LETTERS - set('<>')))}")
        for other_kind, other_name, other in self.records():
            if other_kind.letter(other) == letter:
                raise RegistryError(
                    f"{kind.name} {name!r} of {self.current_plugin}: flag {letter!r} already "
                    f"taken by {other_kind.name} {other_name!r} of "
                    f"{self.owner[(other_kind.name, other_name)]}")

    def words(self, keyword: str) -> list[str]:
        """The words installed plugins answer after ``keyword`` (``type``, ``compress`` ...),
        for errors that list them."""
        return sorted({word for kind, _, item in self.records()
                       for kw, word in kind.answers(item) if kw == keyword and word != ANY})

    def letters(self, kind: str) -> dict[str, str]:
        """``OK FLAGS`` letter -> name for ``device`` (the ``type`` word) or ``transport``."""
        k = KIND_BY_NAME[kind]
        return {letter: key for key, item in self.table(k).items()
                if (letter := k.letter(item)) is not None}

    def forget(self, plugin: str) -> None:
        """Take back everything ``plugin`` registered (its registration failed)."""
        for (kind, name), owner in list(self.owner.items()):
            if owner == plugin:
                del self.table(KIND_BY_NAME[kind])[name]
                del self.owner[(kind, name)]

    def add_device(self, item: DeviceBackendType) -> None:
        self._add(KIND_BY_NAME["device"], item)

    def add_transport(self, item: TransportType) -> None:
        self._add(KIND_BY_NAME["transport"], item)

    def add_frame_module(self, item: FrameModuleType) -> None:
        self._add(KIND_BY_NAME["frame module"], item)

    def add_secure_mode(self, item: SecureMode) -> None:
        self._add(KIND_BY_NAME["secure mode"], item)

    def add_pacer(self, item: PacerType) -> None:
        self._add(KIND_BY_NAME["pacer"], item)

    def answers(self, keyword: str, word: str | None = None) -> bool:
        """True if any installed plugin, of any kind, answers ``keyword [word]``."""
        return any(kw == keyword and (word is None or w in (word, ANY))
                   for kind, _, item in self.records() for kw, w in kind.answers(item))

    def pacers_for(self, settings: LinkSettings) -> list[tuple[str, PacingModule]]:
        """The session's pacers with their names, like :meth:`named_chain`."""
        out: list[tuple[str, PacingModule]] = []
        for item in self.pacers.values():
            name, pacer = self._create("pacer", item.name, item.create, settings)
            if pacer is not None:
                out.append((name, pacer))
        return out

    def _create(self, kind: str, record: str, create: Callable[[LinkSettings], _T | None],
                settings: LinkSettings) -> tuple[str, _T | None]:
        """``create(settings)`` and the name errors give it (``plugin P (record)``); what
        it raises becomes a :class:`PluginFailed` naming the plugin, so that one session
        fails and the daemon and the other sessions go on."""
        name = f"plugin {self.owner.get((kind, record)) or '?'} ({record})"
        try:
            return name, create(settings)
        except Exception as exc:
            raise PluginFailed(f"{name}: create failed: {type(exc).__name__}: {exc}") from exc

    def secure_mode_for(self, word: object) -> SecureMode | None:
        """The secure mode an ``encrypt`` word selects, if any."""
        for mode in self.secure_modes.values():
            if word in mode.words:
                return mode
        return None

    def answering(self, keyword: str, word: str | None = None) -> FrameModuleType | None:
        """The frame module that answers ``keyword [word]`` in a config, if any."""
        for item in self.frame_modules.values():
            if item.keyword != keyword:
                continue
            if word is None or not item.words or word in item.words:
                return item
        return None

    def chain(self, settings: LinkSettings) -> list[FrameModule]:
        """Instantiate the modules a session uses, ordered by declared stage."""
        return [module for _, module in self.named_chain(settings)]

    def named_chain(self, settings: LinkSettings) -> list[tuple[str, FrameModule]]:
        """:meth:`chain` with each module's name (``plugin P (module M)``) for errors;
        a ``create`` that raises is a :class:`PluginFailed`."""
        mods: list[tuple[int, str, str, FrameModule]] = []
        for item in self.frame_modules.values():
            name, mod = self._create("frame module", item.name, item.create, settings)
            if mod is not None:
                mods.append((item.stage, item.name, name, mod))
        mods.sort(key=lambda t: (t[0], t[1]))
        return [(name, m) for _, _, name, m in mods]


def _clash(mine: frozenset[tuple[str, str]], theirs: frozenset[tuple[str, str]]) -> str:
    """The first config word both answer (``keyword word``), or ''."""
    for keyword, word in sorted(mine):
        for k2, w2 in theirs:
            if k2 == keyword and (word == w2 or ANY in (word, w2)):
                return keyword if ANY in (word, w2) else f"{keyword} {word}"
    return ""


__all__ = [
    "ANY", "CONN_CLOSE", "HOST_TOKEN", "CONTRACT_VERSION", "ECHO_REP", "ECHO_REQ", "KINDS", "KIND_BY_NAME", "RESERVED_LETTERS", "BacklogDevice", "FragmentDevice", "PathMtuLink", "TooBigDevice", "ViewsDevice", "ViewsLink",
    "BatchDevice", "BreakableModule", "ClosableModule", "DatagramLink", "Device",
    "DeviceBackendType", "DeviceRequest", "Endpoints", "FrameModule", "FrameModuleType",
    "Framing", "HandshakeRefused", "Kind", "LegacyLink", "Link", "LinkSettings", "OpenLink", "PacerType", "PacingModule",
    "PluginFailed", "PortableDevice", "Registry", "RegistryError", "ResyncingModule", "Role", "SansIOHandshake",
    "SecureMode", "Stage", "StdioDevice", "TransportType", "UnreachableLink", "WrapStream",
    "hookimpl",
    # the handshake's wire constants (vt_api.wire, contract 1.2)
    "HANDSHAKE_LENGTH_SIZE", "MAX_HANDSHAKE_MESSAGE", "MAX_TEXT", "MESG_SIZE", "pack_msg",
    "source_key", "unpack_msg",
]
