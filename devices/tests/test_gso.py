"""vt_devices.gso: TCP super-packets cut into packets in user space, and real kernels
producing and taking them.

The unit tests cut hand-built super-packets and compare every segment, once the receiving
side's ``NEEDS_CSUM`` is applied as the kernel would, byte for byte with a packet built
independently (``test_gro.tcp4``) with complete checksums.  The netns test puts two tun
devices in ``split`` mode into two namespaces and relays between them in this process:
the kernels produce the super-packets (TCP segmentation offload), :func:`split` cuts
them, the other kernel takes the segments, and a file crosses byte-identical.
"""

from __future__ import annotations

import hashlib
import os
import random
import select
import struct
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest
from test_gro import ACK, DST4, FIN, MAC, PSH, SRC4, csum, finish_checksum, tcp4, tcp6
from vt_devices.gro import (
    F_NEEDS_CSUM,
    GSO_TCPV4,
    GSO_TCPV6,
    PLAIN,
    VNET_HDR,
    VNET_HDR_LEN,
    coalesce,
    l4_of,
    partial_header,
)
from vt_devices.gso import split

CWR = 0x80


def super4(seq: int, payload: bytes, mss: int, flags: int = ACK, ident: int = 100,
           tap: bool = False) -> bytes:
    """What an offload tun hands over: a virtio_net_hdr and one big TCP/IPv4 packet whose
    checksum field holds the pseudo-header sum."""
    p = tcp4(seq, payload, flags=flags, ident=ident)
    l3 = 14 if tap else 0
    info = l4_of(p, False)
    assert info is not None
    p = p[:36] + struct.pack("!H", info[2]) + p[38:]
    if tap:
        p = MAC + b"\x08\x00" + p
    return VNET_HDR.pack(F_NEEDS_CSUM, GSO_TCPV4, l3 + 40, mss, l3 + 20, 16) + p


def completed(seg: bytes, tap: bool = False) -> bytes:
    """The packet the receiving kernel ends up with: written with partial_header."""
    head, pkt = partial_header(seg, tap)
    return finish_checksum(head + pkt)


@pytest.mark.parametrize("flags", [ACK, ACK | PSH, ACK | PSH | FIN, ACK | CWR | PSH])
def test_ipv4_segments_are_the_packets_the_kernel_would_send(flags: int) -> None:
    data = os.urandom(1400 * 5 + 321)
    segs = split(super4(7_000, data, 1400, flags=flags, ident=65534))
    assert segs is not None and len(segs) == 6
    for i, seg in enumerate(segs):
        chunk = data[i * 1400:(i + 1) * 1400]
        want = flags & ~(FIN | PSH) if i < 5 else flags & ~CWR
        if 0 < i < 5:
            want &= ~CWR
        expect = tcp4(7_000 + i * 1400, chunk, flags=want, ident=(65534 + i) & 0xFFFF)
        assert csum(seg[:20]) == 0  # the IPv4 header checksum is complete
        assert completed(seg) == expect, i


def _ident_at_sum_wrap(mss: int) -> int:
    """The IPv4 ID at which a segment's header sum (all but the checksum) is 0xFFFF: one
    more and the checksum's one's-complement wraps."""
    c0 = struct.unpack("!H", tcp4(0, bytes(mss), ident=0)[10:12])[0]
    return c0 & 0xFFFF  # sum(ident 0) = 0xFFFF - c0, so c0 more make 0xFFFF


@pytest.mark.parametrize("case", ["plain", "id wraps", "sum wraps", "seq wraps", "cwr"])
def test_many_segments_near_id_checksum_and_sequence_wraps(case: str) -> None:
    """Twelve segments whose IPv4 ID, header checksum sum or TCP sequence number wraps
    somewhere inside the super-packet: still exactly the packets the kernel would send."""
    mss, count = 1000, 12
    data = os.urandom(mss * (count - 1) + 77)
    seqs = {"seq wraps": [2**32 - mss * k - 3 for k in range(1, 13)]}.get(case, [7_000])
    idents = {"id wraps": list(range(65520, 65536)),
              "sum wraps": [(_ident_at_sum_wrap(mss) - k) & 0xFFFF for k in range(-2, 14)],
              }.get(case, [100])
    flags = ACK | CWR | PSH if case == "cwr" else ACK | PSH
    for seq0 in seqs:
        for ident in idents:
            segs = split(super4(seq0, data, mss, flags=flags, ident=ident))
            assert segs is not None and len(segs) == count
            for i, seg in enumerate(segs):
                want = flags & ~(FIN | PSH) if i < count - 1 else flags & ~CWR
                if 0 < i < count - 1:
                    want &= ~CWR
                expect = tcp4(seq0 + i * mss, data[i * mss:(i + 1) * mss], flags=want,
                              ident=(ident + i) & 0xFFFF)
                assert csum(seg[:20]) == 0, (seq0, ident, i)
                assert completed(seg) == expect, (seq0, ident, i)


def test_ipv6_segments() -> None:
    data = os.urandom(3000)
    p = tcp6(1, data, flags=ACK | PSH)
    info = l4_of(p, False)
    assert info is not None
    p = p[:56] + struct.pack("!H", info[2]) + p[58:]
    segs = split(VNET_HDR.pack(F_NEEDS_CSUM, GSO_TCPV6, 60, 1000, 40, 16) + p)
    assert segs is not None and len(segs) == 3
    for i, seg in enumerate(segs):
        flags = ACK | PSH if i == 2 else ACK
        assert completed(seg) == tcp6(1 + i * 1000, data[i * 1000:(i + 1) * 1000], flags=flags)


def test_tap_segments_keep_the_ethernet_header() -> None:
    data = os.urandom(2500)
    segs = split(super4(5, data, 1000, tap=True), tap=True)
    assert segs is not None and [len(s) for s in segs] == [1054, 1054, 554]
    for i, seg in enumerate(segs):
        assert seg[:14] == MAC + b"\x08\x00"
        expect = tcp4(5 + i * 1000, data[i * 1000:(i + 1) * 1000], ident=100 + i)
        assert completed(seg, tap=True)[14:] == expect


def test_segments_join_back_into_one_super_packet() -> None:
    """The receiving side (gro.coalesce, partial) joins what split cut: one write."""
    data = os.urandom(1400 * 20)
    segs = split(super4(1, data, 1400))
    assert segs is not None
    writes = coalesce(segs, partial=True)
    assert len(writes) == 1 and writes[0][1] == 20
    buf = writes[0][0]
    assert buf[VNET_HDR_LEN + 40:] == data


def test_a_single_segment_is_written_with_needs_csum() -> None:
    """A TCP packet from a splitting peer carries only the pseudo-header sum: written alone,
    it must leave its checksum to the kernel, not be written as complete."""
    segs = split(super4(1, os.urandom(900), 1400))
    assert segs is not None and len(segs) == 1
    ((buf, count, _),) = coalesce(segs, partial=True)
    assert count == 1 and buf[0] == F_NEEDS_CSUM
    assert finish_checksum(buf) == tcp4(1, segs[0][40:], ident=100)
    assert coalesce(segs)[0][0][:VNET_HDR_LEN] == PLAIN  # without the feature: as before


def test_non_gso_needs_csum_where_the_peer_cannot_say_it_is_computed_here() -> None:
    p = tcp4(1, b"x" * 301)
    info = l4_of(p, False)
    assert info is not None
    partial = p[:36] + struct.pack("!H", info[2]) + p[38:]
    # Plain TCP: passed on partial (the peer's kernel completes it).
    assert split(VNET_HDR.pack(F_NEEDS_CSUM, 0, 0, 0, 20, 16) + partial) == [partial]
    # No NEEDS_CSUM: as it came.
    assert split(PLAIN + p) == [p]
    # An offset partial_header would not use (a checksum over the TCP payload, stored 18
    # bytes into it, seeded with 0): computed here, as the kernel would.
    odd = bytearray(p)
    odd[58:60] = b"\0\0"
    out = split(VNET_HDR.pack(F_NEEDS_CSUM, 0, 0, 0, 40, 18) + bytes(odd))
    assert out is not None and out[0][:58] == odd[:58] and out[0][60:] == odd[60:]
    assert csum(out[0][40:]) == 0


@pytest.mark.parametrize("header", [
    VNET_HDR.pack(F_NEEDS_CSUM, 5, 40, 1000, 20, 6),   # UDP L4 GSO: not asked for
    VNET_HDR.pack(F_NEEDS_CSUM, 3, 40, 1000, 20, 6),   # UFO
    VNET_HDR.pack(F_NEEDS_CSUM, GSO_TCPV4, 40, 0, 20, 16),  # no segment size
    VNET_HDR.pack(F_NEEDS_CSUM, GSO_TCPV6, 40, 1000, 20, 16),  # v6 type, v4 packet
])
def test_what_cannot_be_cut_is_refused(header: bytes) -> None:
    assert split(header + tcp4(1, os.urandom(3000))) is None


def test_garbage_never_raises() -> None:
    rng = __import__("random").Random(5)
    base = super4(1, os.urandom(4000), 1000)
    for _ in range(3000):
        buf = bytearray(base[:rng.randrange(0, len(base))])
        for _ in range(rng.randrange(1, 6)):
            if buf:
                buf[rng.randrange(len(buf))] = rng.randrange(256)
        split(bytes(buf))
        split(bytes(buf), tap=True)
        partial_header(bytes(buf), False)
        partial_header(bytes(buf), True)
        coalesce([bytes(buf), bytes(buf[10:])], partial=True)
        coalesce([bytes(buf), bytes(buf[10:])], tap=True, partial=True)


# ------------------------------------------------------------------------------ real kernels

RECV = r"""
import hashlib, socket, sys
srv = socket.create_server((sys.argv[1], int(sys.argv[2])))
srv.settimeout(20)
conn, _ = srv.accept()
conn.settimeout(20)
h, n = hashlib.sha256(), 0
while chunk := conn.recv(1 << 16):
    h.update(chunk)
    n += len(chunk)
print(n, h.hexdigest(), flush=True)
"""
SEND = r"""
import socket, sys, time
data = sys.stdin.buffer.read()
for _ in range(100):
    try:
        s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
        break
    except ConnectionRefusedError:
        time.sleep(0.05)
s.sendall(data)
s.shutdown(socket.SHUT_WR)
while s.recv(4096):
    pass
"""


class Relay(threading.Thread):
    """Moves packets between two split-mode devices, as two vt ends would, checking each
    segment; ``complete``: write each with its checksum computed here and an all-zero
    header (so the kernel takes it only if it is a valid packet by itself)."""

    def __init__(self, a, b, mtu: int, complete: bool, limit: int = 1, drop: int = 0,
                 tap: bool = False) -> None:
        super().__init__(daemon=True)
        self.devs = {a.fileno(): (a, b), b.fileno(): (b, a)}
        self.mtu = mtu
        self.complete = complete
        self.limit = limit
        """What each ``read_packets`` call asks for."""
        self.batches: list[int] = []
        """How many packets each call that returned some handed over."""
        self.stop = threading.Event()
        self.cut = 0
        """Reads that came out as more than one packet."""
        self.packets = 0
        self.errors: list[str] = []
        self.drop = drop
        """Lose one packet in ``drop`` at random (0: none), as a lossy underlay would."""
        self.rng = random.Random(drop)
        self.dropped = 0
        self.l3 = 14 if tap else 0
        self.marked = 0
        """Packets that were marked segments (vt_devices.runs)."""

    def run(self) -> None:
        try:
            self._relay()
        except Exception as exc:  # a dead relay must fail the test, not stall it
            self.errors.append(f"relay died: {exc!r}")
            raise

    def _relay(self) -> None:
        deadline = time.monotonic() + 60
        while not self.stop.is_set() and time.monotonic() < deadline:
            ready, _, _ = select.select(list(self.devs), [], [], 0.1)
            for fd in ready:
                src, dst = self.devs[fd]
                for _ in range(64):
                    packets = src.read_packets(self.limit)
                    if not packets:
                        break
                    self.batches.append(len(packets))
                    self.cut += len(packets) > 1
                    self.packets += len(packets)
                    self._check(packets)
                    if self.drop:
                        kept = [p for p in packets if self.rng.randrange(self.drop)]
                        self.dropped += len(packets) - len(kept)
                        packets = kept
                    if self.complete:
                        for p in packets:
                            os.write(dst.fileno(), PLAIN + self._full(p))
                    else:
                        dst.write_packets(packets)

    def _check(self, packets: list[bytes]) -> None:
        self.marked += sum(p[self.l3] < 0x20 and (not self.l3 or p[12:14] in (b"\x08\x00", b"\x86\xdd"))
                           for p in packets)
        for p in packets:
            if len(p) > self.mtu:
                self.errors.append(f"{len(p)}-byte packet over the MTU")
            if p[0] == 0x45 and csum(p[:20]):
                self.errors.append("bad IPv4 header checksum")

    @staticmethod
    def _full(p: bytes) -> bytes:
        info = l4_of(p, False)
        if info is None or p[0] >> 4 != 4:
            return p
        l4, field, _ = info
        seg = bytearray(p[l4:])
        seg[field - l4:field - l4 + 2] = b"\0\0"
        pseudo = p[12:20] + struct.pack("!BBH", 0, p[9], len(seg))
        seg[field - l4:field - l4 + 2] = struct.pack("!H", csum(pseudo + bytes(seg)))
        return p[:l4] + bytes(seg)


@pytest.fixture
def netns2(netns):
    """Two fresh namespaces (the second deleted here, the first by its own fixture)."""
    name = netns.name + "-b"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        yield netns, type(netns)(name)
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=10)


@pytest.mark.netns
@pytest.mark.parametrize(("complete", "runs", "drop", "tap"), [
    (False, True, 0, False), (False, False, 0, False), (True, False, 0, False),
    (False, True, 30, False), (False, False, 30, False), (False, True, 0, True),
    (False, True, 30, True)],
    ids=["marked", "needs-csum", "complete", "marked-lossy", "lossy", "tap-marked",
         "tap-marked-lossy"])
def test_kernels_make_and_take_the_segments(netns2, complete: bool, runs: bool,
                                            drop: int, tap: bool) -> None:
    """``marked``: the super-packets go as marked segments (vt_devices.runs), joined back
    on the other side; ``lossy``: with one in 30 lost on the way (partial runs); ``tap``:
    Ethernet frames, ARP among them."""
    from vt_devices.tun import open_tap_device, open_tun_device

    a, b = netns2
    devs = []
    try:
        for ns, name, mine, peer in ((a, "vgsoa", "10.77.0.1", "10.77.0.2"),
                                     (b, "vgsob", "10.77.0.2", "10.77.0.1")):
            with ns.entered():
                dev = (open_tap_device if tap else open_tun_device)(SimpleNamespace(
                    name=name, offload=False, gro=True, split=True))
            dev.runs = runs
            devs.append(dev)
            assert dev.split and not dev.gro
            ns.ip("addr", "add", mine, "peer", peer, "dev", name)
            ns.ip("link", "set", name, "mtu", "1400", "up")
        relay = Relay(devs[0], devs[1], 1400 + 14 * tap, complete, drop=drop, tap=tap)
        relay.start()
        data = os.urandom(1 << 20 if drop else 4 << 20)
        for src, dst, addr in ((b, a, "10.77.0.1"), (a, b, "10.77.0.2")):
            recv = subprocess.Popen(["ip", "netns", "exec", dst.name, sys.executable, "-c", RECV,
                                     addr, "5201"], stdout=subprocess.PIPE, text=True)
            try:
                send = subprocess.run(["ip", "netns", "exec", src.name, sys.executable, "-c",
                                       SEND, addr, "5201"], input=data, timeout=30,
                                      capture_output=True)
                out, _ = recv.communicate(timeout=30)
            finally:
                if recv.poll() is None:
                    recv.kill()
                    recv.wait()
            assert send.returncode == 0, send.stderr
            assert out.split() == [str(len(data)), hashlib.sha256(data).hexdigest()]
        relay.stop.set()
        relay.join(5)
        assert not relay.errors, relay.errors[:5]
        assert relay.cut > 0, "the kernels made no super-packets"
        assert devs[0].unsplit == devs[1].unsplit == 0
        assert relay.marked > 0 if runs else relay.marked == 0
        assert relay.dropped > 0 if drop else relay.dropped == 0
    finally:
        for dev in devs:
            dev.close()


def _bring_up(a, b) -> list:
    from vt_devices.tun import open_tun_device

    devs = []
    for ns, name, mine, peer in ((a, "vgsoa", "10.77.0.1", "10.77.0.2"),
                                 (b, "vgsob", "10.77.0.2", "10.77.0.1")):
        with ns.entered():
            devs.append(open_tun_device(SimpleNamespace(name=name, offload=False, gro=True,
                                                        split=True)))
        ns.ip("addr", "add", mine, "peer", peer, "dev", name)
        ns.ip("link", "set", name, "mtu", "1400", "up")
    return devs


@pytest.mark.netns
def test_a_split_read_hands_over_about_limit_packets_not_limit_super_packets(netns2) -> None:
    """The tunnel asks for ``limit`` packets per loop turn; in split mode one read may be
    a super-packet of ~45 segments, so the device stops reading once it has ``limit``
    (over by at most one read's segments: 49 at this MSS), instead of making ``limit``
    reads (up to ~45 x ``limit`` packets, and everything else waiting for them)."""
    a, b = netns2
    devs = []
    try:
        devs = _bring_up(a, b)
        limit = 16
        relay = Relay(devs[0], devs[1], 1400, complete=False, limit=limit)
        relay.start()
        data = os.urandom(8 << 20)
        recv = subprocess.Popen(["ip", "netns", "exec", a.name, sys.executable, "-c", RECV,
                                 "10.77.0.1", "5201"], stdout=subprocess.PIPE, text=True)
        try:
            send = subprocess.run(["ip", "netns", "exec", b.name, sys.executable, "-c", SEND,
                                   "10.77.0.1", "5201"], input=data, timeout=30,
                                  capture_output=True)
            out, _ = recv.communicate(timeout=30)
        finally:
            if recv.poll() is None:
                recv.kill()
                recv.wait()
        relay.stop.set()
        relay.join(5)
        assert send.returncode == 0, send.stderr
        assert out.split() == [str(len(data)), hashlib.sha256(data).hexdigest()]
        assert relay.cut > 0, "the kernels made no super-packets"
        assert max(relay.batches) >= limit, "never more than a limit's worth queued"
        assert max(relay.batches) <= limit - 1 + 49, max(relay.batches)
    finally:
        for dev in devs:
            dev.close()


def test_ipv4_header_helpers_agree() -> None:
    """l4_of's pseudo-header sum is the one the checksum needs (a sanity check of the
    helpers the tests above rely on)."""
    p = tcp4(1, b"abc")
    info = l4_of(p, False)
    assert info is not None
    pseudo = SRC4 + DST4 + struct.pack("!BBH", 0, 6, len(p) - 20)
    assert info[2] == (~csum(pseudo) & 0xFFFF or 0xFFFF)
