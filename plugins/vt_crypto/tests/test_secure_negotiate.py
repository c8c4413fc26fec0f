"""Choosing secure mode inside the vtun handshake, and refusing to be downgraded."""

from __future__ import annotations

import pytest
from vt_crypto.secure import (
    HOST_TOKEN,
    SECURE_WORDS,
    SecureHandshakeError,
    check_server_reply,
    choose_suite,
    cpu_has_aes,
    offer_block,
    parse_offer,
    server_mode,
)

from vtcore.protocol.handshake import ServerHandshake, pack_msg

AUTO = choose_suite("aead")
DOWNGRADE = "refusing to fall back (downgrade?)"


def test_words_and_token() -> None:
    assert SECURE_WORDS == {"aead", "chacha20poly1305", "aes256gcm"}
    assert HOST_TOKEN == "vt2"


@pytest.mark.parametrize(
    ("known", "word", "extra", "expected"),
    [
        (True, "aead", ("vt2",), AUTO),
        (True, "aes256gcm", ("vt2",), "aes256gcm"),
        (True, "chacha20poly1305", ("vt2",), "chacha20poly1305"),
        (True, "aes128cbc", ("vt2",), None),  # legacy host: vtund path even for vt
        (True, None, ("vt2",), None),
        (True, "aes128cbc", (), None),
        (False, None, ("vt2",), AUTO),  # unknown host + vt client: PAKE with no password
        (False, None, (), None),  # unknown host + vtund client: OK CHAL then ERR
        (True, "aead", ("future", "vt2"), AUTO),
    ],
)
def test_server_mode(known: bool, word: str | None, extra: tuple[str, ...], expected) -> None:
    assert server_mode("home", extra, known, word) == expected


@pytest.mark.parametrize("word", sorted(SECURE_WORDS))
def test_server_refuses_secure_host_without_token(word: str) -> None:
    with pytest.raises(SecureHandshakeError) as err:
        server_mode("home", (), True, word)
    assert str(err.value) == f"client did not ask for secure mode for host home; {DOWNGRADE}"


def test_host_token_survives_vtcore_server_parse() -> None:
    server = ServerHandshake()
    server.data_to_send()
    server.receive_data(pack_msg("HOST: home vt2\n"))
    event = server.next_event()
    assert event is not None and HOST_TOKEN in event.extra  # type: ignore[union-attr]


def test_offer_roundtrip() -> None:
    block = offer_block()
    assert block == b"OK VT3\n" + bytes(43)
    assert parse_offer(block) is True
    assert check_server_reply(block, "home", True) is True
    assert check_server_reply(block, "home", False) is True


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("OK CHAL: <0123456789abcdef0123456789abcdef>\n", "server does not offer secure mode"),
        ("ERR\n", "server refused host home before secure mode"),
        ("OK FLAGS: <TuC9K>\n", "unexpected server reply for host home"),
        ("VTUN garbage\n", "unexpected server reply for host home"),
        ("OK VT2 aes256gcm\n", "server speaks an older secure-mode protocol for host home"),
    ],
)
def test_secure_client_refuses_legacy_replies(text: str, why: str) -> None:
    block = pack_msg(text)
    assert check_server_reply(block, "home", False) is False  # legacy client: go on
    with pytest.raises(SecureHandshakeError) as err:
        check_server_reply(block, "home", True)
    message = str(err.value)
    assert message.startswith(why) and message.endswith(DOWNGRADE) and "\n" not in message


def test_bad_offer_blocks() -> None:
    for text in ("OK VT3 aes256gcm\n", "OK VT4\n", "OK VT\n"):
        with pytest.raises(SecureHandshakeError, match="unexpected server reply"):
            check_server_reply(pack_msg(text), "home", True)
        assert check_server_reply(pack_msg(text), "home", False) is False
    with pytest.raises(SecureHandshakeError):
        check_server_reply(b"OK VT3\n", "home", True)  # not 50 bytes


def test_choose_suite(tmp_path) -> None:
    assert choose_suite("aead", has_aes=True) == "aes256gcm"
    assert choose_suite("aead", has_aes=False) == "chacha20poly1305"
    assert choose_suite("aes256gcm", has_aes=False) == "aes256gcm"
    assert choose_suite("chacha20poly1305", has_aes=True) == "chacha20poly1305"
    with pytest.raises(ValueError):
        choose_suite("aes128cbc")
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nflags\t\t: fpu sse2 aes avx2\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd aes pmull sha1\n")
    none = tmp_path / "none"
    none.write_text("processor\t: 0\nflags\t\t: fpu sse2 vaes_not\n")
    assert cpu_has_aes(str(x86)) and cpu_has_aes(str(arm))
    assert not cpu_has_aes(str(none)) and not cpu_has_aes(str(tmp_path / "missing"))
