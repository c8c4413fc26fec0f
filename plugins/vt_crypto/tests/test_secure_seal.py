"""Secure mode's frame layer: known answers, tampering, replay window, rekeying."""

from __future__ import annotations

import random

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from vt_crypto.secure import FRAME_CLOSE, FRAME_DATA, FRAME_ECHO_REQ, OVERHEAD, Opener, Sealer
from vt_crypto.secure.seal import (
    EPOCH_GRACE_SECONDS,
    REJECT_AFTER_FRAMES,
    REJECT_AFTER_SECONDS,
    ReplayWindow,
)

KEY = bytes(range(32))
AEADS = {"aes256gcm": AESGCM, "chacha20poly1305": ChaCha20Poly1305}


def spec_frame(suite: str, key: bytes, epoch: int, ctr: int, ftype: int, payload: bytes) -> bytes:
    """The documented construction, with nothing from vt_crypto."""
    header = bytes([epoch & 0xFF]) + ctr.to_bytes(8, "big")
    nonce = bytes(4) + ctr.to_bytes(8, "big")
    return header + AEADS[suite](key).encrypt(nonce, bytes([ftype]) + payload, header)


KEY2, KEY3 = bytes(range(1, 33)), bytes(range(2, 34))


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


# --------------------------------------------------------------------------- known answers

SEAL_KAT = {
    "aes256gcm": "00000000000000000598d7b642a5ccf4200d727cab7af41ab89a1c1f7a59d85a3e89a885",
    "chacha20poly1305": "000000000000000005ccbe973c44edf85eccae76a0dabd314d589e16db7abceffc5a34d4",
}


@pytest.mark.parametrize("suite", sorted(AEADS))
def test_seal_known_answer(suite: str) -> None:
    sealer = Sealer(KEY, suite, clock=Clock())
    frames = [sealer.seal(FRAME_DATA, b"vt frame %d" % i) for i in range(6)]
    assert frames[5] == spec_frame(suite, KEY, 0, 5, FRAME_DATA, b"vt frame 5")
    assert frames[5].hex() == SEAL_KAT[suite]
    assert len(frames[5]) == len(b"vt frame 5") + OVERHEAD
    opener = Opener(KEY, suite)
    assert opener.open(frames[5]) == (FRAME_DATA, b"vt frame 5")


@pytest.mark.parametrize("suite", sorted(AEADS))
def test_installed_key_known_answer(suite: str) -> None:
    sealer = Sealer(KEY, suite, clock=Clock())
    sealer.install(KEY2, 1)
    sealer.install(KEY3, 7)
    frame = sealer.seal(FRAME_ECHO_REQ, b"")
    assert frame == spec_frame(suite, KEY3, 7, 0, FRAME_ECHO_REQ, b"")
    with pytest.raises(ValueError):
        sealer.install(KEY2, 7)  # epochs only move forward


def test_control_frames_are_sealed_too() -> None:
    sealer, opener = Sealer(KEY, "aes256gcm"), Opener(KEY, "aes256gcm")
    for ftype in (FRAME_ECHO_REQ, 2, FRAME_CLOSE):
        frame = sealer.seal(ftype, b"")
        assert opener.open(frame) == (ftype, b"")
        forged = bytearray(frame)
        forged[-1] ^= 1
        assert opener.open(bytes(forged)) is None


# --------------------------------------------------------------------------- tampering


@pytest.mark.parametrize("suite", sorted(AEADS))
@pytest.mark.parametrize("window", [2048, None])
def test_flip_every_byte_rejected(suite: str, window: int | None) -> None:
    sealer, opener = Sealer(KEY, suite), Opener(KEY, suite, window=window)
    frame = sealer.seal(FRAME_DATA, bytes(range(40)))
    for i in range(len(frame)):
        for bit in (0x01, 0x80, 0xFF):
            bad = bytearray(frame)
            bad[i] ^= bit
            assert opener.open(bytes(bad)) is None, (i, bit)
    for n in range(len(frame)):
        assert opener.open(frame[:n]) is None
    assert opener.open(frame + b"x") is None
    assert opener.accepted == 0
    assert opener.rejected == 3 * len(frame) + len(frame) + 1
    # forgeries never moved the window: the genuine frame still opens, once
    replayed = opener.replayed  # flipped counters may look stale before any decryption
    assert opener.open(frame) == (FRAME_DATA, bytes(range(40)))
    assert opener.open(frame) is None and opener.replayed == replayed + 1


def test_wrong_key_or_suite_rejected() -> None:
    frame = Sealer(KEY, "aes256gcm").seal(FRAME_DATA, b"abc")
    assert Opener(bytes(32), "aes256gcm").open(frame) is None
    assert Opener(KEY, "chacha20poly1305").open(frame) is None


# --------------------------------------------------------------------------- replay window

W = 64


def _t(n: int, ok: bool) -> tuple[int, bool]:
    return (n, ok)


REPLAY_TABLE = [  # after wireguard-go replay/replay_test.go, for a window of W counters
    _t(0, True),
    _t(1, True),
    _t(1, False),
    _t(9, True),
    _t(8, True),
    _t(7, True),
    _t(7, False),
    _t(W, True),  # 0 falls out (W - 0 = W)
    _t(W - 1, True),
    _t(W - 1, False),
    _t(W - 2, True),
    _t(2, True),  # oldest still inside: W - 2 < W
    _t(2, False),
    _t(W + 16, True),
    _t(3, False),  # too old
    _t(W + 16, False),
    _t(W * 4, True),  # far ahead: the whole window slides
    _t(W * 4 - (W - 1), True),  # oldest slot of the new window
    _t(10, False),
    _t(W * 4 - W, False),  # just outside
    _t(W * 4 - (W + 1), False),
    _t(W * 4 - (W - 2), True),
    _t(W * 4 + 1 - W, False),  # == W*4 - (W-1), already seen
    _t(0, False),
    _t(REJECT_AFTER_FRAMES, False),
    _t(REJECT_AFTER_FRAMES - 1, True),
    _t(REJECT_AFTER_FRAMES, False),
    _t(REJECT_AFTER_FRAMES - 1, False),
    _t(REJECT_AFTER_FRAMES - 2, True),
    _t(REJECT_AFTER_FRAMES + 1, False),
    _t(REJECT_AFTER_FRAMES + 2, False),
    _t(REJECT_AFTER_FRAMES - 2, False),
    _t(REJECT_AFTER_FRAMES - 3, True),
    _t(0, False),
]


def _feed(window: ReplayWindow, ctr: int) -> bool:
    if not window.check(ctr):
        return False
    window.update(ctr)
    return True


def test_replay_table() -> None:
    w = ReplayWindow(W)
    for step, (ctr, ok) in enumerate(REPLAY_TABLE):
        assert _feed(w, ctr) is ok, f"step {step}: counter {ctr}"


def test_replay_bulk() -> None:
    w = ReplayWindow(W)  # ascending W-1, then 0 is the oldest still inside
    assert all(_feed(w, i) for i in range(1, W))
    assert _feed(w, 0) and not _feed(w, 0)
    w = ReplayWindow(W)  # W ascending from 2: 0 is just outside
    assert all(_feed(w, i) for i in range(2, W + 2))
    assert not _feed(w, 0)
    w = ReplayWindow(W)  # descending: every one inside, then all duplicates
    assert all(_feed(w, i) for i in range(W, 0, -1))
    assert not any(_feed(w, i) for i in range(W, 0, -1))
    assert not _feed(w, 0)


def _frames(sealer: Sealer, n: int, **kw: float) -> list[bytes]:
    return [sealer.seal(FRAME_DATA, b"%d" % i, **kw) for i in range(n)]


def test_opener_reorder_duplicates_too_old() -> None:
    sealer, opener = Sealer(KEY, "aes256gcm"), Opener(KEY, "aes256gcm", window=128)
    frames = _frames(sealer, 300)
    order = list(range(0, 100))
    random.Random(7).shuffle(order)
    for i in order:
        assert opener.open(frames[i]) == (FRAME_DATA, b"%d" % i)
    for i in order[:10]:
        assert opener.open(frames[i]) is None
    assert opener.open(frames[299]) is not None  # far ahead
    assert opener.open(frames[150]) is None  # 299 - 150 >= 128: too old
    assert opener.open(frames[172]) is not None  # 299 - 172 = 127: inside
    assert opener.open(frames[172]) is None
    assert (opener.accepted, opener.replayed, opener.rejected) == (102, 12, 12)


def test_counter_beyond_limit_rejected_even_if_authentic() -> None:
    opener = Opener(KEY, "aes256gcm")
    assert opener.open(spec_frame("aes256gcm", KEY, 0, REJECT_AFTER_FRAMES, 0, b"x")) is None
    assert opener.open(spec_frame("aes256gcm", KEY, 0, REJECT_AFTER_FRAMES - 1, 0, b"x"))


def test_tcp_strict_order() -> None:
    sealer, opener = Sealer(KEY, "chacha20poly1305"), Opener(KEY, "chacha20poly1305", window=None)
    f = _frames(sealer, 5)
    assert opener.open(f[0]) is not None
    assert opener.open(f[2]) is None  # gap
    assert opener.open(f[1]) is not None
    assert opener.open(f[1]) is None  # duplicate
    assert opener.open(f[0]) is None  # old
    assert opener.open(f[2]) is not None
    assert opener.replayed == 3


# --------------------------------------------------------------------------- epochs


def test_needs_rekey_by_bytes_time_or_frames() -> None:
    clock = Clock()
    by_bytes = Sealer(KEY, "aes256gcm", clock=clock, rekey_bytes=1000)
    by_time = Sealer(KEY, "aes256gcm", clock=clock, rekey_seconds=120)
    by_frames = Sealer(KEY, "aes256gcm", clock=clock, rekey_frames=3)
    for _ in range(9):
        by_bytes.seal(FRAME_DATA, bytes(99))
    by_frames.seal(0, b"")
    by_frames.seal(0, b"")
    assert not any(s.needs_rekey(clock.t + 119) for s in (by_bytes, by_time, by_frames))
    by_bytes.seal(FRAME_DATA, bytes(99))
    by_frames.seal(0, b"")
    assert by_bytes.needs_rekey(clock.t) and by_frames.needs_rekey(clock.t)
    assert by_bytes.due and by_frames.due and not by_time.due  # the data path's flag
    assert by_time.needs_rekey(clock.t + 120) and by_time.rekey_due() == clock.t + 120
    by_time.install(KEY2, 1, clock.t + 120)
    assert not by_time.needs_rekey(clock.t + 121)  # a new key restarts every count
    with pytest.raises(ValueError):
        Sealer(KEY, "aes256gcm", rekey_frames=REJECT_AFTER_FRAMES + 1)


def test_next_epoch_with_reordering_and_grace_for_in_flight_frames() -> None:
    clock = Clock()
    sealer = Sealer(KEY, "chacha20poly1305", clock=clock)
    opener = Opener(KEY, "chacha20poly1305", now=clock.t)
    old = _frames(sealer, 5)
    sealer.install(KEY2, 1, clock.t)
    new = _frames(sealer, 3)
    assert new[0][0] == 1 and new[0][1:9] == bytes(8)
    assert opener.open(new[1], clock.t) is None  # not installed yet: unknown epoch
    opener.install_next(KEY2, 1, clock.t)
    assert opener.open(new[1], clock.t) is not None  # the next epoch overtakes ...
    for f in old[:3]:
        assert opener.open(f, clock.t + 1) is not None  # ... old frames still in flight
    assert opener.open(new[0], clock.t + 1) is not None
    assert opener.open(old[3], clock.t + EPOCH_GRACE_SECONDS + 1) is None  # grace over
    assert opener.open(old[4], clock.t + 1) is None  # key dropped for good
    assert opener.epoch == 1 and opener.replayed == 0


def test_keys_older_than_reject_after_are_refused() -> None:
    """REJECT-AFTER: an authentic fresh frame under a key installed 180 s ago or more is
    refused, current key or not; the next key, installed later, still opens."""
    clock = Clock()
    sealer = Sealer(KEY, "aes256gcm", clock=clock)
    opener = Opener(KEY, "aes256gcm", now=clock.t)
    assert opener.open(sealer.seal(0, b"a"), clock.t + 179.9) == (0, b"a")
    assert opener.open(sealer.seal(0, b"b"), clock.t + REJECT_AFTER_SECONDS) is None
    sealer.install(KEY2, 1, clock.t + 170)
    opener.install_next(KEY2, 1, clock.t + 170)
    assert opener.open(sealer.seal(0, b"c"), clock.t + 181) == (0, b"c")
    assert opener.open(sealer.seal(0, b"d"), clock.t + 170 + REJECT_AFTER_SECONDS) is None


def test_tcp_epochs_strict() -> None:
    sealer = Sealer(KEY, "aes256gcm")
    opener = Opener(KEY, "aes256gcm", window=None)
    first = _frames(sealer, 3)
    sealer.install(KEY2, 1)
    opener.install_next(KEY2, 1, 0.0)
    second = _frames(sealer, 3)
    assert all(opener.open(f) is not None for f in first)
    assert opener.open(second[1]) is None  # the next epoch starts at counter 0
    assert all(opener.open(f) is not None for f in second)
    assert opener.open(first[2]) is None  # previous epoch: no grace over tcp
    with pytest.raises(ValueError):
        opener.install_next(KEY3, 1, 0.0)  # epochs only move forward


def test_epoch_byte_wraps() -> None:
    sealer, opener = Sealer(KEY, "aes256gcm"), Opener(KEY, "aes256gcm", window=None)
    for epoch in range(1, 301):
        assert opener.open(sealer.seal(0, b"x")) is not None
        key = bytes([epoch % 256]) * 32
        sealer.install(key, epoch)
        opener.install_next(key, epoch, 0.0)
    assert opener.epoch == 299 and sealer.epoch == 300
    assert opener.open(sealer.seal(0, b"y")) == (0, b"y")


# --------------------------------------------------------------------------- batches


def _state(o: Opener) -> tuple:
    w = o._cur.window
    return (o.accepted, o.rejected, o.replayed, o.epoch,
            (w.last, w.bitmap) if isinstance(w, ReplayWindow) else w.next)


@pytest.mark.parametrize("views", [False, True], ids=["bytes", "views"])
@pytest.mark.parametrize("window", [64, None], ids=["udp", "tcp"])
@pytest.mark.parametrize("seed", range(20))
def test_a_batch_opens_exactly_as_frame_by_frame(window: int | None, seed: int,
                                                 views: bool) -> None:
    """Opener.open_run (through SessionCrypto's fallback rule: None means one by one)
    against Opener.open, over random batches: in order, reordered, replayed, forged,
    truncated, too old for the window.  Same results, same counters, same window;
    ``views``: the frames given as memoryviews (as a udp link hands them)."""
    rng = random.Random(seed)
    s = Sealer(KEY, "aes256gcm")
    frames = [s.seal(FRAME_DATA, rng.randbytes(rng.randrange(0, 300)), 0.0) for _ in range(400)]
    one, many = Opener(KEY, "aes256gcm", window=window), Opener(KEY, "aes256gcm", window=window)
    batched = 0
    pos = 0
    while pos < len(frames):
        k = rng.randrange(1, 40)
        batch = frames[pos:pos + k]
        pos += k
        if window is not None:
            if rng.random() < 0.3:
                batch = rng.sample(batch, len(batch))  # reordered
            if rng.random() < 0.2 and pos > 100:
                batch.insert(rng.randrange(len(batch) + 1), frames[rng.randrange(pos - 100)])
        # (On tcp the first forged frame ends the session: only the last batch has one.)
        last = pos >= len(frames)
        if rng.random() < 0.15 if window is not None else last:  # forged: a flipped byte
            i = rng.randrange(len(batch))
            bad = bytearray(batch[i])
            bad[rng.randrange(len(bad))] ^= 1 << rng.randrange(8)
            batch[i] = bytes(bad)
        if rng.random() < 0.05 and (window is not None or last):
            batch.append(b"\x00" * 5)  # too short
        want = [one.open(f, 0.0) for f in batch]
        if views:
            batch = [memoryview(f) for f in batch]
        plains = many.open_run(batch, 0.0)
        if plains is None:
            got = [many.open(f, 0.0) for f in batch]
        else:
            got = [(p[0], p[1:]) for p in plains]
            batched += 1
        assert got == want
        assert _state(many) == _state(one)
    assert batched > 0  # the fast path ran


@pytest.mark.parametrize("seed", range(5))
def test_a_batch_seals_exactly_as_frame_by_frame(seed: int) -> None:
    """Sealer.seal_data against Sealer.seal: the same frames, byte for byte (counters,
    nonces, tags), the same counter and byte counts after, and the same ``due``."""
    rng = random.Random(seed)
    one = Sealer(KEY, "aes256gcm", rekey_bytes=20_000, rekey_frames=150)
    many = Sealer(KEY, "aes256gcm", rekey_bytes=20_000, rekey_frames=150)
    for _ in range(12):
        payloads = [rng.randbytes(rng.randrange(0, 1500)) for _ in range(rng.randrange(0, 40))]
        want = [one.seal(FRAME_DATA, p, 0.0) for p in payloads]
        got = many.seal_data(payloads)
        assert got == want
        assert (many.counter, many._bytes, many.due) == (one.counter, one._bytes, one.due)
    assert many.due  # the thresholds were crossed on the way


def test_a_batch_never_seals_past_the_counter_limit() -> None:
    s = Sealer(KEY, "aes256gcm")
    s._counter = REJECT_AFTER_FRAMES - 2
    with pytest.raises(OverflowError):
        s.seal_data([b"a", b"b", b"c"])
    assert s.counter == REJECT_AFTER_FRAMES - 2  # nothing sealed
    assert len(s.seal_data([b"a", b"b"])) == 2 and s.counter == REJECT_AFTER_FRAMES


def test_a_batch_across_a_new_epoch_goes_frame_by_frame() -> None:
    """A batch holding the next epoch's first frames is never opened at once: the new
    key (and the grace for the old one) comes with the first of them."""
    s = Sealer(KEY, "aes256gcm")
    o = Opener(KEY, "aes256gcm")
    old = [s.seal(FRAME_DATA, b"a", 0.0) for _ in range(3)]
    s.install(KEY2, 1, 0.0)
    o.install_next(KEY2, 1, 0.0)
    new = [s.seal(FRAME_DATA, b"b", 0.0) for _ in range(3)]
    assert o.open_run(old + new, 0.0) is None and o.accepted == 0
    assert o.open_run(old, 0.0) == [b"\x00a"] * 3
    assert o.open_run(new, 0.0) is None  # not yet current: frame by frame
    assert [o.open(f, 0.0) for f in new] == [(FRAME_DATA, b"b")] * 3 and o.epoch == 1
    assert o.open_run(old[:2] + [s.seal(FRAME_DATA, b"c", 0.0)], 0.0) is None
