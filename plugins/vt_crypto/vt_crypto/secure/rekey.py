"""Fresh keys inside a session: an ephemeral X25519 exchange every ``rekey_seconds`` (120)
or ``rekey_bytes`` (1 GiB), carried in sealed frames, so it is authenticated under the
current keys.  Receivers refuse keys older than ``reject_seconds`` (180).  These are
WireGuard's REKEY-AFTER and REJECT-AFTER timers.

Frames (types of the sealed frame layer, payload sizes in bytes)::

    REKEY_INIT  4  id (4) | epoch N (4) | X25519 public key (32)   initiator, current key
    REKEY_RESP  5  id (4) | X25519 public key (32)                 responder, current key
    REKEY_DONE  6  (empty)                                         initiator, under epoch N

Both ends then hold ``keys.rekeyed(X25519(a, B), session_id, N)`` as epoch N's keys (N is
above every epoch either end has used).  The initiator sends under them at once (DONE
first); the responder from the first authentic frame it receives under epoch N.  An
unanswered INIT is sent again (new id and key) after ``retry_seconds``.  When both ends
start at once, the client's exchange wins: the server drops its own and answers.  A
responder still waiting ``retry_seconds`` later (DONE lost, peer silent) starts an
exchange of its own.

Sans-I/O: the caller passes ``now``, seals nothing itself, and writes :meth:`data_to_send`
whenever it is not in the middle of writing a batch (frames must leave in counter order).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from operator import itemgetter

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from vt_crypto.secure.keys import Role, SessionKeys, rekeyed
from vt_crypto.secure.seal import (
    DEFAULT_WINDOW,
    REJECT_AFTER_SECONDS,
    REKEY_AFTER_BYTES,
    REKEY_AFTER_SECONDS,
    Opener,
    Sealer,
)

FRAME_REKEY_INIT = 4
FRAME_REKEY_RESP = 5
FRAME_REKEY_DONE = 6
REKEY_TYPES = frozenset({FRAME_REKEY_INIT, FRAME_REKEY_RESP, FRAME_REKEY_DONE})
REKEY_RETRY_SECONDS = 5.0
MAX_EPOCH_STEP = 16
"""An INIT may name an epoch at most this far ahead (a few abandoned exchanges); the
epoch field can never run out."""
_ID, _EPOCH, _PUB = 4, 4, 32
_first, _rest = itemgetter(0), itemgetter(slice(1, None))

Rng = Callable[[int], bytes]


def _public(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes_raw()


class SessionCrypto:
    """Both directions of one session's sealed frames, and their rekeying."""

    def __init__(
        self,
        keys: SessionKeys,
        role: Role,
        now: float,
        *,
        window: int | None = DEFAULT_WINDOW,
        rng: Rng = os.urandom,
        rekey_seconds: float = REKEY_AFTER_SECONDS,
        rekey_bytes: int = REKEY_AFTER_BYTES,
        reject_seconds: float = REJECT_AFTER_SECONDS,
        retry_seconds: float = REKEY_RETRY_SECONDS,
    ) -> None:
        self.role = role
        self.suite = keys.suite
        self.sealer = Sealer(keys.send_key(role), keys.suite, clock=lambda: now,
                             rekey_seconds=rekey_seconds, rekey_bytes=rekey_bytes)
        self.opener = Opener(keys.recv_key(role), keys.suite, window=window,
                             reject_seconds=reject_seconds, now=now)
        self._session_id = keys.session_id
        self._rng = rng
        self._retry = retry_seconds
        self._outbox: list[tuple[int, bytes]] = []
        self._init: tuple[bytes, int, X25519PrivateKey, float] | None = None
        """Our exchange in flight: (id, epoch, private key, when sent)."""
        self._answered: tuple[int, bytes, float] | None = None
        """Responder: (epoch, our new sending key, when we answered) until we use it."""
        self.rekeys = 0

    def __repr__(self) -> str:
        return f"<SessionCrypto {self.role} epoch={self.sealer.epoch} rekeys={self.rekeys}>"

    # -- data path

    def seal(self, ftype: int, payload: bytes, now: float) -> bytes:
        """A sealed frame.  A due exchange starts from :meth:`on_timer` or
        :meth:`data_to_send`, never in the middle of the caller's batch."""
        return self.sealer.seal(ftype, payload, now)

    def open(self, frame: bytes, now: float) -> tuple[int, bytes] | None:
        """``(type, payload)`` of an authentic frame, None if rejected.  Rekey frames are
        handled here and returned with an empty payload (the caller skips them)."""
        opened = self.opener.open(frame, now)
        if opened is None:
            return None
        answered = self._answered
        if answered is not None and self.opener.epoch == answered[0]:
            self._answered = None  # the initiator sends under the new keys: so do we
            self.sealer.install(answered[1], answered[0], now)
            self.rekeys += 1
        ftype, payload = opened
        if ftype in REKEY_TYPES:
            self._on_rekey(ftype, payload, now)
            return ftype, b""
        return opened

    def open_many(self, frames: list, now: float) -> list[tuple[int, bytes] | None]:
        """:meth:`open` of each frame, in order, with the same results: a batch of the
        current epoch's frames at once (:meth:`open_run`), anything else frame by frame
        (a rekey frame can install the key the next frame needs)."""
        plains = self.open_run(frames, now)
        if plains is None:
            return [self.open(f, now) for f in frames]
        return list(self.settle_run(plains, now))

    def open_run(self, frames: list, now: float) -> list[bytes] | None:
        """The plaintexts (type byte, payload) of a batch opened at once
        (:meth:`Opener.open_run`); None, with nothing changed, when it must go frame by
        frame.  The caller hands any plaintexts that are not all data frames to
        :meth:`settle_run`."""
        return self.opener.open_run(frames, now)

    def settle_run(self, plains: list, now: float) -> list[tuple[int, bytes]]:
        """``(type, payload)`` of each plaintext :meth:`open_run` returned, as :meth:`open`
        gives them: rekey frames handled here, returned with an empty payload."""
        out = list(zip(map(_first, plains), map(_rest, plains), strict=True))
        if REKEY_TYPES.isdisjoint(bytes(map(_first, plains))):
            return out  # a batch of data: no Python step per frame
        for i, (ftype, payload) in enumerate(out):
            if ftype in REKEY_TYPES:
                self._on_rekey(ftype, payload, now)
                out[i] = (ftype, b"")
        return out

    @property
    def exchanging(self) -> bool:
        """An exchange is under way (started or answered)."""
        return self._init is not None or self._answered is not None

    # -- timers and output

    def next_deadline(self) -> float:
        """When :meth:`on_timer` has something to do (monotonic seconds)."""
        if self._init is not None:
            return self._init[3] + self._retry
        due = self.sealer.rekey_due()
        if self._answered is not None:
            return max(due, self._answered[2] + self._retry)
        return due

    def on_timer(self, now: float) -> None:
        if self._due(now):
            self._start(now)

    def data_to_send(self, now: float) -> list[bytes]:
        """Sealed rekey frames to write now, in order (also starts a due exchange)."""
        self.on_timer(now)
        out = [self.sealer.seal(ftype, payload, now) for ftype, payload in self._outbox]
        self._outbox.clear()
        return out

    # -- the exchange

    def _due(self, now: float) -> bool:
        if self._init is not None:
            return now - self._init[3] >= self._retry  # unanswered: again, new key
        if self._answered is not None and now - self._answered[2] < self._retry:
            return False  # the initiator's keys are about to arrive
        return self.sealer.needs_rekey(now)

    def _start(self, now: float) -> None:
        self._answered = None
        epoch = max(self.sealer.epoch, self.opener.epoch, self.opener.next_epoch or 0) + 1
        private = X25519PrivateKey.from_private_bytes(self._rng(32))
        ident = self._rng(_ID)
        self._init = (ident, epoch, private, now)
        self._outbox.append(
            (FRAME_REKEY_INIT, ident + epoch.to_bytes(_EPOCH, "big") + _public(private))
        )

    def _keys(self, private: X25519PrivateKey, public: bytes, epoch: int):
        """(send, recv) keys of ``epoch``, or None for a low-order peer key."""
        try:
            shared = private.exchange(X25519PublicKey.from_public_bytes(public))
        except ValueError:
            return None
        c2s, s2c = rekeyed(shared, self._session_id, epoch)
        return (c2s, s2c) if self.role == "client" else (s2c, c2s)

    def _on_rekey(self, ftype: int, payload: bytes, now: float) -> None:
        if ftype == FRAME_REKEY_INIT and len(payload) == _ID + _EPOCH + _PUB:
            self._on_init(payload, now)
        elif ftype == FRAME_REKEY_RESP and len(payload) == _ID + _PUB:
            self._on_resp(payload, now)
        # DONE did its work by opening under the new key; anything else is ignored.

    def _on_init(self, payload: bytes, now: float) -> None:
        if self._init is not None and self.role == "client":
            return  # both started: the client's exchange wins
        epoch = int.from_bytes(payload[_ID : _ID + _EPOCH], "big")
        highest = max(self.sealer.epoch, self.opener.epoch)
        if not highest < epoch <= highest + MAX_EPOCH_STEP:
            return  # epochs only move forward, and step by little
        private = X25519PrivateKey.from_private_bytes(self._rng(32))
        keys = self._keys(private, payload[_ID + _EPOCH :], epoch)
        if keys is None:
            return
        self._init = None
        self.opener.install_next(keys[1], epoch, now)
        self._answered = (epoch, keys[0], now)
        self._outbox.append((FRAME_REKEY_RESP, payload[:_ID] + _public(private)))

    def _on_resp(self, payload: bytes, now: float) -> None:
        init = self._init
        if init is None or payload[:_ID] != init[0]:
            return  # an answer to an exchange we no longer wait for
        ident, epoch, private, _sent = init
        keys = self._keys(private, payload[_ID:], epoch)
        if keys is None:
            return
        self._init = None
        self.sealer.install(keys[0], epoch, now)
        self.opener.install_next(keys[1], epoch, now)
        self._outbox.append((FRAME_REKEY_DONE, b""))
        self.rekeys += 1
