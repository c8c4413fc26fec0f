"""vt-zlib: wire-compatible with vtund's lfd_zlib.c (byte-exact with the stock zlib engine),
bounded and non-raising on bad input; the native path's raw frames."""

from __future__ import annotations

import random
import tracemalloc
import zlib

import pytest
from vt_zlib.codec import DRAIN_LIMIT, ZlibModule
from vt_zlib.plugin import create, max_frame, vt_register_frame_modules

from vtcore.api import FrameModule, Registry, Stage
from vtcore.testing import check_frame_module, link_settings, sample_packets

PACKETS = [
    b"vt zlib known answer, packet one. " * 3,
    bytes(range(64)),
    b"vt zlib known answer, packet one. " + bytes(40),
]

# Frames vtund (deflateInit(level) + deflate(Z_SYNC_FLUSH) per packet) sends for PACKETS.
VECTORS = {
    1: [
        "78012a2b51a8cac94c52c8cecb2fcf5348cc2b2e4f2dd25128484cce4e2d51c8cf4bd55328a3820a"
        "00000000ffff",
        "6260646266616563e7e0e4e2e6e1e5e3171014121611151397909492969195935750545256515553"
        "d7d0d4d2d6d1d5d33730343236313533b7b0b4b2b6b1b5b307000000ffff",
        "22ec06062201000000ffff",
    ],
    9: [
        "78da2a2b51a8cac94c52c8cecb2fcf5348cc2b2e4f2dd25128484cce4e2d51c8cf4bd55328a3820a"
        "00000000ffff",
        "6260646266616563e7e0e4e2e6e1e5e3171014121611151397909492969195935750545256515553"
        "d7d0d4d2d6d1d5d33730343236313533b7b0b4b2b6b1b5b307000000ffff",
        "22c2062201000000ffff",
    ],
}


# --------------------------------------------------------------------------- known answers


@pytest.mark.parametrize("level", [1, 9])
def test_known_answer_vectors(level: int) -> None:
    mod = ZlibModule(level, engine=zlib)
    assert [mod.encode(p).hex() for p in PACKETS] == VECTORS[level]
    peer = ZlibModule(level)
    assert [peer.decode(bytes.fromhex(f)) for f in VECTORS[level]] == PACKETS


def test_level_9_header_and_sync_marker() -> None:
    mod = ZlibModule(9)
    frames = [mod.encode(p) for p in sample_packets(50)]
    assert frames[0][:2] == b"\x78\xda"
    assert all(f.endswith(b"\x00\x00\xff\xff") for f in frames)
    assert not any(f.startswith(b"\x78\xda") for f in frames[1:])


def test_level_0_is_level_1() -> None:
    assert ZlibModule(0, engine=zlib).encode(PACKETS[0]).hex() == VECTORS[1][0]


@pytest.mark.parametrize("level", [1, 6, 9])
def test_our_frames_decode_with_reference_inflater(level: int) -> None:
    packets = sample_packets()
    mod = ZlibModule(level)
    ref = zlib.decompressobj()
    assert [ref.decompress(mod.encode(p)) for p in packets] == packets


def test_reference_frames_decode_with_our_module() -> None:
    packets = sample_packets()
    ref = zlib.compressobj(9)
    mod = ZlibModule(1)
    got = [mod.decode(ref.compress(p) + ref.flush(zlib.Z_SYNC_FLUSH)) for p in packets]
    assert got == packets
    assert mod.dropped == 0


def test_default_engine_is_zlib_ng_and_differs_from_stock_bytes() -> None:
    """zlib-ng at level 1 writes other bytes than vtund's zlib; both inflate the same."""
    packets = sample_packets(50)
    fast, stock = ZlibModule(1), ZlibModule(1, engine=zlib)
    fast_frames = [fast.encode(p) for p in packets]
    assert fast_frames != [stock.encode(p) for p in packets]
    ref = zlib.decompressobj()
    assert [ref.decompress(f) for f in fast_frames] == packets


def test_frame_of_exactly_max_frame_passes() -> None:
    packet = bytes(range(256)) * 8 + b"x" * 100  # 2148 bytes
    assert len(packet) == 2148
    assert ZlibModule().decode(ZlibModule().encode(packet)) == packet


# --------------------------------------------------------------------------- bad input


def test_bomb_is_dropped_with_bounded_memory_and_stream_stays_in_step() -> None:
    peer = ZlibModule(9)
    mod = ZlibModule(9)
    assert mod.decode(peer.encode(b"first")) == b"first"
    bomb = peer.encode(bytes(1 << 20))
    assert len(bomb) < 4096
    tracemalloc.start()
    try:
        assert mod.decode(bomb) is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024
    assert mod.dropped == 1
    assert not mod.broken
    # The stream was inflated to the end of the bomb, so later frames still decode.
    assert mod.decode(peer.encode(b"after" * 10)) == b"after" * 10


def test_frame_just_over_limit_is_dropped() -> None:
    peer, mod = ZlibModule(), ZlibModule(max_frame=100)
    assert mod.decode(peer.encode(b"y" * 101)) is None
    assert mod.dropped == 1
    assert mod.decode(peer.encode(b"y" * 100)) == b"y" * 100


def test_bomb_beyond_drain_limit_breaks_stream() -> None:
    ref = zlib.compressobj(9)
    mod = ZlibModule()
    head = ref.compress(b"") + ref.flush(zlib.Z_SYNC_FLUSH)
    assert mod.decode(head) == b""
    huge = ref.compress(bytes(DRAIN_LIMIT + 100_000)) + ref.flush(zlib.Z_SYNC_FLUSH)
    assert mod.decode(huge) is None
    assert mod.broken and mod.errors == 1 and mod.dropped == 1


def test_garbage_first_frame_is_dropped_not_raised() -> None:
    mod = ZlibModule()
    assert mod.decode(b"\x00garbage not zlib") is None
    assert mod.broken and mod.dropped == 1 and mod.errors == 1


@pytest.mark.parametrize("flip_at", [0, 1, 2, 5, 10])
def test_corrupt_frame_never_raises(flip_at: int) -> None:
    peer, mod = ZlibModule(9), ZlibModule(9)
    frame = bytearray(peer.encode(PACKETS[0] * 4))
    frame[flip_at] ^= 0xFF
    out = mod.decode(bytes(frame))
    # Either detected (dropped) or, at worst, garbage of bounded size: never an exception.
    assert out is None or len(out) <= mod.max_frame
    if out is None:
        assert mod.dropped == 1


@pytest.mark.parametrize("cut", [1, 4, 0.5])
def test_truncated_frame_breaks_stream_and_later_frames_drop(cut: float) -> None:
    peer, mod = ZlibModule(9), ZlibModule(9)
    packets = sample_packets(30, seed=3)
    frames = [peer.encode(p) for p in packets]
    for f, p in zip(frames[:10], packets[:10], strict=True):
        assert mod.decode(f) == p
    keep = len(frames[10]) - cut if isinstance(cut, int) else int(len(frames[10]) * cut)
    assert mod.decode(frames[10][:keep]) is None
    assert mod.broken and mod.errors == 1 and mod.dropped == 1
    # The stream is lost for good: nothing later is delivered, everything is counted.
    assert all(mod.decode(f) is None for f in frames[11:])
    assert mod.dropped == 1 + len(frames[11:])
    assert mod.errors == 1


def test_inflate_error_breaks_stream() -> None:
    peer, mod = ZlibModule(), ZlibModule()
    assert mod.decode(peer.encode(b"ok")) == b"ok"
    assert mod.decode(b"\xff\xff\xff\x00\x00\xff\xff") is None
    assert mod.broken and mod.errors == 1
    assert mod.decode(peer.encode(b"later")) is None
    assert mod.dropped == 2


@pytest.mark.parametrize("transport", ["tcp", "udp"])
@pytest.mark.parametrize("native", [False, True])
@pytest.mark.parametrize("level", [1, 9])
def test_keeps_the_linker_contract(transport: str, native: bool, level: int) -> None:
    """vtcore.testing's check: round trips between two sessions' modules; damaged, cut and
    random frames never raise, stay within max_frame, and a broken stream only drops."""
    s = link_settings(compress=("zlib", level), transport=transport, native=native, max_frame=65535 if native else None)
    report = check_frame_module(lambda: create(s), max_output=max_frame(s))
    assert report.broken > 0  # bad input ends a zlib stream, as vtund's does


def test_stream_end_from_peer_is_an_error() -> None:
    mod = ZlibModule()
    assert mod.decode(zlib.compress(b"whole stream")) is None
    assert mod.broken


# --------------------------------------------------------------------------- registration


def test_registration_and_factory() -> None:
    reg = Registry(current_plugin="zlib")
    vt_register_frame_modules(reg)
    item = reg.frame_modules["zlib"]
    assert item.stage == Stage.COMPRESS
    assert reg.answering("compress", "zlib") is item
    assert reg.answering("compress", "lzo") is None
    assert item.levels == (1, 9)
    assert item.describe == "compress zlib:1-9"
    assert create(link_settings()) is None
    assert create(link_settings(compress=("lzo", 1))) is None
    mod = create(link_settings(compress=("zlib", 9)))
    assert isinstance(mod, FrameModule) and isinstance(mod, ZlibModule)
    assert mod.level == 9 and mod.max_frame == 2148
    assert reg.chain(link_settings(compress=("zlib", 3)))[0].level == 3


def test_factory_reads_max_frame() -> None:
    mod = create(link_settings(compress=("zlib", 1), transport="udp", max_frame=1500))
    assert mod is not None
    assert mod.max_frame == 1500


# --------------------------------------------------------------------------- native path


def test_native_frames_carry_a_marker_and_round_trip() -> None:
    packets = sample_packets(100)
    tx, rx = ZlibModule(1, native=True), ZlibModule(1, native=True)
    frames = [tx.encode(p) for p in packets]
    assert all(f[0] in (0, 1) for f in frames)
    # Compressible traffic: nearly every frame packed (a frame that shrinks too little
    # sends the next one raw).
    assert sum(f[0] == 1 for f in frames) >= 95
    assert [rx.decode(f) for f in frames] == packets
    assert tx.adaptive is not None and tx.adaptive.raw_frames <= 5


def test_native_incompressible_frames_go_raw_and_stream_stays_in_step() -> None:
    rng = random.Random(5)
    noise = [rng.randbytes(1400) for _ in range(300)]
    text = sample_packets(40, seed=9)
    tx, rx = ZlibModule(1, native=True), ZlibModule(1, native=True)
    frames = [tx.encode(p) for p in noise + text + noise[:50] + text]
    raw = [f for f in frames[:300] if f[0] == 0]
    # One try in up to 65 frames once the backoff is at its cap.
    assert len(raw) > 250
    assert all(f[1:] in noise for f in raw)
    got = [rx.decode(f) for f in frames]
    assert got == noise + text + noise[:50] + text
    # Compression resumes on compressible data: the second text run is mostly packed.
    tail = frames[-40:]
    assert sum(f[0] == 1 for f in tail) >= 30
    assert rx.dropped == 0 and not rx.broken


def test_native_raw_frame_over_limit_is_dropped_and_bad_marker_breaks() -> None:
    rx = ZlibModule(1, max_frame=100, native=True)
    assert rx.decode(b"\x00" + b"x" * 101) is None
    assert rx.dropped == 1 and not rx.broken
    assert rx.decode(b"\x00" + b"x" * 100) == b"x" * 100
    assert rx.decode(b"") is None
    assert rx.decode(b"\x07" + b"x" * 10) is None
    assert rx.broken and rx.errors == 1


def test_vtun_wire_has_no_marker() -> None:
    """Without native framing every frame is compressed, as vtund expects."""
    rng = random.Random(6)
    tx = ZlibModule(1)
    assert tx.adaptive is None
    ref = zlib.decompressobj()
    for _ in range(100):
        p = rng.randbytes(1000)
        assert ref.decompress(tx.encode(p)) == p


def test_factory_passes_native() -> None:
    mod = create(link_settings(compress=("zlib", 1), native=True, max_frame=131072))
    assert mod is not None and mod.native and mod.max_frame == 131072
    assert not create(link_settings(compress=("zlib", 1))).native
