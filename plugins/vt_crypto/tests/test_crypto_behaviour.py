"""Two sessions' modules talking: round trips, UDP loss and resync, bad input."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vt_crypto import CIPHERS, ChainedCodec, make_codec
from vt_crypto.ciphers import MAX_FRAME
from vt_crypto.plugin import CRYPTO, vt_register_frame_modules

from vtcore.api import LinkSettings, Registry, Stage
from vtcore.testing import check_frame_module, link_settings

ALL = sorted(CIPHERS)
CHAINED = [c for c, s in CIPHERS.items() if s.chained]
PW = b"tunnel password"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pair(code: int, clock: FakeClock | None = None):
    kw = {"clock": clock} if clock else {}
    return make_codec(code, PW, **kw), make_codec(code, PW, **kw)


def packet(i: int, size: int | None = None) -> bytes:
    size = size if size is not None else 20 + (i * 37) % 1400
    return (i.to_bytes(4, "big") * (size // 4 + 1))[:size]


# ----------------------------------------------------------------------- round trips


@pytest.mark.parametrize("code", ALL)
def test_round_trip_all_sizes_both_ways(code: int) -> None:
    client, server = pair(code)
    for size in range(1, 2049):
        up, down = packet(size, size), packet(-size % 2**31, size)
        assert server.decode(client.encode(up)) == up
        assert client.decode(server.encode(down)) == down
    assert client.dropped == server.dropped == 0


@pytest.mark.parametrize("code", ALL)
def test_wrong_password_never_delivers_plaintext(code: int) -> None:
    sender, receiver = make_codec(code, PW), make_codec(code, b"other")
    delivered = [receiver.decode(sender.encode(packet(i))) for i in range(50)]
    assert all(d != packet(i) for i, d in enumerate(delivered))


# ----------------------------------------------------------------------- plugin


def test_plugin_registers_encrypt_keyword() -> None:
    registry = Registry()
    vt_register_frame_modules(registry)
    item = registry.answering("encrypt", "aes256cbc")
    assert item is CRYPTO and item.stage == Stage.ENCRYPT
    assert item.words["oldblowfish128ecb"] == 999 and item.words["yes"] == 1
    assert registry.answering("encrypt", "aes256gcm") is None  # secure mode: not here
    assert "aes128ofb" in item.describe


@pytest.mark.parametrize(
    ("encrypt", "name"),
    [
        (None, None),
        (0, None),
        (1, "blowfish128ecb"),
        (14, "aes256cbc"),
        (999, "oldblowfish128ecb"),
        (4242, "blowfish128ecb"),
    ],
)
def test_create_follows_negotiated_code(encrypt: int | None, name: str | None) -> None:
    mod = CRYPTO.create(LinkSettings(host="h", role="server", encrypt=encrypt, password=PW))
    assert (mod.spec.name if mod else None) == name


def test_chain_orders_crypto_at_encrypt_stage() -> None:
    registry = Registry()
    vt_register_frame_modules(registry)
    chain = registry.chain(LinkSettings(host="h", role="client", encrypt=10, password=PW))
    assert len(chain) == 1 and isinstance(chain[0], ChainedCodec)


# ----------------------------------------------------------------------- loss / resync


def test_ofb_loss_resyncs_through_rsyn_ivec_exchange() -> None:
    """OFB cannot resync by itself: the receiver asks (rsyn), the sender re-IVs (ivec)."""
    a, b = pair(12)
    assert a.decode(b.encode(b"hello")) == b"hello"  # b's encoder is running
    for i in range(3):
        assert b.decode(a.encode(packet(i))) == packet(i)
    a.encode(packet(3))  # lost on the way
    assert b.decode(a.encode(packet(4))) is None
    assert (b.decoder_state, b.encoder_state, b.dropped) == ("INIT", "REQ_INIT", 1)
    assert b.resync_pending
    assert b.decode(a.encode(packet(5))) is None  # still unreadable: gibberish
    # b's next frame carries rsyn; a delivers it and schedules a new IV.
    assert a.decode(b.encode(b"reply")) == b"reply"
    assert a.encoder_state == "INIT" and b.encoder_state == "SEQUENCE"
    frame = a.encode(packet(6))
    n = len(packet(6))
    assert len(frame) == 32 + 16 + n + (16 - n % 16)  # ivec header + seq block + data + pad
    assert b.decode(frame) == packet(6)
    assert b.decode(a.encode(packet(7))) == packet(7)
    assert (b.decoder_state, b.resyncs, b.dropped) == ("SEQUENCE", 2, 2)


@pytest.mark.parametrize("code", [c for c in CHAINED if CIPHERS[c].mode in ("cbc", "cfb")])
def test_cbc_cfb_recover_from_loss_by_themselves(code: int) -> None:
    """CBC/CFB contexts self-synchronise: one frame after the loss is lost, no more."""
    a, b = pair(code)
    assert b.decode(a.encode(packet(0))) == packet(0)
    a.encode(packet(1))  # lost
    assert b.decode(a.encode(packet(2))) is None
    assert b.decode(a.encode(packet(3))) == packet(3)
    assert b.decoder_state == "SEQUENCE" and not b.send_rsyn  # request withdrawn
    assert a.decode(b.encode(b"x")) == b"x" and a.encoder_state == "SEQUENCE"


def test_rsyn_already_sent_then_ivec_arrives_mid_sequence() -> None:
    """A re-IV arriving while synced is taken at once (vtund would drop it and re-ask)."""
    a, b = pair(10)
    assert b.decode(a.encode(packet(0))) == packet(0)
    a.encode(packet(1))  # lost
    assert b.decode(a.encode(packet(2))) is None
    rsyn_frame = b.encode(b"r")  # carries rsyn
    assert b.decode(a.encode(packet(3))) == packet(3)  # CBC self-sync
    assert a.decode(rsyn_frame) == b"r" and a.encoder_state == "INIT"
    assert b.decode(a.encode(packet(4))) == packet(4)  # ivec header while b is in SEQUENCE
    assert b.resyncs == 2 and b.dropped == 1


@pytest.mark.parametrize("code", CHAINED)
def test_lost_first_frame_gibberish_rule_counts_ten(code: int) -> None:
    clock = FakeClock()
    a, b = pair(code, clock)
    a.decode(b.encode(b"hello"))  # b's encoder has started: it is in SEQUENCE
    assert b.encoder_state == "SEQUENCE"
    a.encode(packet(0))  # the ivec frame is lost
    for i in range(1, 10):
        assert b.decode(a.encode(packet(i))) is None
        assert b.encoder_state == "REQ_INIT"
    assert b.decode(a.encode(packet(10))) is None  # 10th: re-init own encoder too
    assert b.encoder_state == "INIT" and b.dropped == 10
    # b's next frame: ivec + rsyn in one; a syncs and re-IVs, b syncs on a's next frame.
    assert a.decode(b.encode(b"both")) == b"both"
    assert a.encoder_state == "INIT"
    assert b.decode(a.encode(packet(11))) == packet(11)


@pytest.mark.parametrize("code", CHAINED)
def test_gibberish_rule_two_seconds(code: int) -> None:
    clock = FakeClock()
    a, b = pair(code, clock)
    a.decode(b.encode(b"hello"))
    a.encode(packet(0))  # lost
    assert b.decode(a.encode(packet(1))) is None and b.encoder_state == "REQ_INIT"
    clock.now += 1.9
    assert b.decode(a.encode(packet(2))) is None and b.encoder_state == "REQ_INIT"
    clock.now += 0.1
    assert b.decode(a.encode(packet(3))) is None and b.encoder_state == "INIT"


@pytest.mark.parametrize("code", CHAINED)
def test_lossy_link_never_delivers_corrupt_data(code: int) -> None:
    """20% loss both ways for 600 frames each: every delivered packet is one that was sent,
    in order, and traffic flows again once the loss stops."""
    rnd = random.Random(code)
    a, b = pair(code)
    sent = {"ab": [], "ba": []}
    got = {"ab": [], "ba": []}
    for i in range(1200):
        direction = "ab" if rnd.random() < 0.5 else "ba"
        src, dst = (a, b) if direction == "ab" else (b, a)
        data = i.to_bytes(4, "big") + bytes(rnd.randrange(0, 1500))  # unique
        sent[direction].append(data)
        frame = src.encode(data)
        lossy = i < 1000
        if lossy and rnd.random() < 0.2:
            continue
        out = dst.decode(frame)
        if out is not None:
            got[direction].append((i, out))
    for direction in ("ab", "ba"):
        index = {p: n for n, p in enumerate(sent[direction])}
        positions = [index[p] for _, p in got[direction]]  # KeyError = corrupt data
        assert positions == sorted(positions)
        assert any(i >= 1100 for i, _ in got[direction])  # flowing again at the end
        # Every loss costs a resync; OFB needs a round trip, CBC/CFB heal by themselves.
        share = 0.2 if CIPHERS[code].mode == "ofb" else 0.5
        assert len(got[direction]) > share * len(sent[direction])


# ----------------------------------------------------------------------- bad input


@pytest.mark.parametrize("code", ALL)
def test_truncated_oversized_empty_frames_dropped(code: int) -> None:
    a, b = pair(code)
    assert b.decode(a.encode(packet(0))) == packet(0)
    good = a.encode(packet(1))
    before = b.dropped
    assert b.decode(b"") is None
    assert b.decode(good[:-1]) is None
    assert b.decode(good + b"\0") is None
    assert b.decode(bytes(5000)) is None
    assert b.dropped == before + 4


@pytest.mark.parametrize("code", CHAINED)
def test_replayed_frame_dropped_then_recovers(code: int) -> None:
    a, b = pair(code)
    frames = [a.encode(packet(i)) for i in range(3)]
    assert [b.decode(f) for f in frames] == [packet(i) for i in range(3)]
    assert b.decode(frames[2]) is None and b.dropped == 1  # replay
    for i in range(3, 8):  # traffic both ways resyncs the link
        b.decode(a.encode(packet(i)))
        a.decode(b.encode(b"ack"))
    assert b.decode(a.encode(packet(9))) == packet(9)


@pytest.mark.parametrize("code", CHAINED)
def test_flipped_tag_byte_is_dropped(code: int) -> None:
    """OpenSSH integrity.sh style, for the bytes the protocol does check (the tag)."""
    bs = CIPHERS[code].block_size
    for offset in range(4):
        a, b = pair(code)
        assert b.decode(a.encode(packet(0))) == packet(0)
        frame = bytearray(a.encode(packet(1)))
        frame[offset] ^= 0x01
        assert b.decode(bytes(frame)) is None, offset
        assert b.dropped == 1 and len(frame) > bs


@pytest.mark.parametrize("code", ALL)
def test_flip_any_byte_never_raises(code: int) -> None:
    a, b = pair(code)
    frame = a.encode(packet(0))
    for offset in range(len(frame)):
        for bit in (0x01, 0x80):
            mangled = bytearray(frame)
            mangled[offset] ^= bit
            out = b.decode(bytes(mangled))
            assert out is None or isinstance(out, bytes)


@pytest.mark.parametrize("transport", ["tcp", "udp"])
@pytest.mark.parametrize("code", ALL)
def test_keeps_the_linker_contract(code: int, transport: str) -> None:
    """vtcore.testing's check through the plugin's factory, as a session makes it: round
    trips; damaged, cut and random frames never raise, never decode beyond MAX_FRAME."""
    s = link_settings(encrypt=code, password=PW, transport=transport)
    report = check_frame_module(lambda: CRYPTO.create(s), hostile=500, max_output=MAX_FRAME)
    assert report.round_trips == 200 and report.hostile_dropped > 0


@pytest.mark.parametrize("code", ALL)
@settings(max_examples=150, deadline=None)
@given(data=st.lists(st.binary(max_size=300), max_size=8), synced=st.booleans())
def test_random_bytes_never_raise(code: int, data: list[bytes], synced: bool) -> None:
    a, b = pair(code)
    if synced:
        assert b.decode(a.encode(b"warm-up")) == b"warm-up"
    for blob in data:
        out = b.decode(blob)
        assert out is None or (isinstance(out, bytes) and out)
    # The module still encodes afterwards, and a fresh peer reads it.
    assert make_codec(code, PW).decode(b.encode(b"after")) == b"after"
