"""Frame codec: wire examples, vtund's reader quirks, and a chunking-independence fuzz
against a naive reference reader."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vtcore.protocol.frames import (
    BAD_FRAME,
    CONN_CLOSE,
    ECHO_REP,
    ECHO_REQ,
    FRAME_EOF,
    MAX_FRAME,
    StreamDecoder,
    decode_datagram,
    frame,
)
from vtcore.transports.base import VTUN_FRAMING

CTRL_ECHO_REQ, CTRL_ECHO_REP, CTRL_CONN_CLOSE = (
    VTUN_FRAMING.control(flag) for flag in (ECHO_REQ, ECHO_REP, CONN_CLOSE))


def reference_read(stream: bytes, max_frame: int = MAX_FRAME) -> tuple[list, int, int]:
    """vtund's tcp_read + linker loop, written the obvious way, for whole streams."""
    out, bad, unknown, pos = [], 0, 0, 0
    while len(stream) - pos >= 2:
        hdr = int.from_bytes(stream[pos : pos + 2], "big")
        pos += 2
        flen, flags = hdr & 0x0FFF, hdr & 0xF000
        if flen > max_frame:
            bad += 1
            pos += flen
            continue
        if flags:
            if flags in (CONN_CLOSE, ECHO_REQ, ECHO_REP):
                out.append((flags, b""))
            elif flags == BAD_FRAME:
                bad += 1
            else:
                unknown += 1
            continue
        if flen == 0:
            out.append((FRAME_EOF, b""))
            break
        if len(stream) - pos < flen:
            break
        out.append((0, stream[pos : pos + flen]))
        pos += flen
    return out, bad, unknown


def test_wire_examples() -> None:
    assert CTRL_ECHO_REQ == b"\x20\x00"
    assert CTRL_ECHO_REP == b"\x40\x00"
    assert CTRL_CONN_CLOSE == b"\x10\x00"
    packet = bytes(range(84))
    assert frame(packet) == b"\x00\x54" + packet
    dec = StreamDecoder()
    stream = CTRL_ECHO_REQ + CTRL_ECHO_REP + frame(packet) + CTRL_CONN_CLOSE
    assert dec.feed(stream) == [(ECHO_REQ, b""), (ECHO_REP, b""), (0, packet), (CONN_CLOSE, b"")]
    assert dec.buffered == 0


def test_frame_refuses_empty_and_oversize() -> None:
    with pytest.raises(ValueError):
        frame(b"")
    with pytest.raises(ValueError):
        frame(bytes(MAX_FRAME + 1))
    assert len(frame(bytes(4095), max_len=4095)) == 4097
    with pytest.raises(ValueError):
        frame(bytes(4096), max_len=10_000)


def test_zero_length_frame_is_eof_and_ends_decoding() -> None:
    dec = StreamDecoder()
    assert dec.feed(b"\x00\x01a\x00\x00\x00\x01b") == [(0, b"a"), (FRAME_EOF, b"")]
    assert dec.closed
    assert dec.feed(b"\x00\x01c") == []


def test_oversize_payload_is_skipped_across_feeds() -> None:
    dec = StreamDecoder()
    big = 3000
    stream = big.to_bytes(2, "big") + bytes(big) + frame(b"ok")
    got = []
    for i in range(0, len(stream), 700):
        got += dec.feed(stream[i : i + 700])
    assert got == [(0, b"ok")]
    assert dec.bad_frames == 1


def test_oversize_check_comes_before_flags() -> None:
    dec = StreamDecoder()
    # ECHO_REQ flag with an oversize length: vtund discards the length, no reply
    assert dec.feed(b"\x2f\xff" + bytes(0xFFF) + CTRL_ECHO_REQ) == [(ECHO_REQ, b"")]
    assert dec.bad_frames == 1


def test_control_frame_with_length_reads_no_payload() -> None:
    dec = StreamDecoder()
    # 0x2002 is an ECHO_REQ; the two bytes after it are the next header (vtund desync)
    assert dec.feed(b"\x20\x02\x00\x01z") == [(ECHO_REQ, b""), (0, b"z")]


def test_bad_and_unknown_flags() -> None:
    dec = StreamDecoder()
    assert dec.feed(b"\x80\x00\x30\x00\xf0\x00" + frame(b"x")) == [(0, b"x")]
    assert dec.bad_frames == 1
    assert dec.unknown_frames == 2


def test_buffer_stays_bounded() -> None:
    dec = StreamDecoder()
    header = MAX_FRAME.to_bytes(2, "big")
    dec.feed(header + bytes(MAX_FRAME - 1))
    assert dec.buffered == MAX_FRAME + 1
    assert dec.feed(b"\x01") == [(0, bytes(MAX_FRAME - 1) + b"\x01")]
    assert dec.buffered == 0


def test_larger_max_frame_for_native_mode() -> None:
    dec = StreamDecoder(max_frame=4095)
    payload = bytes(4000)
    assert dec.feed(frame(payload, max_len=4095)) == [(0, payload)]
    assert dec.bad_frames == 0


def test_accepts_bytearray_and_memoryview() -> None:
    dec = StreamDecoder()
    data = frame(b"abc")
    assert dec.feed(bytearray(data[:3])) == []
    assert dec.feed(memoryview(data)[3:]) == [(0, b"abc")]


@pytest.mark.parametrize(
    ("datagram", "expected"),
    [
        (b"\x20\x00", (ECHO_REQ, b"")),
        (b"\x40\x00", (ECHO_REP, b"")),
        (b"\x10\x00", (CONN_CLOSE, b"")),
        (b"\x00\x03abc", (0, b"abc")),
        (b"\x00\x00", (FRAME_EOF, b"")),
        (b"\x20\x01x", (ECHO_REQ, b"")),  # control payload ignored
        (b"\x00\x04abc", None),  # length mismatch
        (b"\x00\x02abc", None),
        (b"\x00", None),
        (b"", None),
        (b"\x80\x00", None),  # BAD_FRAME
        (b"\x30\x00", None),  # unknown combination
        (b"\x0f\xff" + bytes(0xFFF), None),  # over 2148
    ],
)
def test_decode_datagram(datagram: bytes, expected: tuple[int, bytes] | None) -> None:
    assert decode_datagram(datagram) == expected


frame_strategy = st.one_of(
    st.binary(min_size=1, max_size=300).map(frame),
    st.sampled_from(
        [
            CTRL_ECHO_REQ,
            CTRL_ECHO_REP,
            CTRL_CONN_CLOSE,
            b"\x80\x00",
            b"\x30\x00",
            b"\x00\x00",
            b"\x09\x00" + bytes(0x900),
        ]
    ),
    st.binary(max_size=40),  # garbage
)


@settings(max_examples=300)
@given(st.lists(frame_strategy, max_size=20), st.lists(st.integers(1, 600), min_size=1))
def test_chunking_does_not_matter(parts: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(parts)
    expected, bad, unknown = reference_read(stream)
    dec = StreamDecoder()
    got: list[tuple[int, bytes]] = []
    pos, i = 0, 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        got += dec.feed(stream[pos : pos + step])
        assert dec.buffered < 2 + MAX_FRAME
        pos += step
        i += 1
    assert got == expected
    assert (dec.bad_frames, dec.unknown_frames) == (bad, unknown)
    assert all(isinstance(p, bytes) for _, p in got)


@given(st.binary(max_size=5000))
def test_any_input_is_accepted(data: bytes) -> None:
    dec = StreamDecoder()
    for flags, payload in dec.feed(data):
        assert flags in (0, CONN_CLOSE, ECHO_REQ, ECHO_REP, FRAME_EOF)
        assert len(payload) <= MAX_FRAME
    assert dec.buffered < 2 + MAX_FRAME
    result = decode_datagram(data)
    assert result is None or len(result[1]) == len(data) - 2 or result[0] != 0
