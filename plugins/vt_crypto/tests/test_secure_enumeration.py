"""Host enumeration: before the key confirmation, secure mode answers every host name
alike, known or not, whatever suite the host is configured for."""

from __future__ import annotations

import pytest
from secure_helpers import GREETING
from vt_crypto.secure import SECURE_WORDS, ClientSecureHandshake, SecureHandshakeError, choose_suite
from vt_crypto.secure.mode import AeadSecureMode

from vtcore.protocol.handshake import pack_msg

PW = b"s3cret"
HOSTS = {f"h-{word}": word for word in sorted(SECURE_WORDS)}
"""Known hosts, one per secure ``encrypt`` word (whatever the CPU, one of them differs
from what ``aead`` picks for an unknown host)."""


def server_answers(mode: AeadSecureMode, host: str) -> tuple[bytes, bytes, object]:
    """What a vt client sees for ``host``: the offer block and msg2 (it sends msg1 with the
    right password when the host is known), and the client's handshake."""
    word = HOSTS.get(host)
    known = word is not None
    host_block = pack_msg(f"HOST: {host} vt2\n")
    offer = mode.server_offer(host, ("vt2",), known, word)
    assert offer is not None
    server = mode.server_handshake(offer, host, PW if known else None, "<TuC9K>",
                                   {"features": "x"}, GREETING + host_block + offer)
    client = ClientSecureHandshake(host, PW, GREETING + host_block + bytes(offer))
    server.receive_data(client.data_to_send())
    msg2 = server.data_to_send()
    try:
        client.receive_data(msg2)
    except SecureHandshakeError:
        assert not known
    return bytes(offer), msg2, client


def test_known_and_unknown_hosts_get_the_same_answers() -> None:
    """Offer byte for byte, msg2 in length and type; only the random fields differ.  The
    known hosts then finish with their own suite (so the suite did reach the client)."""
    mode = AeadSecureMode()
    answers = {host: server_answers(mode, host) for host in [*HOSTS, "nosuch", "other"]}
    offers = {offer for offer, _, _ in answers.values()}
    assert offers == {pack_msg("OK VT3\n")}
    shapes = {(len(msg2), msg2[:3]) for _, msg2, _ in answers.values()}
    assert shapes == {(371, b"\x01\x71\x02")}
    assert len({msg2 for _, msg2, _ in answers.values()}) == len(answers)  # random fields
    for host, word in HOSTS.items():
        client = answers[host][2]
        assert client.state.value == "wait_finished_s", host  # type: ignore[attr-defined]
        assert client._keys.suite == choose_suite(word)  # type: ignore[attr-defined]
    for host in ("nosuch", "other"):
        assert answers[host][2].state.value == "failed"  # type: ignore[attr-defined]


@pytest.mark.parametrize("word", sorted(SECURE_WORDS))
def test_offer_does_not_depend_on_the_host(word: str) -> None:
    mode = AeadSecureMode()
    assert mode.server_offer("a", ("vt2",), True, word) == mode.server_offer(
        "b", ("vt2",), False, None)
