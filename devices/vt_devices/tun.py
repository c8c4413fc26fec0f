"""tun (``type tun``, raw IP) and tap (``type ether``, raw Ethernet) devices.

Opened as vtund does: ``/dev/net/tun`` with ``TUNSETIFF`` and ``IFF_NO_PI`` (no 4-byte
packet-information header), so packets on the wire are byte-identical to vtund's.  A name
that already exists as a persistent device (``ip tuntap add dev X mode tun``) is attached
to; it outlives :meth:`TunDevice.close`.  A device vt created disappears on close.

Unlike vtund, a write the kernel refuses (EIO while the interface is still down, ENOBUFS,
EINVAL on a malformed packet...) is counted and dropped; it never ends the session.

:func:`open_tun` is the low-level opener; it also offers ``IFF_VNET_HDR`` with checksum and
segmentation offloads.  Two modes use it:

* ``offload`` (vt-native, both ends vt): reads and writes are whole GSO super-packets with
  their ``virtio_net_hdr``, carried as they are to the peer.
* ``gro`` (receive side only, any peer): the device has ``IFF_VNET_HDR`` but no offloads,
  so reads are plain packets (the header is stripped); :meth:`TunDevice.write_packets`
  joins TCP segments into super-packets before writing (:mod:`vt_devices.gro`).
* ``split`` (vt-native over UDP, both ends vt): offloads on (TCP segmentation, checksum),
  so one read is a whole TCP super-packet, cut into packets here (:mod:`vt_devices.gso`);
  their TCP/UDP checksums are the receiving kernel's, so written packets go out with
  ``NEEDS_CSUM`` (joined as in ``gro`` mode).  With ``runs`` too (both ends agreed),
  a super-packet goes as marked segments and marked segments written are joined
  back without a parse per packet (:mod:`vt_devices.runs`).
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import struct
from collections.abc import Mapping
from typing import Any, NamedTuple

from vt_api import DeviceRequest

from vt_devices.base import DeviceError
from vt_devices.gro import PLAIN, Write, coalesce, partial_header
from vt_devices.gso import split
from vt_devices.runs import ETH_LEN, MARK_LIMIT, first_bytes, join, marked, packet_of
from vt_devices.toobig import fragments, reply

TUN_PATH = "/dev/net/tun"
NEEDS_NET_ADMIN = ("needs the CAP_NET_ADMIN capability: run vt as root, or grant it, e.g. "
                   "AmbientCapabilities=CAP_NET_ADMIN in its systemd unit")
_NO_ACCESS = (f" (vt needs read-write access to {TUN_PATH} and CAP_NET_ADMIN: run it as root, "
              "or grant both, e.g. DeviceAllow= and AmbientCapabilities= in systemd)")
_TUN_PATH_HINTS = {
    errno.ENOENT: f" (no {TUN_PATH}: load the tun module, 'modprobe tun'; in a container, "
                  f"pass the device in, e.g. --device {TUN_PATH})",
    errno.ENODEV: " (the kernel has no tun driver: load the tun module, 'modprobe tun')",
    errno.ENXIO: " (the kernel has no tun driver: load the tun module, 'modprobe tun')",
    errno.EACCES: _NO_ACCESS,
    errno.EPERM: _NO_ACCESS,
}
"""Why ``/dev/net/tun`` would not open, in words an operator can act on."""
IFNAMSIZ = 16

# <linux/if_tun.h>
TUNSETIFF = 0x400454CA  # _IOW('T', 202, int)
TUNGETFEATURES = 0x800454CF  # _IOR('T', 207, unsigned int)
TUNSETOFFLOAD = 0x400454D0  # _IOW('T', 208, unsigned int)
TUNSETVNETHDRSZ = 0x400454D8  # _IOW('T', 216, int)

IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_MULTI_QUEUE = 0x0100
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000

TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
TUN_F_UFO = 0x10
TUN_F_USO4 = 0x20
TUN_F_USO6 = 0x40

VNET_HDR_LEN = 10
"""``struct virtio_net_hdr`` (without ``num_buffers``), the kernel default."""

# Offload sets tried in order until the kernel accepts one (older kernels lack USO).
_OFFLOAD_LADDER = (
    TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_USO4 | TUN_F_USO6,
    TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6,
    TUN_F_CSUM,
    0,
)

_SPLIT_OFFLOADS = (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6, TUN_F_CSUM, 0)
"""``split`` mode: TCP super-packets only (no USO, no ECN), the kinds :func:`split` cuts."""

READ_SIZE = 65535
"""Default per-read buffer: any packet the interface can hold, whatever its MTU (a smaller
buffer would silently truncate).  ``os.readv`` into a preallocated buffer measured no
faster than ``os.read`` (both ~3-4 us per packet, syscall-bound), so the simple path stays."""

# Read errors meaning the interface is gone (deleted under us) or the fd closed.
_GONE = frozenset({errno.EBADFD, errno.EBADF, errno.ENODEV, errno.ENXIO})


class TunOpen(NamedTuple):
    """What :func:`open_tun` returns."""

    fd: int
    name: str
    offload: int
    """``TUN_F_*`` flags the kernel accepted (0 without ``vnet_hdr``)."""


def _check_name(name: str) -> bytes:
    raw = name.encode("ascii", "replace")
    if not raw or len(raw) >= IFNAMSIZ or b"/" in raw or b" " in raw:
        raise DeviceError(f"invalid interface name {name!r} (1-15 characters, no '/' or space)")
    return raw


def open_tun(
    name: str | None,
    tap: bool = False,
    vnet_hdr: bool = False,
    multi_queue: bool = False,
    vnet_hdr_size: int = VNET_HDR_LEN,
    offloads: bool = True,
    ladder: tuple[int, ...] = _OFFLOAD_LADDER,
) -> TunOpen:
    """Open (or attach to) a tun/tap interface; the returned fd is non-blocking.

    ``name=None`` lets the kernel pick ``tunN``/``tapN``.  With ``vnet_hdr`` every packet
    read or written carries a ``virtio_net_hdr`` of ``vnet_hdr_size`` bytes, and the
    richest offload set the kernel supports is switched on (see ``TunOpen.offload``), or
    none with ``offloads=False`` (plain packets read, super-packets may still be written);
    ``ladder``: the offload sets to try, richest first.
    Raises :class:`DeviceError`.
    """
    kind = "tap" if tap else "tun"
    raw = _check_name(name) if name else f"{kind}%d".encode()
    flags = (IFF_TAP if tap else IFF_TUN) | IFF_NO_PI
    if vnet_hdr:
        flags |= IFF_VNET_HDR
    if multi_queue:
        flags |= IFF_MULTI_QUEUE
    try:
        fd = os.open(TUN_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        hint = _TUN_PATH_HINTS.get(err.errno or 0, "")
        raise DeviceError(f"cannot open {TUN_PATH}: {err.strerror}{hint}", err.errno) from None
    try:
        try:
            res = fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", raw, flags))
        except OSError as err:
            what = name or "(automatic)"
            hint = ""
            if err.errno == errno.EINVAL and name:
                hint = " (exists as another kind of device, or with other flags)"
            elif err.errno == errno.EBUSY:
                hint = " (already in use)"
            elif err.errno == errno.EPERM:
                hint = f" ({NEEDS_NET_ADMIN})"
            raise DeviceError(
                f"cannot open {kind} device {what}: {err.strerror}{hint}", err.errno
            ) from None
        actual = res[:IFNAMSIZ].split(b"\0", 1)[0].decode("ascii", "replace")
        offload = 0
        if vnet_hdr:
            if vnet_hdr_size != VNET_HDR_LEN:
                fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", vnet_hdr_size))
            offload = _set_offload(fd, ladder) if offloads else _clear_offload(fd)
        return TunOpen(fd, actual, offload)
    except BaseException:
        os.close(fd)
        raise


def _set_offload(fd: int, ladder: tuple[int, ...]) -> int:
    for want in ladder:
        try:
            fcntl.ioctl(fd, TUNSETOFFLOAD, want)
        except OSError as err:
            if err.errno == errno.EINVAL:
                continue
            raise DeviceError(f"TUNSETOFFLOAD failed: {err.strerror}", err.errno) from None
        return want
    return 0  # pragma: no cover - 0 is always accepted


def _clear_offload(fd: int) -> int:
    try:
        fcntl.ioctl(fd, TUNSETOFFLOAD, 0)
    except OSError as err:
        raise DeviceError(f"TUNSETOFFLOAD failed: {err.strerror}", err.errno) from None
    return 0


def tun_features() -> int:
    """``IFF_*`` flags this kernel's tun driver supports (``TUNGETFEATURES``)."""
    fd = os.open(TUN_PATH, os.O_RDWR | os.O_CLOEXEC)
    try:
        res = fcntl.ioctl(fd, TUNGETFEATURES, b"\0" * 4)
    finally:
        os.close(fd)
    return struct.unpack("I", res)[0]


class TunDevice:
    """An open tun or tap interface: one packet per read or write."""

    stream = False
    takes_views = True
    """:meth:`write_packets` takes memoryviews as well as bytes (a link may hand on views
    of its receive buffer: ``vtcore.transports.udp.UdpLink.views``)."""

    def __init__(self, fd: int, name: str, tap: bool = False, read_size: int = READ_SIZE) -> None:
        self._fd = fd
        self.name = name
        self.tap = tap
        self.read_size = read_size
        """Bytes asked of each read; at least MTU + 14 (+4 with VLAN) for tap."""
        self.dropped = 0
        """Packets the kernel refused on write."""
        self.offload = 0
        """``TUN_F_*`` offloads on (with ``IFF_VNET_HDR``), 0 for plain packets."""
        self.gro = False
        """``IFF_VNET_HDR`` without offloads: TCP segments are joined on write."""
        self.joined = 0
        """Packets that went to the kernel inside a joined super-packet (gro mode)."""
        self.split = False
        """Offloads on, super-packets cut on read, checksums left to the kernel on write."""
        self.unsplit = 0
        """Reads :func:`~vt_devices.gso.split` could not cut (counted, dropped)."""
        self.runs = False
        """Split mode, both ends agreed (``DeviceRequest.runs``): a super-packet
        goes as marked segments (:mod:`vt_devices.runs`), which the peer joins back."""
        self.owner = True
        """False for a worker's adopted copy: the master's copy resets the offloads."""

    def fileno(self) -> int:
        return self._fd

    def stdio_fd(self) -> int | None:
        return None

    def read_packets(self, limit: int) -> list[bytes]:
        """Up to ``limit`` packets, without blocking; ``EOFError`` if the interface is gone."""
        if self.gro:
            # No offloads: every read is one complete packet behind an all-zero header.
            return [p[VNET_HDR_LEN:] for p in self._read(limit)]
        if self.split:
            return self._read_split(limit)
        return self._read(limit)

    def _read_split(self, limit: int) -> list[bytes]:
        """Split mode: reads until ``limit`` packets are in hand, not ``limit`` reads.  One
        read may be a super-packet of ~45 segments, so ``limit`` reads could hand the
        tunnel thousands of packets in one loop turn (seen: 481), and everything else
        (the peer's ACKs, a ping's answer) would wait for them.  Over by at most one
        read's segments; at most ``limit`` reads, even when none can be cut."""
        out: list[bytes] = []
        tap = self.tap
        runs = self.runs
        read = os.read
        fd = self._fd
        size = self.read_size
        reads = 0
        try:
            while len(out) < limit and reads < limit:
                reads += 1
                packets = split(read(fd, size), tap, runs)
                if packets is None:
                    self.unsplit += 1
                else:
                    out += packets
        except BlockingIOError:
            pass
        except OSError as err:
            if err.errno not in _GONE:
                raise
            if reads == 1:  # the failed read was the first
                raise EOFError(f"{self.name}: interface gone") from None
        return out

    def _read(self, limit: int) -> list[bytes]:
        out: list[bytes] = []
        read = os.read
        append = out.append
        fd = self._fd
        size = self.read_size
        try:
            for _ in range(limit):
                append(read(fd, size))
        except BlockingIOError:
            pass
        except OSError as err:
            if err.errno not in _GONE:
                raise
            if not out:
                raise EOFError(f"{self.name}: interface gone") from None
        return out

    def write_packet(self, packet: bytes) -> bool:
        """Write one packet; False (``dropped`` += 1) if the kernel refused it.

        Refusals are EIO (interface down), ENOBUFS/EAGAIN (queue full), EINVAL/EMSGSIZE
        (malformed or too big), ENOMEM.  Any write error drops: if the interface is gone
        for good, :meth:`read_packets` says so.
        """
        if self.runs and marked(packet, ETH_LEN if self.tap else 0):
            return self._write_joined([packet]) == (0, 0)
        try:
            if self.split:
                os.write(self._fd, b"".join(partial_header(packet, self.tap)))
            else:
                os.write(self._fd, PLAIN + packet if self.gro else packet)
        except OSError:
            self.dropped += 1
            return False
        return True

    def too_big(self, packet: bytes, mtu: int) -> bool:
        """Answer ``packet`` (read here, larger than the path carries: ``mtu`` bytes as
        read from this device) with the ICMP "too big" a router would send, written back
        into the device (:mod:`vt_devices.toobig`); False when none is due or it failed."""
        l3 = ETH_LEN if self.tap else 0
        if self.runs and marked(packet, l3):
            real = packet_of(packet, self.tap)
            if real is None:
                return False
            packet = real
        answer = reply(packet, mtu - l3, self.tap)
        return answer is not None and self.write_packet(answer)

    def fragment(self, packet: bytes, mtu: int) -> list[bytes]:
        """Contract 1.5 ``FragmentDevice``: an IPv4 packet without DF, read here and larger
        than the path carries, as the fragments a router would make
        (:func:`vt_devices.toobig.fragments`).  A marked segment is never cut (a TCP
        segment: its sender learns the size that fits from :meth:`too_big`)."""
        if self.runs and marked(packet, ETH_LEN if self.tap else 0):
            return []
        return fragments(packet, mtu, self.tap)

    def write_packets(self, packets: list[bytes]) -> tuple[int, int]:
        """Write a batch; returns the packets and bytes the kernel refused.

        In gro mode TCP segments of a flow are joined into super-packets first."""
        write = os.write
        fd = self._fd
        lost = lost_bytes = 0
        if not self.gro and not self.split:
            for p in packets:
                try:
                    write(fd, p)
                except OSError:
                    lost += 1
                    lost_bytes += len(p)
            self.dropped += lost
            return lost, lost_bytes
        if len(packets) == 1:  # nothing to join (and the idle path stays short)
            return (0, 0) if self.write_packet(packets[0]) else (1, len(packets[0]))
        return self._write_joined(packets)

    def _write_joined(self, packets: list[bytes]) -> tuple[int, int]:
        """gro and split modes: segments joined into super-packets, each written once."""
        write = os.write
        fd = self._fd
        lost = lost_bytes = 0
        if self.runs:
            writes, lost, lost_bytes = _plan_runs(packets, self.tap)
        else:
            writes = coalesce(packets, self.tap, partial=self.split)
        for buf, count, nbytes in writes:
            try:
                write(fd, buf)
            except OSError:
                lost += count
                lost_bytes += nbytes
                continue
            if count > 1:
                self.joined += count
        self.dropped += lost
        return lost, lost_bytes

    def close(self) -> None:
        """Close the fd; an interface vt created (not persistent) disappears."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            if self.owner and (self.offload or self.split):
                # Offloads stay on the interface: a pre-made (persistent) device would
                # keep handing GSO packets to the next user, who may not expect them.
                try:
                    fcntl.ioctl(fd, TUNSETOFFLOAD, 0)
                except OSError:
                    pass
            os.close(fd)

    def export(self) -> tuple[int, dict[str, Any]]:
        """For a worker (:class:`vt_api.PortableDevice`): the fd and the modes it was
        opened with; :func:`adopt` rebuilds the device there."""
        return self._fd, {"name": self.name, "tap": self.tap, "read_size": self.read_size,
                          "offload": self.offload, "gro": self.gro, "split": self.split,
                          "runs": self.runs}

    def __enter__(self) -> TunDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{'tap' if self.tap else 'tun'} {self.name} fd={self._fd}>"


_STRETCHES = re.compile(rb"[\x00-\x1f]+|[\x20-\xff]+")
"""Stretches of marked segments (first byte below ``MARK_LIMIT``) and of packets."""


def _plan_runs(packets: list[bytes], tap: bool = False) -> tuple[list[Write], int, int]:
    """A split-mode device's writes for a batch of marked segments (:mod:`vt_devices.runs`)
    and packets, in order; with the segments and bytes dropped as malformed."""
    firsts = first_bytes(packets, tap)
    if not firsts or min(firsts) >= MARK_LIMIT:
        return coalesce(packets, tap, partial=True), 0, 0
    out: list[Write] = []
    if max(firsts) < MARK_LIMIT:
        bad, bad_bytes = join(packets, out, tap)
        return out, bad, bad_bytes
    bad = bad_bytes = 0
    for m in _STRETCHES.finditer(firsts):
        part = packets[m.start():m.end()]
        if firsts[m.start()] < MARK_LIMIT:
            b, nb = join(part, out, tap)
            bad += b
            bad_bytes += nb
        else:
            out += coalesce(part, tap, partial=True)
    return out, bad, bad_bytes


def _open(request: DeviceRequest, tap: bool) -> TunDevice:
    offload = request.offload
    cut = getattr(request, "split", False) and not offload
    gro = request.gro and not offload and not cut
    handle = open_tun(request.name or None, tap=tap, vnet_hdr=offload or gro or cut,
                      offloads=offload or cut, ladder=_SPLIT_OFFLOADS if cut else _OFFLOAD_LADDER)
    size = READ_SIZE + VNET_HDR_LEN if offload or gro or cut else READ_SIZE
    dev = TunDevice(handle.fd, handle.name, tap=tap, read_size=size)
    dev.offload = handle.offload if offload else 0
    dev.gro = gro
    dev.split = cut
    dev.runs = cut and bool(getattr(request, "runs", False))
    return dev


def adopt(fd: int, state: Mapping[str, Any]) -> TunDevice:
    """A worker's :class:`TunDevice` around its copy of the master's descriptor."""
    dev = TunDevice(fd, str(state["name"]), tap=bool(state["tap"]),
                    read_size=int(state["read_size"]))
    dev.offload = int(state["offload"])
    dev.gro = bool(state["gro"])
    dev.split = bool(state["split"])
    dev.runs = bool(state.get("runs", False)) and dev.split
    dev.owner = False
    return dev


def open_tun_device(request: DeviceRequest) -> TunDevice:
    """Backend opener for ``type tun``."""
    return _open(request, tap=False)


def open_tap_device(request: DeviceRequest) -> TunDevice:
    """Backend opener for ``type ether``."""
    return _open(request, tap=True)
