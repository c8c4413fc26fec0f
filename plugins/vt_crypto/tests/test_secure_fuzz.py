"""h11-style invariant: any peer input is accepted or raises the one error type."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from secure_helpers import prefix
from secure_helpers import settings as server_settings
from vt_crypto.secure import (
    ClientSecureHandshake,
    Opener,
    SecureHandshakeError,
    SecureSettings,
    ServerSecureHandshake,
)

PW = b"s3cret"
chunks = st.lists(st.binary(max_size=600), max_size=6)


def _feed(side: ClientSecureHandshake | ServerSecureHandshake, data: list[bytes]) -> None:
    try:
        for chunk in data:
            side.receive_data(chunk)
    except SecureHandshakeError as exc:
        assert "\n" not in str(exc)
    assert side.next_event() is None


@settings(max_examples=150, deadline=None)
@given(chunks)
def test_server_any_input(data: list[bytes]) -> None:
    _feed(ServerSecureHandshake("home", PW, server_settings(), prefix()), data)


@settings(max_examples=150, deadline=None)
@given(chunks)
def test_client_any_input(data: list[bytes]) -> None:
    _feed(ClientSecureHandshake("home", PW, prefix()), data)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=80), max_size=10), st.sampled_from([64, None]))
def test_opener_any_input(frames: list[bytes], window: int | None) -> None:
    opener = Opener(bytes(32), "chacha20poly1305", window=window)
    for frame in frames:
        assert opener.open(frame, 0.0) is None
    assert opener.rejected == len(frames)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=256, max_size=256))
def test_settings_any_blob(blob: bytes) -> None:
    try:
        SecureSettings.decode(blob)
    except SecureHandshakeError:
        pass
