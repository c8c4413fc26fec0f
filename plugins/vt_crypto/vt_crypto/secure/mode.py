"""Secure mode as the core sees it: a :class:`vtcore.api.SecureMode` and a sealing link.

The core drives the handshake (bytes, time-outs, the flood check) and wraps the
transport's link with :class:`SealedLink` once both ends are established.  Every frame,
data or control, travels sealed; the inner link only carries opaque sealed frames
(native 4-byte framing on TCP, one datagram per frame on UDP).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from itertools import repeat
from operator import itemgetter
from typing import Any, TypedDict, cast

import structlog
from vt_api import (
    CONN_CLOSE,
    ECHO_REP,
    ECHO_REQ,
    Endpoints,
    Link,
    PathMtuLink,
    Role,
    ViewsLink,
)

from vt_crypto.secure.errors import SecureHandshakeError
from vt_crypto.secure.handshake import ClientSecureHandshake, ServerSecureHandshake
from vt_crypto.secure.limiter import HandshakeLimiter, source_key
from vt_crypto.secure.negotiate import HOST_TOKEN, Offer, check_server_reply, server_mode
from vt_crypto.secure.rekey import REKEY_TYPES, SessionCrypto
from vt_crypto.secure.seal import (
    FRAME_CLOSE,
    FRAME_DATA,
    FRAME_ECHO_REP,
    FRAME_ECHO_REQ,
    OVERHEAD,
)
from vt_crypto.secure.settings import DEFAULT_MAX_FRAME, SecureSettings
from vt_crypto.secure.suites import SECURE_WORDS

_TO_TYPE = {ECHO_REQ: FRAME_ECHO_REQ, ECHO_REP: FRAME_ECHO_REP, CONN_CLOSE: FRAME_CLOSE}
_first, _second, _rest = itemgetter(0), itemgetter(1), itemgetter(slice(1, None))
_TO_FLAG = {FRAME_DATA: 0, FRAME_ECHO_REQ: ECHO_REQ, FRAME_ECHO_REP: ECHO_REP,
            FRAME_CLOSE: CONN_CLOSE}
UDP_WINDOW = 2048
MAX_SEALED_PAYLOAD = 65535 + 64
"""Room for a 64 KiB GSO packet and its virtio header (offload) in one sealed frame."""
log = structlog.get_logger("vt.secure")
TEST_TIMERS_ENV = "VT_TEST_SECURE_REKEY"
"""Test-only: ``REKEY,REJECT`` seconds (e.g. ``2,3``) instead of 120 and 180."""


class RekeyTimers(TypedDict, total=False):
    """Keyword arguments of :class:`SessionCrypto` that override its rekey timers."""

    rekey_seconds: float
    reject_seconds: float
    retry_seconds: float


def rekey_timers() -> RekeyTimers:
    """The rekey timers: WireGuard's 120 s / 180 s, or the test knob's (never shorter
    than a second, and REJECT above REKEY)."""
    raw = os.environ.get(TEST_TIMERS_ENV, "")
    try:
        rekey, reject = (float(x) for x in raw.split(","))
    except ValueError:
        return {}
    if not 1.0 <= rekey < reject:
        return {}
    return {"rekey_seconds": rekey, "reject_seconds": reject, "retry_seconds": min(5.0, rekey)}


class SealedLink:
    """Wraps a transport link: seals what the tunnel sends, opens what it receives.

    Over TCP a rejected frame ends the session (a stream cannot lose or reorder frames,
    so a bad one is an attack or a bug); over UDP it is dropped and counted.  Rekey
    frames (:mod:`~vt_crypto.secure.rekey`) are handled here and written from a timer
    or right after a read, never inside the tunnel's batch (counter order).
    """

    def __init__(self, inner, crypto: SessionCrypto, stream: bool) -> None:
        self.inner = inner
        self.crypto = crypto
        self._sealer = crypto.sealer
        self._seal = crypto.sealer.seal
        self.stream = stream
        self.rejected = 0
        self._first: tuple[int, bytes] | None = None
        """The (flag, payload) of the datagram that named a nat_hack peer, opened already."""
        if not stream and not inner.ready() and hasattr(inner, "admit_first"):
            # nat_hack: the peer's address comes from its first datagram; only one that
            # authenticates may name it, or a forged datagram could steal the session.
            inner.admit_first = self._admit_first
        self._timer: asyncio.TimerHandle | None = None
        self._flush_pending = False
        self._rekeys_logged = 0
        self._closed = False
        if isinstance(inner, ViewsLink):
            inner.views = True  # the sealed frames are read here only, while opened
        self._arm()

    def follow_path_mtu(self) -> bool:
        """Contract 1.4 ``PathMtuLink``: the inner datagram link's, whose ``max_payload``
        this one follows (sealing is per frame: a dropped frame costs only itself)."""
        return isinstance(self.inner, PathMtuLink) and self.inner.follow_path_mtu()

    @property
    def max_payload(self) -> int:
        """What the tunnel may hand :meth:`send`: the inner link's less the seal (the
        inner one follows the path MTU over udp, so this is read each time)."""
        return min(MAX_SEALED_PAYLOAD, self.inner.max_payload - OVERHEAD)

    @property
    def rekeys(self) -> int:
        """Fresh key exchanges this session made (for ``vt status`` and metrics)."""
        return self.crypto.rekeys

    def _arm(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a pure test): the caller drives on_timer
            return
        if self._timer is not None:
            self._timer.cancel()
        delay = max(0.0, self.crypto.next_deadline() - time.monotonic())
        self._timer = loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if not self._closed:
            self._flush()
            self._arm()

    def _flush(self) -> None:
        """Write the rekey frames due (sealed now, so in counter order)."""
        self._flush_pending = False
        if self._closed:
            return
        crypto = self.crypto
        frames = crypto.data_to_send(time.monotonic())
        if frames and self.inner.ready():
            self.inner.send(frames)
            self._arm()
        if crypto.rekeys != self._rekeys_logged:
            self._rekeys_logged = crypto.rekeys
            log.info("secure mode rekeyed", epoch=crypto.sealer.epoch, rekeys=crypto.rekeys)

    def _flush_soon(self) -> None:
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush)

    # Link protocol: what the tunnel calls
    @property
    def endpoints(self) -> Endpoints:
        return self.inner.endpoints

    @property
    def bad_frames(self) -> int:
        return self.inner.bad_frames + self.rejected

    @property
    def dropped_out(self) -> int:
        return self.inner.dropped_out

    @property
    def on_unreachable(self):
        return getattr(self.inner, "on_unreachable", None)

    @on_unreachable.setter
    def on_unreachable(self, callback) -> None:
        """The tunnel's ICMP-error hook goes to the transport's link (udp has one)."""
        if hasattr(self.inner, "on_unreachable"):
            self.inner.on_unreachable = callback

    def fileno(self) -> int:
        return self.inner.fileno()

    def ready(self) -> bool:
        return self.inner.ready()

    def backlog(self) -> int:
        return self.inner.backlog()

    def flush(self) -> None:
        self.inner.flush()

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.inner.close()

    def send(self, payloads: list[bytes]) -> None:
        """Sealed here, in order (mapped over the batch); the inner link frames them (its
        header on a stream, one datagram each over udp)."""
        self.inner.send(self._sealer.seal_data(payloads))
        if self._sealer.due and not self._flush_pending and not self.crypto.exchanging:
            self._flush_soon()  # 1 GiB sent: a new key, once this batch is out

    def send_control(self, flag: int) -> None:
        self.inner.send([self.seal_control(flag)])

    def seal_data(self, payload: bytes) -> bytes:
        """One data frame sealed as :meth:`send` would (for tools that craft frames)."""
        return self._seal(FRAME_DATA, payload, time.monotonic())

    def seal_control(self, flag: int) -> bytes:
        return self._seal(_TO_TYPE[flag], b"", time.monotonic())

    def _admit_first(self, frame: bytes) -> bool:
        """Opened here, once: :meth:`read_frames` hands on the result (a second open
        would count it as a replay)."""
        opened = self.crypto.open(frame, time.monotonic())
        if opened is None:
            return False
        flag = _TO_FLAG.get(opened[0])
        if flag is None:
            return False
        self._first = (flag, opened[1])
        return True

    def read_frames(self, limit: int) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        now = time.monotonic()
        crypto = self.crypto
        frames = self.inner.read_frames(limit)
        if self._first is not None:
            # The datagram that named the nat_hack peer leads this batch, opened already.
            out.append(self._first)
            self._first = None
            frames = frames[1:]
        sealed = list(map(_second, frames))
        plains = crypto.open_run(sealed, now)
        if plains is None:
            results: list[tuple[int, bytes] | None] = [crypto.open(f, now) for f in sealed]
        elif bytes(map(_first, plains)) == bytes(len(plains)):  # a batch of data (type 0)
            out += zip(repeat(0), map(_rest, plains))
            return out
        else:
            results = list(crypto.settle_run(plains, now))
        for opened in results:
            if opened is None:
                self.rejected += 1
                if self.stream:
                    raise EOFError("secure mode: a frame failed authentication")
                continue
            ftype, payload = opened
            if ftype in REKEY_TYPES:
                self._flush_soon()
                continue
            flag = _TO_FLAG.get(ftype)
            if flag is None:
                self.rejected += 1
                continue
            out.append((flag, payload))
        return out


class AeadSecureMode:
    """vt's secure mode (CPace + AEAD), registered for ``encrypt aead`` and friends."""

    name = "aead"
    words = frozenset(SECURE_WORDS)
    host_token = HOST_TOKEN

    def __init__(self) -> None:
        self.limiter = HandshakeLimiter()

    def server_offer(self, host: str, extra: tuple[str, ...], host_known: bool,
                     encrypt_word: str | None) -> bytes | None:
        suite = server_mode(host, extra, host_known, encrypt_word)
        return None if suite is None else Offer(suite)

    def server_handshake(self, offer: bytes, host: str, password: bytes | None, flags: str,
                         options: Mapping[str, object], transcript: bytes):
        settings = None
        if password is not None:
            suite = offer.suite if isinstance(offer, Offer) else None
            if suite is None:  # server_offer made it: never happens
                raise SecureHandshakeError("not a secure-mode offer")
            # SecureSettings checks the option types itself.
            settings = SecureSettings(flags=flags, suite=suite, max_frame=DEFAULT_MAX_FRAME,
                                      options=cast("dict[str, str | int | bool]", dict(options)))
        return ServerSecureHandshake(host, password, settings, transcript)

    def client_accepts(self, block: bytes, host: str, require: bool) -> bool:
        return check_server_reply(block, host, require)

    def client_handshake(self, offer: bytes, host: str, password: bytes, transcript: bytes):
        return ClientSecureHandshake(host, password, transcript)

    def wrap_link(self, established: Any, link: Link, role: Role) -> SealedLink:
        stream = bool(getattr(link, "stream", False))
        crypto = SessionCrypto(established.keys, role, time.monotonic(),
                               window=None if stream else UDP_WINDOW, **rekey_timers())
        return SealedLink(link, crypto, stream)

    def admit(self, source: str, now: float) -> bool:
        return self.limiter.admit(source_key(source), now)

    def release(self) -> None:
        self.limiter.release()


MODE = AeadSecureMode()
