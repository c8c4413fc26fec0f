"""The linker: moves packets between a device and a link through the frame-module chain.

Device -> network: each packet runs through the modules in ascending stage (compress,
encrypt, ...) and the batch goes to the link, which frames (and seals) it.  Network ->
device: each data frame runs through the modules in reverse.  A module returning
``None`` drops that one frame (counted); nothing a peer sends can end the session
except a close, EOF or keep-alive silence.  Nothing an off-path attacker sends can
either: an ICMP error only starts a probe (:mod:`vtcore.protocol.keepalive`), which
the peer's answer ends.

This is the per-packet path: no pluggy, no logging, no per-packet allocation beyond
the frames themselves.  Readiness callbacks on the asyncio loop (direct readers on the
daemons' :class:`~vtcore.runtime.loop.DataLoop`), batches of packets per wake-up.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from operator import itemgetter

from vt_api import (
    BacklogDevice,
    BreakableModule,
    Device,
    FragmentDevice,
    FrameModule,
    Link,
    PacingModule,
    PathMtuLink,
    ResyncingModule,
    TooBigDevice,
    UnreachableLink,
    ViewsDevice,
    ViewsLink,
)

from vtcore.protocol.frames import CONN_CLOSE, ECHO_REP, ECHO_REQ, FRAME_EOF
from vtcore.protocol.keepalive import Action, KeepAlive
from vtcore.runtime.loop import add_reader, remove_reader

PROBE_DELAY = 0.005
"""How long a pending cipher resync waits for real traffic before a probe goes out."""
PROBES = {
    # IPv4 header, TTL 0, protocol 253 (experiments), bad checksum: dropped by ip_rcv.
    "tun": bytes.fromhex("450000140000000000fdffff0000000000000000"),
    # To a reserved link-local group (never bridged), local experimental ethertype.
    "ether": bytes.fromhex("0180c200000f02000000000088b5") + bytes(46),
}
"""Per tunnel type, a packet the peer's kernel drops: what :meth:`Tunnel._send_probe`
sends so a cipher resync does not wait for real traffic (vtund's 1-byte dummy would make
a tun write fail; these are valid frames for the device and invalid for the stack)."""
BATCH = 64
"""Packets handled per readiness callback before yielding to the loop."""
IDLE_GAP = 0.001
"""A wake-up (device or link) this long after the previous one reads a single packet: at
idle the batch's second read would only fail with EAGAIN, a syscall and an exception
(~7 us, more with cold caches) spent before the packet moves on.  Under load wake-ups come
closer and read whole batches; a packet left behind makes the descriptor readable again
at once."""
TOO_BIG_GAP = 0.01
"""At most one ICMP "too big" answer per 10 ms (and so per batch): a sender learns the
size from the first, and a burst of 45 too-large segments needs no 45 answers."""
BYTES_LIKE = (bytes, bytearray, memoryview)
"""What a module's ``encode``/``decode`` may return besides None."""
HIGH_WATER = 512 * 1024
"""Queued bytes on the link above which the device is not read (TCP back-pressure)."""


_flags_of = itemgetter(0)
_payload_of = itemgetter(1)


def _require_bytes(p: object) -> None:
    """What a module returned that is not bytes must be bytes-like (the TypeError names it)."""
    if not isinstance(p, BYTES_LIKE):
        raise TypeError(f"returned {type(p).__name__}, not bytes")


@dataclass
class Counters:
    """Per-session traffic counters (vtund's four, plus what vt drops and why)."""

    byte_in: int = 0
    """Bytes written to the device."""
    byte_out: int = 0
    """Bytes read from the device."""
    comp_in: int = 0
    """Payload bytes received from the peer (after the header, before decoding)."""
    comp_out: int = 0
    """Payload bytes sent to the peer."""
    frames_in: int = 0
    frames_out: int = 0
    dropped_decode: int = 0
    """Frames a module refused on the way in (corrupt, bad padding, bomb...)."""
    dropped_encode: int = 0
    """Packets no module or device could send (an encoder refused it, too large, or a
    tun super-packet the device could not cut into packets)."""
    dropped_device: int = 0
    """Packets the device refused (EIO before the interface is up, ENOBUFS)."""
    echo_sent: int = 0
    echo_received: int = 0
    probes: int = 0
    """Dead-peer probes started (an ICMP error, data sent into silence, a new
    connection for the host); each ends with the peer's answer or the session."""
    bad_frames: int = 0
    """Frames the link rejected (malformed; in secure mode also forged or replayed)."""
    unknown_frames: int = 0
    """Frames with a flag combination vtun does not define (tcp), ignored as vtund does."""
    dropped_link: int = 0
    """Frames the kernel refused to send (udp ENOBUFS and the like, a full tcp backlog)."""
    joined: int = 0
    """Packets the device wrote inside joined super-packets (tun/tap gro mode)."""
    too_big: int = 0
    """Packets larger than the path carries, answered with an ICMP "too big" written
    into the device (as a router would; also counted in ``dropped_encode``)."""
    fragmented: int = 0
    """IPv4 packets without DF larger than the path carries, sent as fragments (as a
    router would)."""

    def reset(self) -> None:
        for f in fields(self):
            setattr(self, f.name, 0)

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


PULLED = (
    ("bad_frames", "link", "bad_frames"),
    ("unknown_frames", "link", "unknown_frames"),
    ("dropped_link", "link", "dropped_out"),
    ("joined", "device", "joined"),
    ("dropped_encode", "device", "unsplit"),
)
"""Counters the link and the device keep themselves (the per-packet path never copies
them): :meth:`Tunnel.pull_counters` adds what they counted to the session's."""


class Tunnel:
    """One session's data path.  ``run()`` returns the reason the session ended."""

    def __init__(
        self,
        link: Link,
        device: Device,
        chain: Sequence[FrameModule],
        *,
        keepalive: KeepAlive | None = None,
        counters: Counters | None = None,
        probe: bytes | None = None,
        names: Sequence[str] | None = None,
        pacers: Sequence[PacingModule] = (),
    ) -> None:
        self.link = link
        self.device = device
        self._too_big = device.too_big if isinstance(device, TooBigDevice) else None
        self._fragment = (device.fragment if not chain and isinstance(device, FragmentDevice)
                          else None)
        """What a router does with IPv4 without DF that the path cannot carry (contract
        1.5); only with no module, whose frames are the packets themselves."""
        self._too_big_at = -math.inf
        if not chain and self._too_big is not None and isinstance(link, PathMtuLink):
            # A packet too large for the path costs only itself and its sender is told:
            # the link may keep within the path MTU (DF).  Never after a module, which
            # may keep state across frames (a stream compressor), nor for a stream device.
            link.follow_path_mtu()
        self.modules = list(chain)
        self.names = list(names) if names is not None else [type(m).__name__ for m in chain]
        """Who each module belongs to, for the one line that ends a session it broke."""
        self._resyncing = [m for m in chain if isinstance(m, ResyncingModule)]
        self._breakable = [m for m in chain if isinstance(m, BreakableModule)]
        self._backlog_device = device if isinstance(device, BacklogDevice) else None
        self._probe_packet = probe
        self._probe: asyncio.TimerHandle | None = None
        if (not chain and isinstance(device, ViewsDevice) and device.takes_views
                and isinstance(link, ViewsLink)):
            # Nothing but the device reads the payloads: the link may hand on views
            # of its receive buffer instead of copies (contract 1.4; transports.udp).
            link.views = True
        self.encoders = [m.encode for m in chain]
        self.decoders = [m.decode for m in reversed(chain)]
        self.pacers = [*pacers, *(m for m in chain if isinstance(m, PacingModule))]
        self.keepalive = keepalive or KeepAlive.disabled()
        """Always there: without the ``K`` flag it still runs probes (:meth:`probe`)."""
        self._watch_sending = self.keepalive.watch_sending
        self.counters = counters or Counters()
        self.peer_lost = False
        """The session ended because the peer stopped answering (keep-alive or probe):
        a persistent client reconnects at once."""
        self._answer_waiters: list[asyncio.Future[bool]] = []
        self._timer_at = math.inf
        """Monotonic time the keep-alive timer is armed for."""
        if isinstance(link, UnreachableLink):
            link.on_unreachable = self._on_unreachable
        self._done: asyncio.Future[str] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dev_paused = False
        self._writer_on = False
        self._dev_writer_on = False
        self._timer: asyncio.TimerHandle | None = None
        self._resume: asyncio.TimerHandle | None = None
        self._dev_last = 0.0
        self._link_last = 0.0
        self._pulled = {name: self._source_count(owner, attr) if owner == "device" else 0
                        for name, owner, attr in PULLED}
        """What :meth:`pull_counters` has already taken: the link is this session's, from
        its first datagram; a device kept across sessions arrives counted."""

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> str:
        loop = self._loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        if self.link.ready():
            self._send_ctrl(ECHO_REQ)
            self.counters.echo_sent += 1
        add_reader(loop, self.link.fileno(), self._on_link)
        add_reader(loop, self.device.fileno(), self._on_device)
        self._arm_keepalive()
        try:
            return await self._done
        finally:
            self._detach()

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        assert loop is not None, "the tunnel is not running"
        return loop

    def _ended(self) -> bool:
        return self._done is None or self._done.done()

    def stop(self, reason: str, *, send_close: bool = True) -> None:
        """End the session (idempotent); tells the peer with CONN_CLOSE when asked."""
        if self._done is None or self._done.done():
            return
        if send_close:
            try:
                self._send_ctrl(CONN_CLOSE)
            except OSError:
                pass
        self._done.set_result(reason)

    def _source_count(self, owner: str, attr: str) -> int:
        return int(getattr(getattr(self, owner), attr, 0) or 0)

    def pull_counters(self) -> None:
        """Add to the session's counters what the link and the device counted since the
        last call: ``vt status`` calls it for live figures, the session's end for its log
        line.  Deltas, so a counter reset (SIGUSR1) holds."""
        c = self.counters
        pulled = self._pulled
        for name, owner, attr in PULLED:
            now = self._source_count(owner, attr)
            setattr(c, name, getattr(c, name) + now - pulled[name])
            pulled[name] = now

    def _detach(self) -> None:
        loop = self._loop
        if loop is None:
            return
        self.pull_counters()
        for fd in (self.link.fileno(), self.device.fileno()):
            if fd >= 0:
                remove_reader(loop, fd)
        if self._writer_on and self.link.fileno() >= 0:
            loop.remove_writer(self.link.fileno())
        if self._dev_writer_on and self.device.fileno() >= 0:
            loop.remove_writer(self.device.fileno())
        for h in (self._timer, self._resume, self._probe):
            if h is not None:
                h.cancel()
        self._answered(False)

    # ------------------------------------------------------------------ device -> network

    def _on_device(self) -> None:
        now = time.monotonic()
        limit = BATCH if now - self._dev_last < IDLE_GAP else 1
        self._dev_last = now
        try:
            packets = self.device.read_packets(limit)
        except EOFError as exc:
            self.stop(f"device closed: {exc}" if str(exc) else "device closed")
            return
        except OSError as exc:
            self.stop(f"device error: {exc.strerror or exc}")
            return
        if not packets:
            return
        c = self.counters
        encoders = self.encoders
        max_payload = self.link.max_payload  # it may shrink: a path MTU learnt
        fragment = self._fragment
        frames: list[bytes] = []
        sent = 0
        enc = None
        p: bytes | None
        if not encoders and all(packets) and max(map(len, packets)) <= max_payload:
            # No module, nothing to refuse: the batch goes out as it came, without a
            # Python step per packet.
            frames = packets
            sent = sum(map(len, packets))
            c.byte_out += sent
            packets = []
        try:
            for p in packets:
                raw = p
                c.byte_out += len(p)
                for enc in encoders:
                    p = enc(p)
                    if p is None:
                        break
                if not p:
                    c.dropped_encode += 1
                    continue
                if p.__class__ is not bytes:
                    _require_bytes(p)
                n = len(p)
                if n > max_payload:
                    if fragment is not None and p is raw:
                        pieces = fragment(raw, max_payload)  # IPv4 without DF
                        if pieces:
                            c.fragmented += 1
                            sent += sum(map(len, pieces))
                            frames += pieces
                            continue
                    c.dropped_encode += 1
                    if self._too_big is not None and now - self._too_big_at >= TOO_BIG_GAP:
                        # The largest packet that would fit, with this one's overhead.
                        self._too_big_at = now
                        c.too_big += self._too_big(raw, len(raw) - (n - max_payload))
                    continue
                sent += n
                frames.append(p)
        except Exception as exc:  # a module broke its contract: this session ends, no other
            if enc is None:
                raise
            self._module_failed(self.encoders, enc, "encode", exc)
            return
        if not frames:
            return
        c.comp_out += sent
        c.frames_out += len(frames)
        if not self.link.ready():
            return
        try:
            self.link.send(frames)
        except OSError as exc:
            self.stop(f"network error: {exc.strerror or exc}", send_close=False)
            return
        if self._watch_sending and self.keepalive.sent(now) < self._timer_at:
            self._arm_keepalive()
        if self.link.backlog() > HIGH_WATER:
            self._pause_device()
            self._want_writer()
        elif self.link.backlog():
            self._want_writer()
        if self.pacers:
            now = time.monotonic()
            delay = max(p.sent(sent, now) for p in self.pacers)
            if delay > 0 and not self._dev_paused:
                self._pause_device()
                self._resume = self._event_loop().call_later(delay, self._resume_device)

    def _pause_device(self) -> None:
        if not self._dev_paused:
            self._dev_paused = True
            remove_reader(self._event_loop(), self.device.fileno())

    def _resume_device(self) -> None:
        self._resume = None
        if self._dev_paused and self.link.backlog() <= HIGH_WATER:
            self._dev_paused = False
            add_reader(self._event_loop(), self.device.fileno(), self._on_device)

    def _want_writer(self) -> None:
        if not self._writer_on:
            self._writer_on = True
            self._event_loop().add_writer(self.link.fileno(), self._on_writable)

    def _on_writable(self) -> None:
        try:
            self.link.flush()
        except OSError as exc:
            self.stop(f"network error: {exc.strerror or exc}", send_close=False)
            return
        backlog = self.link.backlog()
        if not backlog:
            self._writer_on = False
            self._event_loop().remove_writer(self.link.fileno())
        if backlog <= HIGH_WATER // 2 and self._dev_paused and self._resume is None:
            self._resume_device()

    def _send_ctrl(self, flag: int) -> None:
        self.link.send_control(flag)
        if self.link.backlog():
            self._want_writer()

    def link_idle(self, now: float) -> float | None:
        """Seconds since the link last woke the tunnel with frames to read (``now`` from
        ``time.monotonic()``); None before the first.  Read, never counted, for status."""
        return now - self._link_last if self._link_last else None

    def device_idle(self, now: float) -> float | None:
        """Seconds since the device last woke the tunnel with packets to send, like
        :meth:`link_idle` (the other direction)."""
        return now - self._dev_last if self._dev_last else None

    # ------------------------------------------------------------------ network -> device

    def _on_link(self) -> None:
        now = time.monotonic()
        limit = BATCH if now - self._link_last < IDLE_GAP else 1
        self._link_last = now
        try:
            frames = self.link.read_frames(limit)
        except EOFError as exc:
            self.stop(str(exc) or "connection closed", send_close=False)
            return
        if not frames:
            return
        self.keepalive.received(now)
        if self._answer_waiters:
            self._answered(True)
        c = self.counters
        decoders = self.decoders
        out: list[bytes] = []
        dec = None
        p: bytes | None
        if not decoders and not any(map(_flags_of, frames)):
            # No module and only data frames (a bulk flow's batch): the payloads go to
            # the device as they are, without a Python step per frame.
            out = list(map(_payload_of, frames))
            if all(out):
                c.frames_in += len(out)
                c.comp_in += sum(map(len, out))
                frames = []
            else:  # an empty one is counted as refused, in the loop
                out = []
        try:
            for flags, p in frames:
                if flags:
                    if out:  # what came before a close goes to the device first
                        self._write_batch(out)
                        out = []
                    self._on_control(flags)
                    if self._ended():
                        return
                    continue
                c.frames_in += 1
                c.comp_in += len(p)
                for dec in decoders:
                    p = dec(p)
                    if p is None:
                        break
                if not p:
                    c.dropped_decode += 1
                    if self._stream_broken():
                        if out:
                            self._write_batch(out)
                        return
                    continue
                if p.__class__ is not bytes:
                    _require_bytes(p)
                out.append(p)
        except Exception as exc:  # a module broke its contract: this session ends, no other
            if dec is None:
                raise
            self._module_failed(self.decoders, dec, "decode", exc)
            return
        if out:
            self._write_batch(out)
            if not self._dev_paused and not self._ended():
                # The kernel answers some packets while we write them (a ping's echo, the
                # ACKs of a TCP flow): send those now, not one more loop round later.
                self._on_device()
        if self._resyncing and self._probe is None and self._probe_packet:
            if any(m.resync_pending for m in self._resyncing):
                self._probe = self._event_loop().call_later(PROBE_DELAY, self._send_probe)
        backlog = self._backlog_device
        if backlog is not None and backlog.pending and not self._dev_writer_on:
            # A tty/pipe reader fell behind: finish the write when it can take more.
            self._dev_writer_on = True
            self._event_loop().add_writer(self.device.fileno(), self._on_device_writable)

    def _write_batch(self, packets: list[bytes]) -> None:
        lost, lost_bytes = self.device.write_packets(packets)
        c = self.counters
        c.byte_in += sum(map(len, packets)) - lost_bytes
        c.dropped_device += lost

    def _on_device_writable(self) -> None:
        backlog = self._backlog_device
        assert backlog is not None  # only watched for a backlog device
        backlog.flush()
        if not backlog.pending:
            self._dev_writer_on = False
            self._event_loop().remove_writer(self.device.fileno())

    def _send_probe(self) -> None:
        """A chained cipher lost step (UDP loss) and waits for our next frame to carry
        its resync request or a fresh IV.  In a one-way transfer there may be none, so
        send a packet the peer's kernel discards (see :data:`PROBES`)."""
        self._probe = None
        if not any(m.resync_pending for m in self._resyncing):
            return
        p: bytes | None = self._probe_packet
        if p is None:
            return
        for enc in self.encoders:
            p = enc(p)
            if p is None:
                return
        if p and len(p) <= self.link.max_payload and self.link.ready():
            try:
                self.link.send([p])
            except OSError:
                return
            self.counters.frames_out += 1

    def _module_failed(self, fns: list, fn: object, what: str, exc: Exception) -> None:
        """End this session with one line naming the module (its plugin) that raised or
        returned garbage; the daemon and its other sessions go on."""
        index = fns.index(fn)
        if fns is self.decoders:
            index = len(fns) - 1 - index
        self.stop(f"{self.names[index]}: {what} failed: {type(exc).__name__}: {exc}")

    def _stream_broken(self) -> bool:
        """A module whose stream state is lost for good (zlib after a bad frame) cannot
        decode anything again: end the session, as vtund does, so a persistent client
        reconnects with fresh streams instead of dropping every frame."""
        for m in self._breakable:
            if m.broken:
                self.stop(f"{type(m).__name__}: stream corrupt, session ends")
                return True
        return False

    def _on_control(self, flags: int) -> None:
        if flags == ECHO_REQ:
            self.counters.echo_received += 1
            try:
                self._send_ctrl(ECHO_REP)
            except OSError as exc:
                self.stop(f"network error: {exc.strerror or exc}", send_close=False)
        elif flags == CONN_CLOSE:
            self.stop("connection closed by other side", send_close=False)
        elif flags == FRAME_EOF:
            # vtund reads a zero-length data frame as end of stream.
            self.stop("peer sent an empty frame (end of stream)")
        # ECHO_REP and unknown combinations only count as "heard from the peer".

    # ------------------------------------------------------------------ keep-alive

    def _arm_keepalive(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self._timer_at = self.keepalive.next_deadline()
        if deadline == math.inf:
            return
        self._timer = self._event_loop().call_at(
            self._event_loop().time() + max(0.0, deadline - time.monotonic()), self._on_keepalive
        )

    def _on_keepalive(self) -> None:
        self._timer = None
        ka = self.keepalive
        probing = ka.probing
        probes = ka.probes
        action = ka.on_timer(time.monotonic())
        self.counters.probes += ka.probes - probes
        if action == Action.DEAD:
            self.peer_lost = True
            self.stop("network timeout (peer did not answer a probe)" if probing
                      else "network timeout (keep-alive)")
            return
        if action == Action.SEND_ECHO:
            try:
                self._send_ctrl(ECHO_REQ)
                self.counters.echo_sent += 1
            except OSError as exc:
                self.stop(f"network error: {exc.strerror or exc}", send_close=False)
                return
        self._arm_keepalive()

    # ------------------------------------------------------------------ dead-peer probe

    def _on_unreachable(self) -> None:
        """The link got an ICMP error for the peer.  Anyone on the path, or off it, can
        forge one, so it only starts a probe: only the peer's silence ends the session."""
        if self._done is None or self._done.done() or not self.link.ready():
            return
        if self.keepalive.suspect(time.monotonic()):
            self.counters.probes += 1
            self._arm_keepalive()

    def probe(self) -> asyncio.Future[bool]:
        """Whether the peer still answers: True at its next valid frame, False when the
        session ends first (a probe that gets no answer ends it within ~3 s).  A
        ``nat_hack`` link that has not heard from its peer yet has no peer to ask: False."""
        answer = asyncio.get_running_loop().create_future()
        if self._done is None or self._done.done() or not self.link.ready():
            answer.set_result(False)
            return answer
        self._answer_waiters.append(answer)
        self._on_unreachable()
        return answer

    def _answered(self, alive: bool) -> None:
        waiters, self._answer_waiters = self._answer_waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(alive)
