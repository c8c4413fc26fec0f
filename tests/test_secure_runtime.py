"""vtcore.runtime.secure.drive_secure over a socketpair (no namespaces): it refuses a bad
length at once, reports time-outs and lost peers with the extension's messages, and
answers a refusal with the extension's abort message."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from vtcore.api import HandshakeRefused
from vtcore.runtime.secure import drive_secure

pytest.importorskip("vt_crypto")

from vt_crypto.secure.handshake import ServerSecureHandshake  # noqa: E402
from vt_crypto.secure.negotiate import offer_block  # noqa: E402
from vt_crypto.secure.settings import SecureSettings  # noqa: E402

PREFIX = bytes(100) + offer_block()


def server_hs() -> ServerSecureHandshake:
    return ServerSecureHandshake("t1", b"pw", SecureSettings(flags="<T>",
                                                             suite="chacha20poly1305"), PREFIX)


def run(peer_bytes: bytes | None, timeout: float, close: bool = False):
    """Drive a server handshake; the peer sends ``peer_bytes`` (then maybe closes)."""
    async def main():
        a, b = socket.socketpair()
        a.setblocking(False)
        try:
            if peer_bytes:
                b.sendall(peer_bytes)
            if close:
                b.shutdown(socket.SHUT_WR)
            start = time.monotonic()
            try:
                await drive_secure(a, server_hs(), timeout)
            except HandshakeRefused as exc:
                b.setblocking(False)
                try:
                    got = b.recv(100)
                except BlockingIOError:
                    got = b""
                return str(exc), time.monotonic() - start, got
            return None
        finally:
            a.close()
            b.close()

    return asyncio.run(main())


def test_oversized_length_is_refused_before_reading_the_body() -> None:
    msg, took, got = run(b"\x04\x01", timeout=5)  # 1025: over the extension's limit
    assert msg == "malformed secure handshake message"
    assert took < 1
    assert got == b"\x00\x01\xff"  # the abort message


def test_zero_length_is_refused() -> None:
    msg, _, got = run(b"\x00\x00", timeout=5)
    assert msg == "malformed secure handshake message"
    assert got == b"\x00\x01\xff"


def test_time_out_has_its_message() -> None:
    msg, took, _ = run(b"\x00\x42\x01", timeout=0.3)
    assert msg == "secure handshake timed out"
    assert 0.2 < took < 2


def test_peer_closing_has_its_message() -> None:
    msg, _, _ = run(b"\x00\x42\x01", timeout=5, close=True)
    assert msg == "connection closed during secure handshake"


def test_abort_from_peer_is_authentication_failed() -> None:
    msg, _, got = run(b"\x00\x01\xff", timeout=5)
    assert msg == "authentication failed"
    assert got == b""  # no abort answered to an abort
