"""vtcore.testing, the plugin authors' kit: it passes a module that keeps the linker's
contract and names the rule that a broken module breaks."""

from __future__ import annotations

import pytest

from vtcore.api import LinkSettings
from vtcore.testing import (
    SIZES,
    check_frame_module,
    hostile_frames,
    icmp_echo,
    inet_checksum,
    link_settings,
    sample_packets,
)


class Xor:
    """Keeps the contract: a stateless byte transform, and a length check on decode."""

    def encode(self, frame: bytes) -> bytes | None:
        return bytes([len(frame) & 0xFF]) + bytes(b ^ 0x5A for b in frame)

    def decode(self, frame: bytes) -> bytes | None:
        if not frame or frame[0] != (len(frame) - 1) & 0xFF:
            return None
        return bytes(b ^ 0x5A for b in frame[1:])


class Raises(Xor):
    def decode(self, frame: bytes) -> bytes | None:
        return bytes(b ^ 0x5A for b in frame[1:]) if frame[0] == (len(frame) - 1) & 0xFF else None


class Lossy(Xor):
    def decode(self, frame: bytes) -> bytes | None:
        out = super().decode(frame)
        return out[:-1] if out and len(out) > 1000 else out


class Drops(Xor):
    def encode(self, frame: bytes) -> bytes | None:
        return None if len(frame) == 84 else super().encode(frame)


class Grows(Xor):
    def decode(self, frame: bytes) -> bytes | None:
        out = super().decode(frame)
        return out if out is not None else bytes(100_000)


class Text(Xor):
    def decode(self, frame: bytes) -> bytes | None:
        out = super().decode(frame)
        return out if out is not None else "dropped"  # type: ignore[return-value]


class BadBroken(Xor):
    broken = 0


class Breaks(Xor):
    """A stream module: bad input ends its stream for good, as vt-zlib's does."""

    def __init__(self) -> None:
        self.broken = False

    def decode(self, frame: bytes) -> bytes | None:
        if self.broken:
            return None
        out = super().decode(frame)
        self.broken = out is None
        return out


def test_sample_packets_are_deterministic_and_sized() -> None:
    a, b = sample_packets(50, seed=3), sample_packets(50, seed=3)
    assert a == b and a != sample_packets(50, seed=4)
    assert {len(p) for p in sample_packets(500)} == set(SIZES)
    assert all(p[:2] == b"\x45\x00" for p in a)


def test_inet_checksum_is_rfc_1071() -> None:
    assert inet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D  # RFC 1071's example
    assert inet_checksum(b"\x01") == 0xFEFF  # odd length: padded with a zero byte
    data = bytes.fromhex("0001f203f4f5f6f7") + (0x220D).to_bytes(2, "big")
    assert inet_checksum(data) == 0  # a header that carries its own sums to zero


def test_icmp_echo_is_a_valid_ipv4_ping() -> None:
    pkt = icmp_echo("10.0.0.1", "10.0.0.2", 0x1234, 7, b"payload!")
    assert len(pkt) == 20 + 8 + 8 and pkt[0] == 0x45 and pkt[9] == 1  # IPv4, ICMP
    assert int.from_bytes(pkt[2:4], "big") == len(pkt)
    assert pkt[12:16] == bytes([10, 0, 0, 1]) and pkt[16:20] == bytes([10, 0, 0, 2])
    assert inet_checksum(pkt[:20]) == 0 and inet_checksum(pkt[20:]) == 0
    assert pkt[20] == 8 and pkt[24:28] == bytes.fromhex("12340007") and pkt[28:] == b"payload!"


def test_link_settings_defaults_and_overrides() -> None:
    s = link_settings(compress=("zlib", 9), transport="udp")
    assert isinstance(s, LinkSettings)
    assert (s.host, s.role, s.compress, s.transport) == ("h", "server", ("zlib", 9), "udp")


def test_hostile_frames_mix_garbage_and_damaged_real_frames() -> None:
    good = [Xor().encode(p) for p in sample_packets(20)]
    bad = hostile_frames(good, 300)
    assert len(bad) == 300 and b"" in bad
    assert not set(bad) & set(good) - {b""}  # damaged: none is the peer's frame as sent
    assert any(len(f) > 300 for f in bad)  # cut or extended real frames, not only noise
    assert hostile_frames(good, 300) == bad  # seeded


def test_a_module_keeping_the_contract_passes() -> None:
    report = check_frame_module(Xor, hostile=500)
    assert report.round_trips == 200 and report.hostile == 500
    assert 0 < report.hostile_dropped <= 500 and report.broken == 0


def test_a_stream_that_breaks_goes_on_in_a_fresh_instance() -> None:
    report = check_frame_module(Breaks, hostile=300)
    assert report.broken == report.hostile_dropped > 100
    # Frames after the first break were still decoded: by fresh instances.
    assert report.hostile - report.hostile_dropped > 10


@pytest.mark.parametrize(
    ("module", "rule"),
    [
        (Raises, "decode raised on hostile input (0 bytes"),
        (Lossy, "round trip changed packet"),
        (Drops, "encode dropped packet"),
        (Grows, "decode returned 100000 bytes (> 2148)"),
        (Text, "decode returned str"),
        (BadBroken, "broken must be a bool, is int"),
    ],
)
def test_a_module_breaking_a_rule_is_named(module: type, rule: str) -> None:
    with pytest.raises(AssertionError) as err:
        check_frame_module(module, hostile=300, max_output=2148)
    assert rule in str(err.value)
    assert "\n" not in str(err.value)


def test_a_module_that_is_off_is_reported() -> None:
    with pytest.raises(AssertionError, match="make\\(\\) returned None for the sender"):
        check_frame_module(lambda: None)
