"""In-session X25519 rekeying (REKEY after 120 s / 1 GiB, REJECT after 180 s), on a fake
clock: two SessionCrypto ends wired back to back."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from secure_helpers import det_rng
from vt_api import LinkSettings
from vt_crypto.secure import FRAME_DATA, Opener
from vt_crypto.secure.keys import SessionKeys
from vt_crypto.secure.rekey import (
    FRAME_REKEY_DONE,
    FRAME_REKEY_INIT,
    FRAME_REKEY_RESP,
    SessionCrypto,
)
from vt_crypto.secure.seal import REJECT_AFTER_SECONDS

KEYS = SessionKeys("aes256gcm", c2s=bytes(range(32)), s2c=bytes(range(1, 33)),
                   session_id=bytes(16))


class Wire:
    """Client and server ends; ``t`` is the fake clock.  ``lose`` names transmissions to
    drop, counted over every frame sent (0 = the first)."""

    def __init__(self, window: int | None = 2048, **kw: float) -> None:
        self.t = 1000.0
        self.c = SessionCrypto(KEYS, "client", self.t, window=window, rng=det_rng(b"c"), **kw)
        self.s = SessionCrypto(KEYS, "server", self.t, window=window, rng=det_rng(b"s"), **kw)
        self.sent = 0
        self.lose: set[int] = set()
        self.seen: list[tuple[str, int]] = []

    def peer(self, end: SessionCrypto) -> SessionCrypto:
        return self.s if end is self.c else self.c

    def deliver(self, src: SessionCrypto, frame: bytes) -> tuple[int, bytes] | None:
        n, self.sent = self.sent, self.sent + 1
        if n in self.lose:
            return None
        got = self.peer(src).open(frame, self.t)
        if got is not None:
            self.seen.append((src.role, got[0]))
        return got

    def pump(self) -> None:
        """Let both ends send their rekey frames until neither has any (bounded)."""
        for _ in range(10):
            moved = False
            for end in (self.c, self.s):
                for frame in end.data_to_send(self.t):
                    moved = True
                    self.deliver(end, frame)
            if not moved:
                return
        raise AssertionError("rekey frames never stopped")

    def at(self, t: float) -> None:
        self.t = 1000.0 + t
        for end in (self.c, self.s):
            end.on_timer(self.t)
        self.pump()

    def data(self, src: SessionCrypto, payload: bytes = b"ping") -> tuple[int, bytes] | None:
        return self.deliver(src, src.seal(FRAME_DATA, payload, self.t))

    def both_ways(self) -> bool:
        return (self.data(self.c) == (FRAME_DATA, b"ping")
                and self.data(self.s) == (FRAME_DATA, b"ping"))


def epochs(w: Wire) -> tuple[int, int, int, int]:
    return w.c.sealer.epoch, w.s.opener.epoch, w.s.sealer.epoch, w.c.opener.epoch


def test_exchange_every_120_seconds() -> None:
    w = Wire()
    assert w.both_ways()
    w.at(119.9)
    assert w.seen == [("client", 0), ("server", 0)]  # nothing due yet
    assert w.c.next_deadline() == w.s.next_deadline() == 1120.0
    w.at(120)
    # Both ends were due: the client's exchange won, the server's INIT was ignored.
    kinds = [k for _, k in w.seen[2:]]
    assert kinds.count(FRAME_REKEY_RESP) == 1 and FRAME_REKEY_DONE in kinds
    assert w.c.rekeys == w.s.rekeys == 1
    assert w.both_ways()
    assert epochs(w) == (1, 1, 1, 1)
    w.at(239)
    assert epochs(w) == (1, 1, 1, 1)
    w.at(245)
    assert w.both_ways() and epochs(w) == (2, 2, 2, 2)


def test_exchange_after_rekey_bytes() -> None:
    w = Wire(rekey_bytes=1000)
    for _ in range(9):
        w.data(w.s, bytes(110))
    w.pump()
    assert w.s.rekeys == 0
    w.data(w.s, bytes(110))
    w.pump()  # the server sent 1 GiB-equivalent: it starts, the client answers
    assert w.c.rekeys == 1
    assert w.data(w.c) == (FRAME_DATA, b"ping")  # the server switches on this frame
    assert w.s.rekeys == 1 and w.both_ways() and epochs(w) == (1, 1, 1, 1)


def chained(key: bytes) -> bytes:
    return HKDF(algorithm=SHA256(), length=32, salt=None, info=b"vt rekey").derive(key)


def test_a_leaked_key_does_not_open_the_next_epoch() -> None:
    """The fix for the hash chain (``key_{e+1} = HKDF(key_e)``): someone who holds epoch
    0's keys and every byte on the wire still cannot open epoch 1."""
    w = Wire()
    w.at(120)
    frame = w.c.seal(FRAME_DATA, b"secret", w.t)
    assert frame[0] == 1
    thief = Opener(KEYS.c2s, "aes256gcm")
    thief.install_next(chained(KEYS.c2s), 1, 0.0)
    assert thief.open(frame) is None
    assert w.deliver(w.c, frame) == (FRAME_DATA, b"secret")


@pytest.mark.parametrize(("lost", "what"), [(0, "INIT"), (1, "RESP")])
def test_lost_init_or_resp_is_sent_again(lost: int, what: str) -> None:
    w = Wire()
    w.lose = {lost}
    w.c.on_timer(1120.0)  # only the client due (the server's clock reads earlier)
    w.t = 1120.0
    w.pump()
    assert w.c.rekeys == 0, what
    assert w.both_ways()  # the old keys still work meanwhile
    w.at(125)  # retry after 5 s: a new INIT, a new key
    assert w.c.rekeys == 1 and w.both_ways() and epochs(w) == (1, 1, 1, 1)


def test_lost_done_then_silent_initiator() -> None:
    """DONE lost and the client sends nothing: the server starts its own exchange once
    its answer went unused for the retry time, and both end on the same epoch."""
    w = Wire()
    w.lose = {2}  # INIT, RESP, DONE
    w.c.on_timer(1120.0)
    w.t = 1120.0
    w.pump()
    assert w.c.rekeys == 1 and w.s.rekeys == 0
    assert w.data(w.s) == (FRAME_DATA, b"ping")  # server still on epoch 0: accepted
    w.at(126)
    assert w.s.rekeys >= 1 and w.both_ways()
    assert w.c.sealer.epoch == w.s.opener.epoch and w.s.sealer.epoch == w.c.opener.epoch


def test_tcp_mode_strict_counters() -> None:
    w = Wire(window=None)
    for t in (120, 240, 360):
        w.at(t)
        assert w.both_ways()
    assert epochs(w) == (3, 3, 3, 3)
    assert w.c.opener.rejected == w.s.opener.rejected == 0


def test_keys_are_refused_after_180_seconds_without_an_exchange() -> None:
    """REJECT-AFTER: when no exchange gets through, the old keys die at 180 s."""
    w = Wire()
    w.lose = set(range(1000))  # every rekey frame and every frame from now on
    w.at(120)
    w.at(175)
    w.lose = set()
    assert w.both_ways()
    w.t = 1000.0 + REJECT_AFTER_SECONDS
    assert w.data(w.c) is None and w.data(w.s) is None


def test_tampered_or_forged_rekey_frames_change_nothing() -> None:
    w = Wire()
    w.c.on_timer(1120.0)
    w.t = 1120.0
    (init,) = w.c.data_to_send(w.t)
    assert w.s.open(init[:-1] + bytes([init[-1] ^ 1]), w.t) is None  # AEAD
    assert w.s.opener.next_epoch is None  # not answered
    # An authentic INIT with a low-order X25519 key (all zeros): ignored.
    forged = w.c.seal(FRAME_REKEY_INIT, bytes(4) + (5).to_bytes(4, "big") + bytes(32), w.t)
    assert w.s.open(forged, w.t) == (FRAME_REKEY_INIT, b"")
    assert w.s.opener.next_epoch is None
    # An authentic INIT naming an epoch far ahead (the field would run out): ignored.
    far_epoch = (2**32 - 1).to_bytes(4, "big")
    far = w.c.seal(FRAME_REKEY_INIT, bytes(4) + far_epoch + bytes(range(9, 41)), w.t)
    assert w.s.open(far, w.t) == (FRAME_REKEY_INIT, b"")
    assert w.s.opener.next_epoch is None
    # A replayed INIT: the replay window refuses it; then the real one goes through.
    assert w.deliver(w.c, init) is not None
    assert w.s.open(init, w.t) is None
    w.pump()
    assert w.c.rekeys == 1 and w.both_ways()


def test_sealed_links_rekey_after_their_byte_budget() -> None:
    """Two SealedLinks over real UDP sockets on loopback, in an event loop: crossing the
    byte budget schedules the exchange right after the batch, the links carry it, and
    both ends go on in epoch 1."""
    import asyncio
    import select
    import socket
    import time

    from vt_crypto.secure.mode import SealedLink

    from vtcore.transports.base import Endpoints
    from vtcore.transports.udp import UdpLink

    async def main() -> None:
        a, b = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
        try:
            for s in (a, b):
                s.bind(("127.0.0.1", 0))
            a.connect(b.getsockname())
            b.connect(a.getsockname())
            ends = Endpoints("127.0.0.1", 0, "127.0.0.1", 0)
            links = {}
            for role, sock in (("client", a), ("server", b)):
                crypto = SessionCrypto(KEYS, role, time.monotonic(), rekey_bytes=1000)
                links[role] = SealedLink(UdpLink(sock, ends, connected=True, raw=True),
                                         crypto, False)
            c, s = links["client"], links["server"]

            async def shuttle(src, dst) -> list[tuple[int, bytes]]:
                await asyncio.sleep(0)  # the scheduled flushes run
                select.select([dst.fileno()], [], [], 0.5)
                got = dst.read_frames(64)
                await asyncio.sleep(0)
                return got

            for _ in range(10):
                c.send([bytes(100)])
            assert c.rekeys == 0  # nothing inside the batch: INIT goes after it
            assert len(await shuttle(c, s)) == 10  # rekey frames never reach the tunnel
            for src, dst in ((c, s), (s, c), (c, s)):  # INIT, RESP, DONE
                await shuttle(src, dst)
            assert c.rekeys == s.rekeys == 1
            c.send([b"new epoch"])
            assert await shuttle(c, s) == [(0, b"new epoch")]
            s.send([b"back"])
            assert await shuttle(s, c) == [(0, b"back")]
            assert c.crypto.sealer.epoch == s.crypto.opener.epoch == 1
            assert s.crypto.sealer.epoch == c.crypto.opener.epoch == 1
            for link in (c, s):
                link.close()
        finally:
            a.close()
            b.close()

    asyncio.run(main())


def test_rekeys_reach_the_session_status() -> None:
    """A sealing link reports its exchanges, and a session's status document (so ``vt
    status`` and the metrics) carries them, with the tunnel's last-frame age."""
    from types import SimpleNamespace

    from vt_crypto.secure.mode import SealedLink

    from vtcore.runtime.status import session_status
    from vtcore.runtime.tunnel import Counters
    from vtcore.transports.base import VTUN_FRAMING

    w = Wire()
    w.at(120)
    w.at(245)
    inner = SimpleNamespace(framing=VTUN_FRAMING, ready=lambda: True,
                            max_payload=VTUN_FRAMING.max_payload)
    link = SealedLink(inner, w.c, stream=True)
    assert link.rekeys == 2
    class Session(SimpleNamespace):
        """Weak-referenceable and hashable, as the real one (status keeps its rate
        window by it)."""

        __hash__ = object.__hash__

    session = Session(
        host=SimpleNamespace(name="office"), peer="10.0.0.2:4000", udp_peer=None,
        started=0.0, device=None, counters=Counters(),
        settings=LinkSettings(host="office", role="server", transport="tcp", tunnel_type="tun"),
        tunnel=SimpleNamespace(link=link, pull_counters=lambda: None,
                               link_idle=lambda now: 0.25, device_idle=lambda now: 0.5),
    )
    status = session_status(session)
    assert (status["rekeys"], status["last_frame_age"]) == (2, 0.25)
    assert (status["last_frame_out_age"], status["cipher"]) == (0.5, None)
