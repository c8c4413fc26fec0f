"""Secure mode's handshake: CPace (ristretto255, SHA-512) over the shared ``passwd``, bound
to both ends' identities for the host and to the whole negotiation, with key confirmation
in both directions.  Two sans-I/O classes in
the style of h11 (``receive_data`` / ``data_to_send`` / ``next_event``).

Messages (each ``2-byte big-endian length | body``; see docs/secure-mode.md)::

    C->S  msg1  01 | CPace Ya (32) | client nonce (32)
    S->C  msg2  02 | CPace Yb (32) | server nonce (32) | AEAD(settings) (272) | confirm_S (32)
    C->S  msg3  03 | confirm_C (32)
    S->C  msg4  04 | finished_S (32)
    either      FF                  abort (the sender failed; no reason given)

The transcript is every byte on the wire from the server greeting on: the caller passes
the three 50-byte blocks (greeting, ``HOST: <host> vt2``, the ``OK VT3`` offer) as
``transcript_prefix``, exactly as sent and received.  The same blocks are in CPace's
channel identifier, with both identities; the client nonce is CPace's session id.

Bad peer input raises :class:`SecureHandshakeError` (one line); the caller then sends
``data_to_send()`` (an abort message) and closes.  Wrong password and unknown host fail
with the same message, :data:`AUTH_FAILED`, on both ends.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from cryptography.exceptions import InvalidTag
from vt_api import MESG_SIZE

from vt_crypto.secure.cpace import POINT_SIZE, CPace, lv_cat
from vt_crypto.secure.errors import AUTH_FAILED, SecureHandshakeError
from vt_crypto.secure.keys import HandshakeKeys, Role, SessionKeys
from vt_crypto.secure.negotiate import parse_offer
from vt_crypto.secure.settings import SETTINGS_SIZE, SecureSettings
from vt_crypto.secure.suites import AUTO_WORD, CHACHA20POLY1305, TAG_SIZE, choose_suite, make_aead

MAX_MESSAGE = 1024
MSG_PAKE_C, MSG_PAKE_S, MSG_CONFIRM_C, MSG_FINISHED_S, MSG_ABORT = 1, 2, 3, 4, 0xFF
NONCE_SIZE = 32
MAC_SIZE = 32
MSG1_SIZE = 1 + POINT_SIZE + NONCE_SIZE
MSG2_HEAD_SIZE = 1 + POINT_SIZE + NONCE_SIZE
MSG2_SIZE = MSG2_HEAD_SIZE + SETTINGS_SIZE + TAG_SIZE + MAC_SIZE
MSG3_SIZE = MSG4_SIZE = 1 + MAC_SIZE
SETTINGS_NONCE = bytes(12)
"""The settings key is used once, so a zero nonce is safe."""
SETTINGS_SUITE = CHACHA20POLY1305
"""The AEAD sealing the settings, the same for every host: the session's own suite is
inside them, so nothing on the wire before the key confirmation depends on the host."""

MALFORMED = "malformed secure handshake message"
TIMED_OUT = "secure handshake timed out"
CONNECTION_LOST = "connection closed during secure handshake"

Rng = Callable[[int], bytes]


def frame(body: bytes) -> bytes:
    """One handshake message on the wire: 2-byte big-endian length, then the body."""
    return len(body).to_bytes(2, "big") + body


def channel_id(host: str, transcript_prefix: bytes) -> bytes:
    """CPace's CI: the client's then the server's identity for this host, then the
    negotiation blocks.  A run for one host (or one role, or one negotiation) is useless
    for another, even with the same password."""
    name = host.encode("latin-1")
    return lv_cat(b"vt client " + name, b"vt server " + name, transcript_prefix)


def mac(key: bytes, transcript_hash: bytes) -> bytes:
    return hmac.new(key, transcript_hash, hashlib.sha256).digest()


@dataclass(frozen=True)
class SecureEstablished:
    """Both ends proved the password; ``keys`` feed the Sealer and Opener, ``settings``
    are the server's (the core builds the session from ``settings.flags``)."""

    host: str
    role: Role
    keys: SessionKeys
    settings: SecureSettings

    def log_fields(self) -> dict[str, str]:
        """Fields safe to log (no key material)."""
        return {
            "host": self.host,
            "role": self.role,
            "suite": self.keys.suite,
            "session": self.keys.session_id.hex()[:16],
        }


class State(enum.Enum):
    WAIT_PAKE_C = "wait_pake_c"
    WAIT_PAKE_S = "wait_pake_s"
    WAIT_CONFIRM_C = "wait_confirm_c"
    WAIT_FINISHED_S = "wait_finished_s"
    DONE = "done"
    FAILED = "failed"


class _Handshake:
    role: Role

    def __init__(self, host: str, transcript_prefix: bytes) -> None:
        if len(transcript_prefix) < MESG_SIZE:
            raise ValueError("transcript_prefix must end with the OK VT3 offer block")
        if not parse_offer(transcript_prefix[-MESG_SIZE:]):
            raise ValueError("transcript_prefix must end with the OK VT3 offer block")
        self.host = host
        self.state = State.FAILED
        self._transcript = hashlib.sha256(transcript_prefix)
        self._ci = channel_id(host, transcript_prefix)
        self._buf = b""
        self._out = b""
        self._trailing = b""
        self._events: deque[SecureEstablished] = deque()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} host={self.host!r} state={self.state.value}>"

    # -- runtime interface

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer.  Raises SecureHandshakeError on failure."""
        if self.state is State.DONE:
            self._trailing += data
            return
        if self.state is State.FAILED:
            return
        self._buf += data
        while len(self._buf) >= 2 and self.state not in (State.DONE, State.FAILED):
            n = int.from_bytes(self._buf[:2], "big")
            if n == 0 or n > MAX_MESSAGE:
                self._fail(MALFORMED)
            if len(self._buf) < 2 + n:
                break
            raw, self._buf = self._buf[: 2 + n], self._buf[2 + n :]
            body = raw[2:]
            if body == bytes((MSG_ABORT,)):
                self._fail(AUTH_FAILED, abort=False)
            self._handle(raw, body)
        if self.state is State.DONE:
            self._trailing, self._buf = self._buf, b""

    def data_to_send(self) -> bytes:
        """Bytes to write to the peer (empty when none); returned once."""
        out, self._out = self._out, b""
        return out

    def next_event(self) -> SecureEstablished | None:
        """``SecureEstablished`` once the handshake succeeded, else None."""
        return self._events.popleft() if self._events else None

    def trailing_data(self) -> bytes:
        """Bytes received after the handshake ended (the first sealed frames)."""
        out, self._trailing = self._trailing, b""
        return out

    @property
    def done(self) -> bool:
        return self.state is State.DONE

    def timed_out(self) -> None:
        """The runtime's timer fired: fail (unless already done) with a clear message."""
        if self.state is not State.DONE:
            self._fail(TIMED_OUT, abort=False)

    def connection_lost(self) -> None:
        """The peer closed the connection: fail unless already done."""
        if self.state is not State.DONE:
            self._fail(CONNECTION_LOST, abort=False)

    # -- internals

    def _handle(self, raw: bytes, body: bytes) -> None:
        raise NotImplementedError

    def _send(self, body: bytes) -> None:
        raw = frame(body)
        self._transcript.update(raw)
        self._out += raw

    def _fail(self, why: str, abort: bool = True) -> NoReturn:
        if abort and self.state is not State.FAILED:
            self._out += frame(bytes((MSG_ABORT,)))
        self.state = State.FAILED
        self._buf = b""
        raise SecureHandshakeError(why)

    def _expect(self, body: bytes, mtype: int, size: int) -> None:
        if len(body) != size or body[0] != mtype:
            self._fail(MALFORMED)

    def _established(self, keys: SessionKeys, settings: SecureSettings) -> None:
        self.state = State.DONE
        self._events.append(SecureEstablished(self.host, self.role, keys, settings))


class ClientSecureHandshake(_Handshake):
    """Client side.  msg1 is ready in ``data_to_send()`` right after construction."""

    role: Role = "client"

    def __init__(
        self, host: str, password: bytes, transcript_prefix: bytes, *, rng: Rng = os.urandom
    ) -> None:
        super().__init__(host, transcript_prefix)
        if not password:
            raise ValueError("secure mode needs a password")
        nonce = rng(NONCE_SIZE)
        self._pake: CPace | None = CPace(password, self._ci, nonce, initiator=True, rng=rng)
        self._send(bytes((MSG_PAKE_C,)) + self._pake.share + nonce)
        self.state = State.WAIT_PAKE_S
        self._keys: SessionKeys | None = None
        self._settings: SecureSettings | None = None
        self._finished: bytes = b""

    def _handle(self, raw: bytes, body: bytes) -> None:
        if self.state is State.WAIT_PAKE_S:
            self._on_pake_s(raw, body)
        else:
            self._on_finished(raw, body)

    def _on_pake_s(self, raw: bytes, body: bytes) -> None:
        self._expect(body, MSG_PAKE_S, MSG2_SIZE)
        assert self._pake is not None
        key = self._pake.finish(body[1 : 1 + POINT_SIZE])
        self._pake = None
        if key is None:
            self._fail(MALFORMED)
        t = self._transcript.copy()
        t.update(raw[: 2 + MSG2_HEAD_SIZE])
        th_hello = t.digest()
        hk = HandshakeKeys.derive(key, th_hello)
        sealed = body[MSG2_HEAD_SIZE : MSG2_SIZE - MAC_SIZE]
        t.update(sealed)
        if not hmac.compare_digest(mac(hk.confirm_s, t.digest()), body[-MAC_SIZE:]):
            self._fail(AUTH_FAILED)
        try:
            aead = make_aead(SETTINGS_SUITE, hk.settings)
            settings = SecureSettings.decode(aead.decrypt(SETTINGS_NONCE, sealed, th_hello))
        except (InvalidTag, SecureHandshakeError):
            self._fail("malformed secure settings")
        self._transcript.update(raw)
        th_c = self._transcript.digest()
        self._keys = SessionKeys.derive(settings.suite, key, th_c)
        self._settings = settings
        self._send(bytes((MSG_CONFIRM_C,)) + mac(hk.confirm_c, th_c))
        self._finished = mac(hk.finished_s, self._transcript.digest())
        self.state = State.WAIT_FINISHED_S

    def _on_finished(self, raw: bytes, body: bytes) -> None:
        self._expect(body, MSG_FINISHED_S, MSG4_SIZE)
        if not hmac.compare_digest(self._finished, body[1:]):
            self._fail(AUTH_FAILED)
        self._transcript.update(raw)
        assert self._keys is not None and self._settings is not None
        self._established(self._keys, self._settings)


class ServerSecureHandshake(_Handshake):
    """Server side.  ``password=None`` (unknown host): the PAKE runs with a random
    password, so the client fails exactly as with a wrong one.  ``settings`` may then be
    None too.  The CPace computation (the expensive step) happens only after msg1 passed
    the cheap length and type checks.
    """

    role: Role = "server"

    def __init__(
        self,
        host: str,
        password: bytes | None,
        settings: SecureSettings | None,
        transcript_prefix: bytes,
        *,
        rng: Rng = os.urandom,
    ) -> None:
        super().__init__(host, transcript_prefix)
        if password is None:
            password = rng(32)
            settings = SecureSettings(flags="<T>", suite=choose_suite(AUTO_WORD))
        elif not password:
            raise ValueError("secure mode needs a password")
        if settings is None:
            raise ValueError("a known host needs its settings")
        self._password: bytes | None = password
        self._settings = settings
        self._rng = rng
        self._keys: SessionKeys | None = None
        self._confirm_c = b""
        self._finished_key = b""
        self.state = State.WAIT_PAKE_C

    def _handle(self, raw: bytes, body: bytes) -> None:
        if self.state is State.WAIT_PAKE_C:
            self._on_pake_c(raw, body)
        else:
            self._on_confirm_c(raw, body)

    def _on_pake_c(self, raw: bytes, body: bytes) -> None:
        self._expect(body, MSG_PAKE_C, MSG1_SIZE)
        self._transcript.update(raw)
        assert self._password is not None
        nonce_c = body[1 + POINT_SIZE :]
        pake = CPace(self._password, self._ci, nonce_c, initiator=False, rng=self._rng)
        self._password = None
        key = pake.finish(body[1 : 1 + POINT_SIZE])
        if key is None:
            self._fail(MALFORMED)
        head = bytes((MSG_PAKE_S,)) + pake.share + self._rng(NONCE_SIZE)
        t = self._transcript.copy()
        t.update(MSG2_SIZE.to_bytes(2, "big") + head)
        th_hello = t.digest()
        hk = HandshakeKeys.derive(key, th_hello)
        sealed = make_aead(SETTINGS_SUITE, hk.settings).encrypt(
            SETTINGS_NONCE, self._settings.encode(), th_hello
        )
        t.update(sealed)
        self._send(head + sealed + mac(hk.confirm_s, t.digest()))
        th_c = self._transcript.digest()
        self._keys = SessionKeys.derive(self._settings.suite, key, th_c)
        self._confirm_c = mac(hk.confirm_c, th_c)
        self._finished_key = hk.finished_s
        self.state = State.WAIT_CONFIRM_C

    def _on_confirm_c(self, raw: bytes, body: bytes) -> None:
        self._expect(body, MSG_CONFIRM_C, MSG3_SIZE)
        if not hmac.compare_digest(self._confirm_c, body[1:]):
            self._fail(AUTH_FAILED)
        self._transcript.update(raw)
        self._send(bytes((MSG_FINISHED_S,)) + mac(self._finished_key, self._transcript.digest()))
        self._finished_key = b""
        assert self._keys is not None
        self._established(self._keys, self._settings)
