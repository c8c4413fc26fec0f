"""Secure handshake: client and server paired in memory (no sockets)."""

from __future__ import annotations

import hashlib
import hmac

import pysodium
import pytest
import structlog
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from secure_helpers import det_rng, handshake, prefix, settings
from vt_crypto.secure import (
    AUTH_FAILED,
    ClientSecureHandshake,
    SecureEstablished,
    SecureHandshakeError,
    SecureSettings,
    ServerSecureHandshake,
)
from vt_crypto.secure import handshake as hs_mod
from vt_crypto.secure.keys import HandshakeKeys, SessionKeys

PW = b"s3cret"


def hkdf(ikm: bytes, salt: bytes, label: bytes, length: int = 32) -> bytes:
    return HKDF(algorithm=SHA256(), length=length, salt=salt, info=label).derive(ikm)


def hmac256(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


# --------------------------------------------------------------------------- key schedule


def test_key_schedule_known_answers() -> None:
    """Every derived key from a fixed PAKE key (ISK) and transcript hashes, two ways: from the
    documented construction with cryptography's HKDF, and pinned hex."""
    k = bytes(range(32))
    th_hello = hashlib.sha256(b"th_hello").digest()
    th_c = hashlib.sha256(b"th_c").digest()
    hk = HandshakeKeys.derive(k, th_hello)
    sk = SessionKeys.derive("aes256gcm", k, th_c)
    assert hk.settings == hkdf(k, th_hello, b"vt2 settings")
    assert hk.confirm_s == hkdf(k, th_hello, b"vt2 confirm s")
    assert hk.confirm_c == hkdf(k, th_hello, b"vt2 confirm c")
    assert hk.finished_s == hkdf(k, th_hello, b"vt2 finished s")
    assert sk.c2s == hkdf(k, th_c, b"vt2 c2s")
    assert sk.s2c == hkdf(k, th_c, b"vt2 s2c")
    assert sk.session_id == hkdf(k, th_c, b"vt2 session id", 16)
    pinned = {
        "settings": hk.settings,
        "confirm s": hk.confirm_s,
        "confirm c": hk.confirm_c,
        "finished s": hk.finished_s,
        "c2s": sk.c2s,
        "s2c": sk.s2c,
        "session id": sk.session_id,
    }
    assert {k: v.hex() for k, v in pinned.items()} == KEY_SCHEDULE_KAT
    assert len({*pinned.values()}) == len(pinned)


KEY_SCHEDULE_KAT = {
    "settings": "0deaa06379448205c3c63a9b73246f34a3514d89aff7bb9210b2a2581ffd2e86",
    "confirm s": "e83e25aa1f00e2519f71a62243ca9f7193e7117aa4dae7b92a8e32b10ef5406f",
    "confirm c": "11c9761ea83ecddb50fdd6664d7f21376fb334a377efa428c0e36e10c71d0e10",
    "finished s": "a62dfb35326a42d9e43cae302d7099f870a0ebcf11b55619781cae1e93abcaf3",
    "c2s": "80cd638ba600ce465f584c94bf14cd32843c021c12be799967716be0d8700dd6",
    "s2c": "96d7156f5c242a808f9486bea4151e77a0e3cf2196dbfc542e49ebdc88dc89dc",
    "session id": "d3e42e92109fafbe7873f0bc9b231c42",
}


def lv(*parts: bytes) -> bytes:
    """The draft's lv_cat for strings under 128 bytes (one length byte each)."""
    assert all(len(p) < 128 for p in parts)
    return b"".join(bytes([len(p)]) + p for p in parts)


def cpace_isk(pre: bytes, m1: bytes, m2: bytes, seed: bytes, host: bytes = b"home") -> bytes:
    """CPace's ISK of a recorded run, from the draft's definitions with hashlib and
    libsodium only: CI = lv(client id, server id, negotiation blocks), sid = Nc, no AD."""
    ci = lv(b"vt client " + host, b"vt server " + host) + bytes([len(pre), 1]) + pre
    ya, nonce_c, yb = m1[3:35], m1[35:67], m2[3:35]
    gen = lv(b"CPaceRistretto255", PW, bytes(128 - 1 - 18 - 1 - len(PW)))
    g = pysodium.crypto_core_ristretto255_from_hash(
        hashlib.sha512(gen + bytes([len(ci), 1]) + ci + lv(nonce_c)).digest()
    )
    crng = det_rng(b"client" + seed)
    assert crng(32) == nonce_c
    y_a = pysodium.crypto_core_ristretto255_scalar_reduce(crng(64))
    assert pysodium.crypto_scalarmult_ristretto255(y_a, g) == ya
    y_b = pysodium.crypto_core_ristretto255_scalar_reduce(det_rng(b"server" + seed)(64))
    assert pysodium.crypto_scalarmult_ristretto255(y_b, g) == yb
    k = pysodium.crypto_scalarmult_ristretto255(y_a, yb)
    assert k == pysodium.crypto_scalarmult_ristretto255(y_b, ya)
    transcript = lv(ya, b"") + lv(yb, b"")
    return hashlib.sha512(lv(b"CPaceRistretto255_ISK", nonce_c, k) + transcript).digest()


def test_whole_handshake_recomputed_from_the_wire() -> None:
    """A deterministic run, re-derived step by step from the recorded bytes with hashlib,
    hmac, libsodium and cryptography only (the construction in docs/secure-mode.md)."""
    seed = b"kat"
    pair = handshake(seed=seed)
    assert not pair.errors
    m1, m2, m3, m4 = pair.wire
    pre = prefix()
    assert [len(m) for m in pair.wire] == [2 + 65, 2 + 369, 2 + 33, 2 + 33]
    assert m1[:3] == bytes([0, 65, 1]) and m2[:3] == bytes([1, 113, 2])
    assert m3[:3] == bytes([0, 33, 3]) and m4[:3] == bytes([0, 33, 4])
    k = cpace_isk(pre, m1, m2, seed)
    th_hello = hashlib.sha256(pre + m1 + m2[: 2 + 1 + 32 + 32]).digest()
    sealed = m2[2 + 65 : 2 + 65 + 272]
    key = hkdf(k, th_hello, b"vt2 settings")
    blob = ChaCha20Poly1305(key).decrypt(bytes(12), sealed, th_hello)
    assert blob == settings().encode()
    th_s = hashlib.sha256(pre + m1 + m2[:-32]).digest()
    assert m2[-32:] == hmac256(hkdf(k, th_hello, b"vt2 confirm s"), th_s)
    th_c = hashlib.sha256(pre + m1 + m2).digest()
    assert m3[3:] == hmac256(hkdf(k, th_hello, b"vt2 confirm c"), th_c)
    th_3 = hashlib.sha256(pre + m1 + m2 + m3).digest()
    assert m4[3:] == hmac256(hkdf(k, th_hello, b"vt2 finished s"), th_3)
    ev = pair.events["client"]
    assert isinstance(ev, SecureEstablished)
    assert ev.keys.c2s == hkdf(k, th_c, b"vt2 c2s")
    assert ev.keys.s2c == hkdf(k, th_c, b"vt2 s2c")
    assert ev.keys.session_id == hkdf(k, th_c, b"vt2 session id", 16)


# --------------------------------------------------------------------------- outcomes


@pytest.mark.parametrize("suite", ["aes256gcm", "chacha20poly1305"])
def test_success_equal_keys_per_direction(suite: str) -> None:
    pair = handshake(suite=suite)
    assert pair.errors == {}
    c, s = pair.events["client"], pair.events["server"]
    assert isinstance(c, SecureEstablished) and isinstance(s, SecureEstablished)
    assert c.keys == s.keys and c.keys.suite == suite
    assert c.keys.c2s != c.keys.s2c
    assert c.keys.send_key("client") == s.keys.recv_key("server")
    assert c.keys.send_key("server") == s.keys.recv_key("client")
    assert c.settings == s.settings == settings(suite)
    assert pair.client.done and pair.server.done
    # the session keys work both ways
    for a, b in ((c, s), (s, c)):
        sealer, opener = a.keys.sealer(a.role), b.keys.opener(b.role)
        assert opener.open(sealer.seal(0, b"ping"), 0.0) == (0, b"ping")


def test_sessions_have_fresh_keys() -> None:
    """Same password, two sessions: unrelated keys (ephemeral CPace scalars, nonces)."""
    k1 = handshake().events["client"].keys  # type: ignore[union-attr]
    k2 = handshake().events["client"].keys  # type: ignore[union-attr]
    assert k1.c2s != k2.c2s and k1.s2c != k2.s2c and k1.session_id != k2.session_id


def test_wrong_password_fails_on_both_ends_alike() -> None:
    pair = handshake(client_pw=b"guess")
    assert pair.errors == {"client": AUTH_FAILED, "server": AUTH_FAILED}
    assert pair.events == {}
    assert len(pair.wire) == 3  # msg1, msg2, the client's abort
    assert pair.wire[2] == b"\x00\x01\xff"


def test_unknown_host_looks_like_wrong_password() -> None:
    known = handshake(client_pw=b"guess")
    unknown = handshake(server_pw=None)
    assert unknown.errors == known.errors == {"client": AUTH_FAILED, "server": AUTH_FAILED}
    assert [len(m) for m in unknown.wire] == [len(m) for m in known.wire]
    assert unknown.events == {}


def test_host_names_are_bound() -> None:
    """Same password and transcript, but the ends disagree on the host: no keys."""
    pair = handshake(server_host="other")
    assert pair.errors == {"client": AUTH_FAILED, "server": AUTH_FAILED}


@pytest.mark.parametrize("suite", ["aes256gcm", "chacha20poly1305"])
def test_suite_travels_in_the_sealed_settings(suite: str) -> None:
    """The offer names no suite: the client learns the server's choice from the settings
    (sealed, covered by confirm_S) and both ends key the session for it."""
    pair = handshake(suite=suite)
    assert pair.errors == {}
    for side in ("client", "server"):
        ev = pair.events[side]
        assert isinstance(ev, SecureEstablished)
        assert ev.keys.suite == ev.settings.suite == suite


@pytest.mark.parametrize(
    ("block", "offset"),
    [(b, o) for b in (0, 1) for o in (0, 5, 7, 10, 17, 48, 49)] + [(2, 20), (2, 48), (2, 49)],
)
def test_prefix_difference_fails(block: int, offset: int) -> None:
    """Any difference in the 50-byte blocks (greeting, HOST line with vt2, OK VT3) that
    the two ends saw makes the handshake fail: the negotiation is in the transcript.
    (In the offer block only the padding can differ without changing the offer itself.)"""
    pre = bytearray(prefix())
    pre[50 * block + offset] ^= 0x01
    pair = handshake(client_prefix=bytes(pre))
    assert pair.events == {}
    assert pair.errors == {"client": AUTH_FAILED, "server": AUTH_FAILED}


def test_tampering_every_byte_of_every_message() -> None:
    """integrity.sh style: flip each byte of each message in transit.  Never do both ends
    establish; the client never does; the server only when msg4 (its last message) was
    altered, with the keys the client holds.  An end that neither failed nor finished
    (a length prefix made larger: it waits for more) fails on its time-out."""
    honest = handshake(seed=b"tamper")
    assert "client" in honest.events and "server" in honest.events
    sizes = [len(m) for m in honest.wire]
    for index, size in enumerate(sizes):
        for offset in range(size):

            def flip(n: int, data: bytes, index: int = index, offset: int = offset) -> bytes:
                if n != index:
                    return data
                return data[:offset] + bytes([data[offset] ^ 0xA5]) + data[offset + 1 :]

            pair = handshake(mutate=flip, seed=b"tamper")
            where = f"message {index} byte {offset}"
            assert "client" not in pair.events, where
            if "server" in pair.events:
                assert index == 3, where
                assert pair.events["server"].keys == pair.client._keys, where  # type: ignore[union-attr]
            for name, side in (("client", pair.client), ("server", pair.server)):
                if name in pair.errors or name in pair.events:
                    continue
                with pytest.raises(SecureHandshakeError, match="timed out"):
                    side.timed_out()


# --------------------------------------------------------------------------- framing


def test_byte_at_a_time_and_trailing_data() -> None:
    client = ClientSecureHandshake("home", PW, prefix())
    server = ServerSecureHandshake("home", PW, settings(), prefix())
    for b in client.data_to_send():
        server.receive_data(bytes([b]))
    for b in server.data_to_send():
        client.receive_data(bytes([b]))
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send() + b"first frame")
    assert client.done and server.done
    assert client.trailing_data() == b"first frame"
    assert client.trailing_data() == b""


@pytest.mark.parametrize("length", [0, 1025, 0xFFFF])
def test_bad_length_fails_at_once(length: int) -> None:
    server = ServerSecureHandshake("home", PW, settings(), prefix())
    with pytest.raises(SecureHandshakeError, match="^malformed secure handshake message$"):
        server.receive_data(length.to_bytes(2, "big"))
    assert server.data_to_send() == b"\x00\x01\xff"
    server.receive_data(b"more")  # ignored once failed


def test_no_pake_work_before_cheap_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a: object, **k: object) -> None:
        raise AssertionError("CPace started on a malformed msg1")

    monkeypatch.setattr(hs_mod, "CPace", boom)
    for body in (b"\x01" * 64, b"\x02" + bytes(64), b"\x01" + bytes(65)):
        server = ServerSecureHandshake("home", PW, settings(), prefix())
        with pytest.raises(SecureHandshakeError, match="malformed"):
            server.receive_data(hs_mod.frame(body))


@pytest.mark.parametrize("point", [b"\xff" * 32, bytes(32)])  # not a point; the identity
def test_invalid_cpace_point_is_malformed_not_a_crash(point: bytes) -> None:
    server = ServerSecureHandshake("home", PW, settings(), prefix())
    with pytest.raises(SecureHandshakeError, match="^malformed secure handshake message$"):
        server.receive_data(hs_mod.frame(b"\x01" + point + bytes(32)))
    assert server.data_to_send() == b"\x00\x01\xff"
    client = ClientSecureHandshake("home", PW, prefix())
    client.data_to_send()
    with pytest.raises(SecureHandshakeError, match="^malformed secure handshake message$"):
        client.receive_data(hs_mod.frame(b"\x02" + point + bytes(368 - 32)))


def test_timeout_and_connection_lost_messages() -> None:
    client = ClientSecureHandshake("home", PW, prefix())
    with pytest.raises(SecureHandshakeError, match="^connection closed during secure handshake$"):
        client.connection_lost()
    server = ServerSecureHandshake("home", PW, settings(), prefix())
    with pytest.raises(SecureHandshakeError, match="^secure handshake timed out$"):
        server.timed_out()
    pair = handshake()
    pair.client.timed_out()  # no-op once done
    pair.server.connection_lost()


def test_abort_from_peer_is_authentication_failure() -> None:
    client = ClientSecureHandshake("home", PW, prefix())
    with pytest.raises(SecureHandshakeError, match=f"^{AUTH_FAILED}$"):
        client.receive_data(b"\x00\x01\xff")


def test_local_misuse_is_value_error() -> None:
    with pytest.raises(ValueError):
        ClientSecureHandshake("home", b"", prefix())
    with pytest.raises(ValueError):
        ClientSecureHandshake("home", PW, prefix()[:100])  # no OK VT3 block
    with pytest.raises(ValueError):  # a known host without its settings
        ServerSecureHandshake("home", PW, None, prefix())


# --------------------------------------------------------------------------- secrets


def test_no_secret_in_reprs_errors_or_logs() -> None:
    with structlog.testing.capture_logs() as logs:
        pair = handshake()
        bad = handshake(client_pw=b"guess")
    ev = pair.events["client"]
    assert isinstance(ev, SecureEstablished)
    secrets = [ev.keys.c2s, ev.keys.s2c, PW, b"guess"]
    text = " ".join(
        [
            repr(ev),
            repr(pair.events["server"]),
            repr(ev.keys),
            repr(pair.client),
            repr(pair.server),
            repr(ev.keys.sealer("client")),
            repr(ev.keys.opener("server")),
            str(ev.log_fields()),
            *bad.errors.values(),
            repr(logs),
        ]
    )
    for secret in secrets:
        assert secret.hex() not in text and repr(secret) not in text
        assert secret.decode("latin-1") not in text
    assert set(ev.log_fields()) == {"host", "role", "suite", "session"}


def test_settings_roundtrip_and_malformed() -> None:
    s = SecureSettings(
        flags="<TuC9K>",
        suite="chacha20poly1305",
        max_frame=1500,
        options={"a": 1, "b": True, "c": "x"},
    )
    blob = s.encode()
    assert len(blob) == 256 and SecureSettings.decode(blob) == s
    for bad in (
        blob[:-1],
        b"\xff" * 256,
        blob[:2] + b"[" + blob[3:],
        (300).to_bytes(2, "big") + blob[2:],
        blob[:-1] + b"\x01",
    ):
        with pytest.raises(SecureHandshakeError, match="^malformed secure settings$"):
            SecureSettings.decode(bad)
    with pytest.raises(ValueError):
        SecureSettings(flags="<T>", suite="aes256gcm", options={"x": "y" * 300}).encode()
    with pytest.raises(ValueError):
        SecureSettings(flags="TuC", suite="aes256gcm")


def test_settings_are_sealed_alike_for_every_suite() -> None:
    """ChaCha20-Poly1305 seals the settings whatever the session's suite (an AES-GCM
    session's settings open with ChaCha20-Poly1305), so msg2 says nothing of the host's
    configuration before the key confirmation."""
    pair = handshake(suite="aes256gcm", seed=b"c")
    m1, m2 = pair.wire[0], pair.wire[1]
    pre = prefix()
    k = cpace_isk(pre, m1, m2, b"c")
    th_hello = hashlib.sha256(pre + m1 + m2[:67]).digest()
    key = hkdf(k, th_hello, b"vt2 settings")
    blob = ChaCha20Poly1305(key).decrypt(bytes(12), m2[67:339], th_hello)
    assert SecureSettings.decode(blob) == settings("aes256gcm")
