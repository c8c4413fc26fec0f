"""OK FLAGS string: vtund's order when writing, vtund's client rules when reading."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vtcore.protocol.errors import ProtocolError
from vtcore.protocol.flags import LEGACY_ENCRYPT, Flags, format_flags, parse_flags

VERIFIED = {
    "<Tu>": Flags(type="tun"),
    "<TuE10>": Flags(type="tun", encrypt=10),
    "<TuE14>": Flags(type="tun", encrypt=14),
    "<TuC9>": Flags(type="tun", zlib=9),
    "<TuL9>": Flags(type="tun", lzo=9),
    "<TuE>": Flags(type="tun", encrypt=LEGACY_ENCRYPT),
    "<TuC9KE15>": Flags(type="tun", zlib=9, keepalive=True, encrypt=15),
    "<TuS128C2KE1>": Flags(type="tun", speed=128, zlib=2, keepalive=True, encrypt=1),
    "<TuC9K>": Flags(type="tun", zlib=9, keepalive=True),
    "<UeL1E14>": Flags(proto="udp", type="ether", lzo=1, encrypt=14),
    "<TtE>": Flags(encrypt=LEGACY_ENCRYPT),
    "<Tp>": Flags(type="pipe"),
    "<TuS0>": Flags(type="tun", speed=0),
}


@pytest.mark.parametrize(("text", "flags"), VERIFIED.items())
def test_spec_examples_both_ways(text: str, flags: Flags) -> None:
    assert format_flags(flags) == text
    assert parse_flags(text) == flags
    assert parse_flags(f"OK FLAGS: {text}\n") == flags


@pytest.mark.parametrize(
    ("text", "flags"),
    [
        ("<KE10uT>", Flags(type="tun", keepalive=True, encrypt=10)),  # any order
        ("<UTu>", Flags(type="tun")),  # T/U replace
        ("<TuC 9>", Flags(type="tun", zlib=9)),  # strtol skips blanks
        ("<TuC+3>", Flags(type="tun", zlib=3)),
        ("<TuE0>", Flags(type="tun", encrypt=LEGACY_ENCRYPT)),
        ("<TuC1C7>", Flags(type="tun", zlib=7)),  # last wins
        ("<TuF>", Flags(type="tun")),  # F reserved, ignored
        ("<TuFK>", Flags(type="tun", keepalive=True)),
        ("<uu>", Flags(type="tun")),
        ("<T>", Flags()),  # no type letter: default tty
        ("<TuE35>", Flags(type="tun", encrypt=35)),
        ("<TuC4294967329>", Flags(type="tun", zlib=33)),  # long -> int wraps
    ],
)
def test_client_rules(text: str, flags: Flags) -> None:
    assert parse_flags(text) == flags


@pytest.mark.parametrize(
    "text",
    [
        "",
        "OK FLAGS: Tu",
        "<Tu",  # no closing '>'
        "<TuC>",  # C needs digits
        "<TuL>",
        "<TuS>",
        "<TuC34>",  # the ERANGE quirk
        "<TuL34>",
        "<TuS34>",
        "<TuE34>",
        "<TuC4294967330>",  # wraps to 34
        "<TuX>",
        "<Tu\n>",
        "<Tut>",  # two types
        "<TuC1L1>",  # zlib and lzo
        "<TuFxyz>",  # extras only when allowed
    ],
)
def test_client_rejects(text: str) -> None:
    with pytest.raises(ProtocolError):
        parse_flags(text)


def test_extra_for_native_mode() -> None:
    flags = Flags(type="tun", keepalive=True, extra="vt1")
    text = format_flags(flags)
    assert text == "<TuKFvt1>"
    assert parse_flags(text, allow_extra=True) == flags
    with pytest.raises(ProtocolError):
        parse_flags(text)  # a vtund client would fail too: never send it to vtund


def test_format_rejects_unknown_values() -> None:
    with pytest.raises(ValueError):
        format_flags(Flags(proto="sctp"))
    with pytest.raises(ValueError):
        format_flags(Flags(extra="a>b"))


flags_strategy = st.builds(
    Flags,
    proto=st.sampled_from(["tcp", "udp"]),
    type=st.sampled_from(["tty", "pipe", "ether", "tun"]),
    speed=st.none() | st.integers(0, 100000).filter(lambda v: v != 34),
    zlib=st.none() | st.integers(1, 9),
    lzo=st.none(),
    keepalive=st.booleans(),
    encrypt=st.none() | st.sampled_from([*range(1, 17), LEGACY_ENCRYPT]),
)


@given(flags_strategy)
def test_roundtrip(flags: Flags) -> None:
    assert parse_flags(format_flags(flags)) == flags


@given(st.text(alphabet="<>TUtpeuSCLKEF0123456789 -+x\n", max_size=30), st.booleans())
def test_parse_only_protocol_error(text: str, allow_extra: bool) -> None:
    try:
        result = parse_flags(text, allow_extra)
    except ProtocolError:
        return
    assert isinstance(result, Flags)
