"""Frames written by the real vtund (Debian 3.0.4-2, 64-bit) decode with vt_crypto.

See ``data/vtund_capture.json`` for how they were captured.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from vt_crypto import WORDS, make_codec

CAPTURE = json.loads((Path(__file__).parent / "data" / "vtund_capture.json").read_text())
PASSWORD = CAPTURE["password"].encode()


def ipv4_checksum_ok(header: bytes) -> bool:
    total = sum(int.from_bytes(header[i : i + 2], "big") for i in range(0, len(header), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


@pytest.mark.parametrize("name", ["aes128cbc", "aes256ofb", "blowfish128ecb", "oldblowfish128ecb"])
@pytest.mark.parametrize("direction", ["c2s", "s2c"])
def test_real_vtund_frames_decode(name: str, direction: str) -> None:
    codec = make_codec(WORDS[name], PASSWORD)
    packets = [codec.decode(bytes.fromhex(f)) for f in CAPTURE[name][direction]]
    assert codec.dropped == 0 and len(packets) == 3
    for p in packets:
        assert p is not None
        if p[0] >> 4 == 6:  # IPv6 router solicitation: payload length 8, ICMPv6, hop limit 255
            assert len(p) == 48 and p[4:8] == bytes.fromhex("00083aff")
        else:
            assert len(p) == 84 and p[:4] == bytes.fromhex("45000054") and p[9] == 1
            assert ipv4_checksum_ok(p[:20])


def test_real_vtund_blowfish_iv_mode_zeroes_first_four_bytes() -> None:
    """The 64-bit quirk as seen on the wire: vt decodes it; the bytes were zeroed at the sender."""
    codec = make_codec(WORDS["blowfish256cfb"], PASSWORD)
    (frame,) = CAPTURE["blowfish256cfb"]["s2c"]
    packet = codec.decode(bytes.fromhex(frame))
    assert packet is not None and len(packet) == 48
    assert packet[:4] == bytes(4) and packet[4:8] == bytes.fromhex("00083aff")
