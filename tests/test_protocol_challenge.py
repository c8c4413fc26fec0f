"""Challenge encoding and response: KATs from the spec and the Debian capture."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vtcore.protocol.challenge import chal_response, check_response, decode_chal, encode_chal
from vtcore.protocol.errors import ProtocolError

SERVER_CHAL = "<klllmfmaffhpdhcahnbiifmidiehankb>"
CLIENT_ANSWER = "<mnkdpplkfpahmlnfdgcoeoclaegonmdb>"


def test_encoding_example_from_spec() -> None:
    assert encode_chal(bytes([0x00, 0x1F, 0xA5]) + bytes(13))[:7] == "<aabpkf"


def test_captured_response_kat() -> None:
    chal = decode_chal(SERVER_CHAL)
    resp = chal_response(chal, b"secret123")
    assert encode_chal(resp) == CLIENT_ANSWER
    assert check_response(chal, resp, b"secret123")
    assert not check_response(chal, resp, b"secret124")
    assert not check_response(chal, resp[:15], b"secret123")


def test_decode_finds_brackets_inside_a_message() -> None:
    chal = decode_chal("OK CHAL: " + SERVER_CHAL + "\n")
    assert encode_chal(chal) == SERVER_CHAL
    assert decode_chal(SERVER_CHAL[:-1]) == chal  # '>' may be missing: end of string


@pytest.mark.parametrize(
    "text",
    [
        "",
        "no bracket",
        "<>",
        "<abc>",
        SERVER_CHAL[:-2] + ">",
        "<" + "q" * 32 + ">",
        "<" + "A" * 32 + ">",
        SERVER_CHAL[:-1] + "a>",
    ],
)
def test_decode_rejects(text: str) -> None:
    with pytest.raises(ProtocolError):
        decode_chal(text)


def test_xor_mode_matches_debian_patch() -> None:
    chal = bytes(range(16))
    pwd = b"abc"
    resp = chal_response(chal, pwd, sslauth=False)
    assert resp == bytes(c ^ pwd[i % 3] for i, c in enumerate(chal))
    assert check_response(chal, resp, pwd, sslauth=False)
    assert not check_response(chal, resp, pwd, sslauth=True)
    with pytest.raises(ValueError):
        chal_response(chal, b"", sslauth=False)
    assert not check_response(chal, resp, b"", sslauth=False)


def test_password_ends_at_nul_like_c() -> None:
    chal = bytes(16)
    assert chal_response(chal, b"pw\0junk") == chal_response(chal, b"pw")


def test_encode_rejects_wrong_length() -> None:
    with pytest.raises(ValueError):
        encode_chal(b"short")


@given(st.binary(min_size=16, max_size=16))
def test_roundtrip(b: bytes) -> None:
    text = encode_chal(b)
    assert len(text) == 34 and set(text[1:-1]) <= set("abcdefghijklmnop")
    assert decode_chal(text) == b


@given(st.text(max_size=80))
def test_decode_only_protocol_error(text: str) -> None:
    try:
        assert len(decode_chal(text)) == 16
    except ProtocolError:
        pass
