"""vt-lzo: raw LZO1X blocks per frame as vtund's lfd_lzo.c; bad frames dropped, not raised."""

from __future__ import annotations

import random
import tracemalloc

import lzo
import pytest
from vt_lzo.codec import LzoModule, lzo_level
from vt_lzo.plugin import STAGE, create, max_frame, vt_register_frame_modules

from vtcore.api import FrameModule, Registry, Stage
from vtcore.testing import check_frame_module, link_settings, sample_packets

PACKETS = [
    b"vt lzo known answer, packet one. " * 3,
    bytes(range(64)),
    b"vt lzo known answer, packet one. " + bytes(40),
]

# Raw LZO1X blocks for PACKETS: lzo1x_1 (python-lzo level 1) and lzo1x_999 (level 9).
VECTORS = {
    1: [
        "00147674206c7a6f206b6e6f776e20616e737765722c207061636b6574206f6e652e207674206c7a20"
        "0b80000e7765722c207061636b6574206f6e652e20110000",
        "51000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20212223242526"
        "2728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f110000",
        "00127674206c7a6f206b6e6f776e20616e737765722c207061636b6574206f6e652e200000003204"
        "000e0000000000000000000000000000000000110000",
    ],
    9: [
        "327674206c7a6f206b6e6f776e20616e737765722c207061636b6574206f6e652e2020218000110000",
        "51000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20212223242526"
        "2728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f110000",
        "337674206c7a6f206b6e6f776e20616e737765722c207061636b6574206f6e652e200020060000110000",
    ],
}


@pytest.mark.parametrize("level", [1, 9])
def test_known_answer_vectors(level: int) -> None:
    mod = LzoModule(level)
    assert [mod.encode(p).hex() for p in PACKETS] == VECTORS[level]
    assert [mod.decode(bytes.fromhex(f)) for f in VECTORS[level]] == PACKETS


def test_levels_map_to_lzo1x_1_or_999() -> None:
    assert [lzo_level(n) for n in range(10)] == [1] * 9 + [9]
    assert LzoModule(5).encode(PACKETS[0]).hex() == VECTORS[1][0]


@pytest.mark.parametrize("level", [1, 5, 9])
def test_round_trip_is_stateless(level: int) -> None:
    packets = sample_packets()
    a, b = LzoModule(level), LzoModule(level)
    frames = [a.encode(p) for p in packets]
    assert [b.decode(f) for f in frames] == packets
    # Stateless: any order decodes, and re-encoding gives the same bytes.
    assert [b.decode(f) for f in reversed(frames)] == packets[::-1]
    assert [a.encode(p) for p in packets] == frames


@pytest.mark.parametrize("ref_level", [1, 9])
def test_decodes_reference_frames(ref_level: int) -> None:
    mod = LzoModule(1)
    for p in sample_packets(50):
        assert mod.decode(lzo.compress(p, ref_level, False)) == p
    assert mod.dropped == 0


def test_frame_of_exactly_max_frame_passes_and_one_more_drops() -> None:
    mod = LzoModule()
    ok = bytes(range(256)) * 8 + b"x" * 100
    assert mod.decode(lzo.compress(ok, 1, False)) == ok
    assert mod.decode(lzo.compress(ok + b"x", 1, False)) is None
    assert mod.dropped == 1


def test_bomb_dropped_memory_bounded_next_frame_decodes() -> None:
    mod = LzoModule()
    bomb = lzo.compress(bytes(1 << 20), 1, False)
    tracemalloc.start()
    try:
        assert mod.decode(bomb) is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024
    assert mod.dropped == 1
    assert mod.decode(mod.encode(b"good")) == b"good"


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"\x11",
        b"\xff" * 40,
        bytes.fromhex(VECTORS[1][0])[:-3],  # truncated: no end-of-stream marker
        bytes.fromhex(VECTORS[1][0])[:10],
        bytes.fromhex(VECTORS[9][0]) + b"junk",  # trailing bytes
    ],
)
def test_bad_frames_dropped_and_later_good_frames_decode(bad: bytes) -> None:
    mod = LzoModule()
    assert mod.decode(bad) is None
    assert mod.dropped == 1
    assert mod.decode(bytes.fromhex(VECTORS[9][2])) == PACKETS[2]


@pytest.mark.parametrize("native", [False, True])
@pytest.mark.parametrize("level", [1, 9])
def test_keeps_the_linker_contract(native: bool, level: int) -> None:
    """vtcore.testing's check: round trips between two sessions' modules; damaged, cut and
    random frames never raise and never decode beyond max_frame."""
    s = link_settings(compress=("lzo", level), native=native, max_frame=65535 if native else None)
    report = check_frame_module(lambda: create(s), max_output=max_frame(s))
    assert report.hostile_dropped > 0 and report.broken == 0  # stateless: nothing to break


def test_registration_and_factory() -> None:
    reg = Registry(current_plugin="lzo")
    vt_register_frame_modules(reg)
    item = reg.frame_modules["lzo"]
    assert item.stage == STAGE and Stage.COMPRESS < STAGE < Stage.ENCRYPT
    assert reg.answering("compress", "lzo") is item
    assert reg.answering("compress", "zlib") is None
    assert item.words == {"lzo": 2} and item.levels == (1, 9)
    assert create(link_settings()) is None
    assert create(link_settings(compress=("zlib", 1))) is None
    mod = create(link_settings(compress=("lzo", 9), max_frame=1500))
    assert isinstance(mod, FrameModule) and isinstance(mod, LzoModule)
    assert mod.max_frame == 1500
    assert mod.decode(lzo.compress(b"z" * 1501, 1, False)) is None


# --------------------------------------------------------------------------- native path


def test_native_round_trip_with_markers() -> None:
    rng = random.Random(4)
    noise = [rng.randbytes(1400) for _ in range(200)]
    line = b"GET /static/app.js HTTP/1.1\r\nHost: example.org\r\nAccept: */*\r\n\r\n"
    text = [(line * (1 + i % 20))[:1400] for i in range(60)]
    tx, rx = LzoModule(1, native=True), LzoModule(1, native=True)
    packets = text + noise + text + text
    frames = [tx.encode(p) for p in packets]
    assert all(f[0] in (0, 1) for f in frames)
    assert [rx.decode(f) for f in frames] == packets
    # Noise goes out raw (tried or not); compressible text is packed again after the
    # next try (at most MAX_SKIP frames later).
    assert all(f[0] == 0 for f in frames[60:260])
    assert tx.adaptive is not None and tx.adaptive.raw_frames > 150
    assert sum(f[0] == 1 for f in frames[-60:]) >= 40
    assert rx.dropped == 0


def test_native_bad_marker_and_oversized_raw_frame_drop() -> None:
    rx = LzoModule(1, max_frame=100, native=True)
    assert rx.decode(b"\x00" + b"x" * 101) is None
    assert rx.decode(b"\x05" + lzo.compress(b"x" * 50, 1, False)) is None
    assert rx.decode(b"\x00") is None
    assert rx.dropped == 3
    assert rx.decode(b"\x01" + lzo.compress(b"x" * 50, 1, False)) == b"x" * 50
    assert rx.decode(b"\x00" + b"y" * 100) == b"y" * 100


def test_vtun_wire_has_no_marker_and_factory_passes_native() -> None:
    tx = LzoModule(1)
    assert tx.adaptive is None
    assert tx.encode(PACKETS[0]).hex() == VECTORS[1][0]
    assert create(link_settings(compress=("lzo", 1), native=True)).native
    assert not create(link_settings(compress=("lzo", 1))).native
