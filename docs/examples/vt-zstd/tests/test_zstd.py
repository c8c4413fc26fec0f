"""Unit tests of vt-zstd: the frame module and its registration.

Pure tests: no tunnel, no root.  They need vt-api, zstandard, and vtcore for
``vtcore.testing``'s frame-module harness.
"""

from __future__ import annotations

import os

import pytest
import zstandard
from vt_api import LinkSettings, Registry, Stage
from vt_api.compression import MARK_PACKED, MARK_RAW
from vtcore.testing import check_frame_module, link_settings, sample_packets

from vt_zstd import plugin
from vt_zstd.module import DEFAULT_MAX_FRAME, ZstdModule

TEXT = b"GET /index.html HTTP/1.1\r\nHost: example.org\r\n" * 30


def settings(compress: tuple[str, int] | None = ("zstd", 3),
             max_frame: int | None = None) -> LinkSettings:
    return link_settings(tunnel_type="tun", compress=compress, max_frame=max_frame)


def test_keeps_the_linker_contract() -> None:
    s = settings(max_frame=65536)
    report = check_frame_module(lambda: plugin.create(s), max_output=65536)
    assert report.round_trips == 200
    assert report.hostile == 2000 and report.broken == 0


@pytest.mark.parametrize("level", [1, 19])
def test_round_trip_compresses_text_and_keeps_random_data_raw(level: int) -> None:
    sender, receiver = ZstdModule(level), ZstdModule(level)
    packed = sender.encode(TEXT)
    assert packed[:1] == MARK_PACKED and len(packed) < len(TEXT) // 10
    assert receiver.decode(packed) == TEXT
    noise = os.urandom(1400)
    raw = sender.encode(noise)
    assert raw == MARK_RAW + noise  # did not shrink: sent as is
    assert receiver.decode(raw) == noise
    assert receiver.dropped == 0


def test_frames_are_independent_so_udp_may_lose_or_reorder_them() -> None:
    sender, receiver = ZstdModule(3), ZstdModule(3)
    frames = [sender.encode(p) for p in sample_packets()[:20]]
    for frame, packet in reversed(list(zip(frames, sample_packets()[:20], strict=True))):
        assert receiver.decode(frame) == packet


def test_a_frame_claiming_more_than_max_frame_is_dropped_before_decompressing() -> None:
    big = zstandard.ZstdCompressor().compress(bytes(DEFAULT_MAX_FRAME + 1))
    receiver = ZstdModule(3)
    assert receiver.decode(MARK_PACKED + big) is None
    small = ZstdModule(3, max_frame=100)
    assert small.decode(MARK_PACKED + zstandard.ZstdCompressor().compress(bytes(101))) is None
    assert small.decode(MARK_RAW + bytes(101)) is None
    assert (receiver.dropped, small.dropped) == (1, 2)


@pytest.mark.parametrize("frame", [b"", b"\x07abc", MARK_PACKED, MARK_PACKED + b"\x28\xb5\x2f\xfd"])
def test_garbage_is_dropped_and_counted(frame: bytes) -> None:
    module = ZstdModule(3)
    assert module.decode(frame) is None
    assert module.dropped == 1


def test_create_only_for_zstd_sessions_with_the_core_limit() -> None:
    assert plugin.create(settings(None)) is None
    assert plugin.create(settings(("zlib", 9))) is None
    module = plugin.create(settings(("zstd", 19), max_frame=131072))
    assert isinstance(module, ZstdModule) and module.max_frame == 131072
    assert plugin.create(settings()).max_frame == DEFAULT_MAX_FRAME


def test_registration_answers_compress_zstd_levels_1_to_19() -> None:
    registry = Registry()
    plugin.vt_register_frame_modules(registry=registry)
    item = registry.answering("compress", "zstd")
    assert item is not None and item.name == "zstd" and item.levels == (1, 19)
    assert Stage.COMPRESS < item.stage < Stage.ENCRYPT
    assert registry.answering("compress", "zlib") is None
    (module,) = registry.chain(settings())
    assert isinstance(module, ZstdModule)
