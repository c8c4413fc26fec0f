"""A test kit for plugin authors: the linker's contract for a frame module, in one call.

The linker trusts every module of a chain to keep a few rules (docs/plugins.md, section 3):
what one session's module encodes, the peer's module decodes to the same packet, in order;
``decode`` never raises, whatever the network hands it, and answers ``None`` to drop;
nothing it returns is larger than the bound it promised.  ``check_frame_module`` holds a
module to those rules with a deterministic workload, so a plugin's own tests (and vt's
for its bundled plugins) need not write that harness again::

    from vtcore.testing import check_frame_module, link_settings

    def test_keeps_the_linker_contract():
        s = link_settings(options={"mykeyword": "on"})
        check_frame_module(lambda: plugin.create(s))

It needs no root, no sockets and no pytest: failures are ``AssertionError`` with one line
that names the rule, the input and what came back.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import socket
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from vtcore.api import FrameModule, LinkSettings

SIZES = (40, 84, 576, 1400, 2048)
"""Packet sizes of :func:`sample_packets`: headers only, a ping, the IPv4 minimum MTU,
a full packet under a tunnel MTU, and 2048, near vtund's largest frame (2148 bytes)."""


def sample_packets(n: int = 200, seed: int = 7, sizes: Iterable[int] = SIZES) -> list[bytes]:
    """Deterministic IP-like packets: a repeated header shape and a payload from a small
    alphabet, so compressors find something to shrink and ciphers see sizes that are
    and are not a multiple of their block."""
    rng = random.Random(seed)
    sizes = tuple(sizes)
    out = []
    for i in range(n):
        size = rng.choice(sizes)
        head = bytes.fromhex("4500") + size.to_bytes(2, "big") + (i & 0xFFFF).to_bytes(2, "big")
        body = bytes(rng.choice(b"abcdefgh\x00") for _ in range(max(size - len(head), 0)))
        out.append((head + body)[:size])
    return out


def inet_checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``: 0 over a header that carries its own."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def icmp_echo(
    src: str, dst: str, ident: int, seq: int = 1, payload: bytes = bytes(range(56))
) -> bytes:
    """An IPv4 ICMP echo request with both checksums right: what ``ping`` would send, for
    writing into a tun device (the kernel answers it) or through a tunnel."""
    icmp = struct.pack("!BBHHH", 8, 0, 0, ident & 0xFFFF, seq & 0xFFFF) + payload
    icmp = icmp[:2] + struct.pack("!H", inet_checksum(icmp)) + icmp[4:]
    hdr = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), (ident + seq) & 0xFFFF, 0, 64, 1, 0,
        ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed,
    )  # fmt: skip
    return hdr[:10] + struct.pack("!H", inet_checksum(hdr)) + hdr[12:] + icmp


def udp_pair(addr: str = "127.0.0.1") -> tuple[socket.socket, socket.socket]:
    """Two UDP sockets on ``addr``, each connected to the other: a datagram link's
    socket and its peer's, for a test of a link or a tunnel without namespaces."""
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind((addr, 0))
    b.bind((addr, 0))
    a.connect(b.getsockname())
    b.connect(a.getsockname())
    return a, b


class QueueDevice:
    """A packet device in memory, to drive a :class:`vtcore.runtime.tunnel.Tunnel` over a
    real link in a test: what :meth:`inject` is given the tunnel reads (a pipe makes its
    descriptor readable), what the tunnel writes is kept in ``written``."""

    name = "queue0"
    stream = False

    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        self._queue: list[bytes] = []
        self.written: list[bytes] = []

    def inject(self, packet: bytes) -> None:
        """A packet "from the kernel": the tunnel sends it to its peer."""
        self._queue.append(bytes(packet))
        os.write(self._w, b"p")

    def fileno(self) -> int:
        return self._r

    def read_packets(self, limit: int) -> list[bytes]:
        try:
            n = len(os.read(self._r, limit))
        except BlockingIOError:
            return []
        out, self._queue = self._queue[:n], self._queue[n:]
        return out

    def write_packet(self, packet: bytes) -> bool:
        self.written.append(bytes(packet))
        return True

    def write_packets(self, packets: list[bytes]) -> tuple[int, int]:
        """The tunnel's batch write (:class:`vt_api.Device`): nothing is refused."""
        self.written += map(bytes, packets)
        return 0, 0

    def stdio_fd(self) -> None:
        return None

    def close(self) -> None:
        for fd in (self._r, self._w):
            with contextlib.suppress(OSError):
                os.close(fd)


def link_settings(**kw: object) -> LinkSettings:
    """``LinkSettings`` for a module's ``create``: host "h", the server side, unless given."""
    base: dict[str, object] = {"host": "h", "role": "server"}
    return LinkSettings(**(base | kw))  # type: ignore[arg-type]


@dataclass
class ContractReport:
    """What :func:`check_frame_module` fed the module and how it answered."""

    round_trips: int = 0
    """Packets encoded by one instance and decoded by another to the same bytes."""
    hostile: int = 0
    """Frames that were not the peer's output (empty, short, random, damaged, cut)."""
    hostile_dropped: int = 0
    """Of those, how many ``decode`` dropped (returned ``None``)."""
    broken: int = 0
    """Of those, how many set ``broken`` (the session would end; a fresh one went on)."""


def _show(frame: bytes) -> str:
    return f"{len(frame)} bytes {frame[:12].hex()}{'...' if len(frame) > 12 else ''}"


def hostile_frames(good: list[bytes], count: int, seed: int = 2) -> list[bytes]:
    """What a broken or hostile network hands ``decode``: the empty frame, short ones,
    random bytes, and the peer's real frames with bytes flipped, cut short or extended
    (each of those differs from the frame it came from)."""
    rng = random.Random(seed)
    out = [b"", b"\x00", b"\xff", b"\x00" * 16, b"\xff" * 64, bytes(4096)]
    while len(out) < count:
        kind = rng.randrange(4) if good else 0
        if kind == 0:
            out.append(rng.randbytes(rng.randrange(1, 300)))
            continue
        frame = bytearray(rng.choice(good))
        if kind == 1 and frame:
            for i in rng.sample(range(len(frame)), min(len(frame), rng.randrange(1, 4))):
                frame[i] ^= rng.randrange(1, 256)  # never a no-op
        elif kind == 2 and frame:
            del frame[rng.randrange(len(frame)) :]  # always shorter
        else:
            frame += rng.randbytes(rng.randrange(1, 16))
        out.append(bytes(frame))
    return out


WARM_FRAMES = 16
"""Good frames an instance decodes before the hostile ones (and again after a break)."""


def _made(make: Callable[[], FrameModule | None], what: str) -> FrameModule:
    mod = make()
    if mod is None:
        raise AssertionError(f"make() returned None for {what}: the module is off")
    for method in ("encode", "decode"):
        if not callable(getattr(mod, method, None)):
            raise AssertionError(f"{type(mod).__name__} has no {method}() method")
    return mod


def check_frame_module(
    make: Callable[[], FrameModule | None],
    *,
    packets: list[bytes] | None = None,
    hostile: int = 2000,
    max_output: int | None = None,
    seed: int = 2,
) -> ContractReport:
    """Hold a frame module to the linker's contract; raise ``AssertionError`` if it breaks it.

    ``make`` returns a fresh instance, as ``create(settings)`` does once per session; it is
    called for a sender, its peer, and a third instance that takes the hostile input.

    * Round trip: every packet of ``packets`` (default :func:`sample_packets`) is encoded
      by the sender and decoded by the peer, in order, to the same bytes; nothing is
      dropped and no encoded frame is empty.
    * Never raise: the peer's frames damaged (bytes flipped, cut, extended), random bytes,
      empty and all-zero frames go to ``decode`` of an instance that already took good
      frames; each answer is ``None`` or bytes (at most ``max_output`` long, if given).
    * ``broken``, if the module has it, is a bool.  When it turns True the session would
      end, so the hostile input goes on into a fresh instance (counted in the report).
    """
    packets = sample_packets() if packets is None else packets
    sender, peer = _made(make, "the sender"), _made(make, "its peer")
    report = ContractReport()
    frames = []
    for i, p in enumerate(packets):
        try:
            f = sender.encode(p)
        except Exception as exc:
            raise AssertionError(f"encode raised on packet {i} ({_show(p)}): {exc!r}") from exc
        if not f:
            raise AssertionError(f"encode dropped packet {i} ({_show(p)}): returned {f!r}")
        f = bytes(f)
        frames.append(f)
        try:
            back = peer.decode(f)
        except Exception as exc:
            raise AssertionError(f"decode raised on the peer's frame {i}: {exc!r}") from exc
        if back != p:
            got = "None" if back is None else _show(bytes(back))
            raise AssertionError(f"round trip changed packet {i} ({_show(p)}): got {got}")
        report.round_trips += 1

    def warmed(what: str) -> FrameModule:
        """A new instance with some stream state, as in a running session."""
        mod = _made(make, what)
        for f in frames[:WARM_FRAMES]:
            mod.decode(f)
        return mod

    target = warmed("a third instance")
    for frame in hostile_frames(frames, hostile, seed):
        try:
            out = target.decode(frame)
        except Exception as exc:
            raise AssertionError(f"decode raised on hostile input ({_show(frame)}): "
                                 f"{exc!r}") from exc  # fmt: skip
        report.hostile += 1
        broken = getattr(target, "broken", False)
        if not isinstance(broken, bool):
            raise AssertionError(f"broken must be a bool, is {type(broken).__name__}")
        if broken:  # that session would end here: go on with a fresh one
            report.broken += 1
            target = warmed("a fresh instance")
        if out is None:
            report.hostile_dropped += 1
            continue
        if not isinstance(out, (bytes, bytearray, memoryview)):
            raise AssertionError(f"decode returned {type(out).__name__} for {_show(frame)}")
        if max_output is not None and len(out) > max_output:
            raise AssertionError(f"decode returned {len(out)} bytes (> {max_output}) "
                                 f"for {_show(frame)}")  # fmt: skip
    return report
