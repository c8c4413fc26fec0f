"""vtun framing over UDP: one frame per datagram after a port exchange on the TCP link.

Both sides bind a datagram socket to the local address and port of their TCP socket,
write their port as two bytes on TCP, read the peer's, close TCP and from then on
speak only UDP (spec section 3).  Debian's vtund writes the port little-endian; we
write it that way too and read either order (see :func:`~vtcore.protocol.udp.unpack_port`).
"""

from __future__ import annotations

import errno
import socket
import struct
import time
from collections.abc import Callable
from itertools import groupby, repeat
from operator import add

from vtcore.protocol.frames import FSIZE_MASK, MAX_FRAME, decode_datagram
from vtcore.protocol.udp import PeerPort, PortExchange
from vtcore.runtime.netio import drive, send_all
from vtcore.transports.base import VTUN_FRAMING, Endpoints, Framing, HeaderFraming, endpoints_of

RECV_SIZE = 65535
SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
GRO_CMSG_SPACE = socket.CMSG_SPACE(4)
"""Room for the ``UDP_GRO`` control message: the segment size, a C int."""
_int = struct.Struct("=i").unpack
GSO_MAX_SEGMENTS = 64
GSO_MAX_BYTES = 65000
_u16 = struct.Struct("=H").pack
_UNREACHABLE_ERRNOS = {
    errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENONET,
    errno.ENOPROTOOPT,
}
"""What an ICMP error for a connected socket (port, host, net unreachable...) turns into
on the next send or receive, or a local route to the peer missing.  Forgeable: it only
tells the tunnel to probe the peer (``UdpLink.on_unreachable``)."""
_DROP_ERRNOS = {
    errno.ENOBUFS, errno.EAGAIN, errno.EMSGSIZE,
    errno.EPERM,  # a local firewall dropped it
    *_UNREACHABLE_ERRNOS,
}


IP_MTU_DISCOVER, IP_PMTUDISC_DO, IP_MTU = 10, 2, 14
IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO, IPV6_MTU = 23, 2, 24
"""Linux's path MTU options (``<linux/in.h>``, ``<linux/in6.h>``)."""


def _dont_fragment(sock: socket.socket) -> bool:
    """Set DF on every datagram and let the kernel track the path MTU (ICMP "fragmentation
    needed" from a router lowers it; a datagram over it fails with EMSGSIZE, never goes
    out in fragments).  False where the socket refuses."""
    try:
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
    except OSError:
        return False
    return True


def path_mtu(sock: socket.socket) -> int | None:
    """The path MTU the kernel knows for a connected socket's peer, or None."""
    try:
        if sock.family == socket.AF_INET6:
            return sock.getsockopt(socket.IPPROTO_IPV6, IPV6_MTU)
        return sock.getsockopt(socket.IPPROTO_IP, IP_MTU)
    except OSError:  # not connected yet (nat_hack), or no such option
        return None


MTU_RECHECK = 10.0
"""Seconds between two reads of the path MTU while sending (DF links): the kernel forgets
a lowered one after ``net.ipv4.route.mtu_expires`` (10 min), and a session must grow back
with it, not keep the smallest it ever saw."""


SOCKET_BUFFER = 4 * 1024 * 1024
"""Datagrams queue here while the loop is busy: a burst must not overflow the default."""


def _grow_buffers(sock: socket.socket) -> None:
    for force, plain in ((getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF),
                         (getattr(socket, "SO_SNDBUFFORCE", 32), socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER)
        except OSError:  # not root: as much as net.core.[rw]mem_max allows
            try:
                sock.setsockopt(socket.SOL_SOCKET, plain, SOCKET_BUFFER)
            except OSError:
                pass


def _gso_supported(sock: socket.socket) -> bool:
    """Whether the kernel takes ``UDP_SEGMENT`` on this socket (Linux 4.18+)."""
    try:
        sock.setsockopt(SOL_UDP, UDP_SEGMENT, 0)
    except OSError:
        return False
    return True


def _gro_enabled(sock: socket.socket) -> bool:
    """Ask for ``UDP_GRO`` (Linux 5.0+): the kernel then hands a run of datagrams of one
    flow over in one receive, with their size in a control message.  False when refused."""
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError:
        return False
    return True


def _gro_size(data: bytes, ancdata: list) -> int:
    """The size of the datagrams one ``UDP_GRO`` receive joined (all but the last have
    it), or 0 when it holds a single datagram."""
    for level, kind, value in ancdata:
        if level == SOL_UDP and kind == UDP_GRO and len(value) >= 4:
            size = _int(value[:4])[0]
            return size if 0 < size < len(data) else 0
    return 0


def _cut(data: bytes, size: int, views: bool = False) -> list[bytes]:
    if not size:
        return [data]
    cut: Callable[[slice], bytes] = (
        memoryview(data).__getitem__ if views else data.__getitem__)  # type: ignore[assignment]
    n = len(data)
    return list(map(cut, map(slice, range(0, n, size), range(size, n + size, size))))


def _split(data: bytes, ancdata: list, views: bool = False) -> list[bytes]:
    """The datagrams of one ``UDP_GRO`` receive: all ``size`` bytes but the last
    (``views``: as memoryviews of ``data``)."""
    return _cut(data, _gro_size(data, ancdata), views)


def _data_run(data: bytes, ancdata: list, data_max: int,
              frames: list[tuple[int, bytes]], views: bool = False) -> list[bytes]:
    """A ``UDP_GRO`` receive of vtun frames: its full-size datagrams, when every one is a
    data frame (the header is the payload's length: checked a byte column at a time,
    ``data[0::size]``), go to ``frames`` in one go, without a Python step per datagram
    (~0.15 against ~0.6 us a datagram); ``views``: as memoryviews of ``data``, not
    copies.  Returned are the datagrams left to decode one by one: the last when it is
    shorter, or all when the run is mixed."""
    size = _gro_size(data, ancdata)
    if not size:
        return [data]
    n = len(data)
    full = n // size
    flen = size - 2
    if 0 < flen <= data_max and data[0::size][:full] == bytes((flen >> 8,)) * full \
            and data[1::size][:full] == bytes((flen & 0xFF,)) * full:
        end = full * size
        cut: Callable[[slice], bytes] = (
            memoryview(data).__getitem__ if views else data.__getitem__)  # type: ignore[assignment]
        frames += zip(repeat(0), map(cut, map(slice, range(2, end, size),
                                              range(size, end + size, size))))
        return [data[end:]] if end < n else []
    return _cut(data, size)


def _no_header(n: int) -> bytes:
    return b""


RAW_FRAMING = Framing(_no_header, _no_header, RECV_SIZE - 64)


class UdpLink(HeaderFraming):
    """Frames as datagrams.  Losses are the network's business: nothing is queued."""

    stream = False

    def __init__(self, sock: socket.socket, endpoints: Endpoints, connected: bool,
                 max_frame: int = MAX_FRAME, raw: bool = False, gso: bool = True,
                 vt_peer: bool = False) -> None:
        sock.setblocking(False)
        _grow_buffers(sock)
        self.gso = gso and _gso_supported(sock)
        """Send runs of equal-sized datagrams in one call (UDP GSO).  Only to a vt peer
        (``gso``): a run arrives whole, and vtund's receive buffer (the system default,
        ~208 KB, read a datagram at a time) overflows at its tail, where a run's short
        last datagram (a ping, an ACK) sits: vt client -> vtund server under load lost
        15-33 % of pings with runs, none datagram by datagram (bench/README.md)."""
        self.gso_max = 65535
        """Largest datagram GSO took on this path (learnt from EMSGSIZE/EINVAL)."""
        self.gro = _gro_enabled(sock)
        """Receive runs of datagrams in one call (UDP GRO); each is still a frame alone."""
        self.raw = raw
        """Datagrams are opaque frames (secure mode seals them): no vtun header."""
        self.views = False
        """Hand on the data frames of a ``UDP_GRO`` run as memoryviews of the receive
        buffer, not a copy each: set by the tunnel when no module reads them and the
        device takes views (live, the copies cost ~1.3 us a datagram: a 1.4 KB
        allocation each, beyond what the allocator keeps at hand).  A ``raw`` link's
        sealed frames too: the secure link that wraps it sets this, as it opens them
        within its own ``read_frames``."""
        framing = RAW_FRAMING if raw else VTUN_FRAMING
        self._header, self._control = framing.header, framing.control
        self._framing_max = self.max_payload = framing.max_payload
        self._overhead = (48 if sock.family == socket.AF_INET6 else 28) + len(framing.header(1))
        """Outer IP and UDP headers and this link's frame header: a datagram's share of
        the path MTU that is not payload."""
        self.sock = sock
        self.vt_peer = vt_peer
        """The peer is vt (native or secure): DF may be set (:meth:`follow_path_mtu`)."""
        self.df = False
        """Datagrams go with DF set: ``max_payload`` follows the path MTU."""
        self.path_mtu: int | None = None
        """The path MTU last learnt (DF links)."""
        self._mtu_at = time.monotonic()
        self.endpoints = endpoints
        self.connected = connected
        self.max_frame = max_frame
        self.bad_frames = 0
        self.dropped_out = 0
        self.peer_addr: tuple | None = None
        self.admit_first: Callable[[bytes], bool] | None = None
        """``nat_hack``: the first datagram names the peer.  When set (secure mode), only
        a datagram this accepts may: a forged one from elsewhere is counted and dropped."""
        self.on_peer: Callable[[tuple], None] | None = None
        """Called once with the address a ``nat_hack`` link connected to."""
        self.on_unreachable: Callable[[], None] | None = None
        """Called when an ICMP error says the peer may be gone (set by the tunnel)."""

    def follow_path_mtu(self) -> bool:
        """Contract 1.4 (``PathMtuLink``), asked by the tunnel: from now on DF on every
        datagram and ``max_payload`` within the path MTU.  Only to a vt peer (to vtund
        the datagrams go as vtund sends them: the kernel may fragment)."""
        if not self.vt_peer or not _dont_fragment(self.sock):
            return False
        self.df = True
        self._learn_mtu()
        return True

    def _learn_mtu(self) -> None:
        """DF links: ``max_payload`` from the path MTU the kernel knows now (at the start,
        the route's; later what a router's ICMP or a refused send taught it)."""
        if not self.df or not self.connected:
            return
        self._mtu_at = time.monotonic()
        mtu = path_mtu(self.sock)
        if mtu is None or mtu == self.path_mtu:
            return
        self.path_mtu = mtu
        self.max_payload = max(1, min(self._framing_max, mtu - self._overhead))

    def fileno(self) -> int:
        return self.sock.fileno()

    def ready(self) -> bool:
        return self.connected

    def read_frames(self, limit: int) -> list[tuple[int, bytes]]:
        """Up to about ``limit`` frames (one receive may bring up to 64 with UDP GRO);
        every datagram is decoded alone and a bad one is counted and dropped."""
        frames: list[tuple[int, bytes]] = []
        sock = self.sock
        gro = self.gro
        raw = self.raw
        max_frame = self.max_frame
        data_max = min(max_frame, FSIZE_MASK)
        append = frames.append
        for _ in range(limit):  # receive calls: bounded even when every datagram is bad
            if len(frames) >= limit:
                break
            try:
                if not self.connected:
                    data, anc, _, addr = sock.recvmsg(RECV_SIZE, GRO_CMSG_SPACE)
                    datagrams = _split(data, anc) if anc else [data]
                    first = self._take_peer(datagrams[0], addr)
                    if first is None:  # the rest came from the same stranger
                        self.bad_frames += len(datagrams) - 1
                        continue
                    append(first)
                    del datagrams[0]
                elif gro:
                    data, anc, _, _ = sock.recvmsg(RECV_SIZE, GRO_CMSG_SPACE)
                    if not anc:
                        datagrams = [data]
                    elif raw:
                        datagrams = _split(data, anc, self.views)
                    else:
                        datagrams = _data_run(data, anc, data_max, frames, self.views)
                else:
                    datagrams = [sock.recv(RECV_SIZE)]
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno in _UNREACHABLE_ERRNOS:
                    # An ICMP error (port unreachable: the peer's process is gone or not
                    # listening yet).  It was reported once; datagrams may follow.
                    self._unreachable()
                    continue
                if exc.errno == errno.EMSGSIZE:  # path MTU news, nothing lost here
                    self._learn_mtu()
                    continue
                raise EOFError(f"udp error: {exc.strerror or exc}") from None
            if raw:
                frames += zip(repeat(0), datagrams)
                continue
            for d in datagrams:
                # A data frame's header is its length (flag bits 0): taken here, without
                # the call (0.4 against 0.8 us a datagram); anything else is decoded.
                size = len(d) - 2
                if 0 < size <= data_max and (d[0] << 8 | d[1]) == size:
                    append((0, d[2:]))
                    continue
                frame = decode_datagram(d, max_frame)
                if frame is None:
                    self.bad_frames += 1
                else:
                    append(frame)
        return frames

    def _take_peer(self, data: bytes, addr: tuple) -> tuple[int, bytes] | None:
        """nat_hack: the first acceptable datagram tells us where the peer really is: a
        well-formed vtun frame (vtund takes any datagram; a stray one, a port scan, must
        not take the session) that ``admit_first``, when set (secure mode), accepts.
        Returns that datagram's frame, else None (counted)."""
        frame = (0, data) if self.raw else decode_datagram(data, self.max_frame)
        if frame is None or (self.admit_first is not None and not self.admit_first(data)):
            self.bad_frames += 1
            return None
        self.sock.connect(addr)
        self.connected = True
        self.peer_addr = addr
        self._learn_mtu()
        self.endpoints = endpoints_of(self.sock)
        if self.on_peer is not None:
            self.on_peer(addr)
        return frame

    def _write(self, parts: list[bytes]) -> None:
        """One datagram per header/payload pair; what the kernel refuses is dropped.

        Runs of equal-sized datagrams go out in one ``sendmsg`` with ``UDP_SEGMENT``
        (UDP GSO): the kernel cuts them into the same datagrams on the wire, so the peer
        (vt or vtund) sees nothing different, and we make one system call, not forty.
        """
        if not self.connected:
            self.dropped_out += len(parts) // 2
            return
        if self.df and time.monotonic() - self._mtu_at >= MTU_RECHECK:
            self._learn_mtu()
        n = len(parts)
        if not self.gso or n <= 2:
            for i in range(0, n, 2):
                self._send(parts[i : i + 2], 1)
            return
        # Datagram sizes and, for each, where its stretch of equal sizes ends: the loop
        # below steps a run at a time, not a datagram at a time.
        sizes = list(map(add, map(len, parts[0::2]), map(len, parts[1::2])))
        ends: list[int] = []
        for _, group in groupby(sizes):
            count = len(list(group))
            ends += repeat(len(ends) + count, count)
        total = n // 2
        i = 0
        while i < total:
            size = sizes[i]
            per = min(GSO_MAX_SEGMENTS, GSO_MAX_BYTES // max(size, 1))
            j = min(ends[i], i + per)
            # The run's last datagram may be shorter (as GSO allows).
            if j < total and j - i < per and sizes[j] < size:
                j += 1
            count = j - i
            if count == 1 or size > self.gso_max:
                for k in range(2 * i, 2 * j, 2):
                    self._send(parts[k : k + 2], 1)
            else:
                self._send(parts[2 * i : 2 * j], count, [(SOL_UDP, UDP_SEGMENT, _u16(size))])
            i = j

    def _send(self, parts: list[bytes], count: int, cmsg: list | None = None) -> None:
        try:
            if cmsg:
                self.sock.sendmsg(parts, cmsg)
            else:
                self.sock.sendmsg(parts)
        except OSError as exc:
            if cmsg:
                # Segments larger than the path allows (they would need IP fragments)
                # or no GSO on this route: datagram by datagram from now on at this size.
                size = len(parts[0]) + len(parts[1])
                self.gso_max = min(self.gso_max, size - 1)
                if exc.errno in (errno.EOPNOTSUPP, errno.EIO):
                    self.gso = False
                for k in range(0, len(parts), 2):
                    self._send(parts[k : k + 2], 1)
                return
            if exc.errno in _DROP_ERRNOS:
                self.dropped_out += count
                if exc.errno in _UNREACHABLE_ERRNOS:
                    self._unreachable()
                elif exc.errno == errno.EMSGSIZE:  # over the path MTU: learn it
                    self._learn_mtu()
                return
            raise

    def _unreachable(self) -> None:
        if self.on_unreachable is not None:
            self.on_unreachable()

    def backlog(self) -> int:
        return 0

    def flush(self) -> None:
        return None

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


async def open_udp_link(tcp: socket.socket, settings, timeout: float,
                        nat_hack: bool = False) -> UdpLink:
    """Exchange UDP ports over ``tcp``, close it, and return the datagram link."""
    local = tcp.getsockname()
    remote = tcp.getpeername()
    udp = socket.socket(tcp.family, socket.SOCK_DGRAM)
    try:
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        udp.bind(local)
        udp.setblocking(False)
        tcp.setblocking(False)
        # The server's UDP port is shared by all its sessions: until this socket is
        # connected, a datagram from another client setting up at the same moment could land
        # here (and this client's first one elsewhere, fatal to a zlib stream).  So the
        # server reads the client's port and connects before it tells its own: its client
        # sends nothing over UDP before then.  Every client writes first, so no deadlock.
        exchange = PortExchange(local[1], tcp_peer_port=remote[1])
        server_first = settings.role == "server"
        if not server_first:
            await send_all(tcp, exchange.announce(), timeout)
        event = await drive(tcp, exchange, timeout)
        assert isinstance(event, PeerPort)
        peer_port = event.port
        peer = (remote[0], peer_port, *remote[2:])
        if not nat_hack:
            udp.connect(peer)
        if server_first:
            await send_all(tcp, exchange.announce(), timeout)
    except BaseException:
        udp.close()
        raise
    finally:
        tcp.close()
    ends = Endpoints(local[0], local[1], remote[0], peer_port)
    return UdpLink(udp, ends, connected=not nat_hack,
                   max_frame=settings.max_frame or MAX_FRAME,
                   raw=settings.secure is not None,
                   # Runs of datagrams only where the peer is vt (native formats agreed:
                   # it reads them with UDP_GRO into a 4 MiB buffer), never to vtund.
                   gso=settings.native or settings.secure is not None,
                   # DF (no fragment on the wire) to a vt peer only, whose packets that
                   # do not fit are answered "too big" into the device; to vtund as
                   # vtund does: the kernel may fragment.
                   vt_peer=settings.native or settings.secure is not None)
