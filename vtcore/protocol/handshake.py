"""The vtun 3 handshake as two sans-I/O state machines (spec 1), one interface for both.

Every message is a fixed 50-byte block (:mod:`vt_api.wire`).  Both roles, h11's way:
``receive_data(bytes)`` what the socket gave (at most ``bytes_needed``, so nothing of the
tunnel is read into the handshake); ``next_event()`` what the peer did; ``send(decision)``
the bytes for what this side decided; ``data_to_send()`` what the machine says on its own
(the server's greeting, the client's ``HOST:``).  :func:`vtcore.runtime.netio.drive` is the
one loop that pumps them (and secure mode's, and the UDP port exchange).  Bad peer input
raises :class:`ProtocolError`; the server's runtime then sends ``Reject()`` and closes.

What a vtund peer tolerates, which vt uses to recognise a vt peer:

* Server greeting: a vtund client checks only the ``VTUN`` prefix, so text after the
  version (up to 47 characters in all) may carry a marker; the client keeps it in
  ``ClientHandshake.peer_greeting``.
* ``HOST:`` line: vtund's server splits on space and ``:`` and reads only tokens 1 and 2
  (``auth.c``, ``auth_server``), so extra tokens after the host name are ignored there.
  ``ClientHandshake(host_extra=...)`` sends them; ``HostAnnounced.extra`` and
  ``ServerHandshake.host_extra`` receive them.  Same for tokens after the ``CHAL:`` answer.
* ``OK FLAGS``: a vtund client fails on any unknown letter except ``F``.  ``Flags.extra``
  (written ``F<extra>``) must only be sent to a client that announced itself through a
  HOST token; a client with ``host_extra`` reads it back.
* Nothing may grow a message beyond 50 bytes or add a round trip: a secure mode replaces
  ``OK CHAL`` with its offer, and a native mode switches after ``OK FLAGS``.
"""

from __future__ import annotations

import enum
import re
from collections import deque
from typing import NoReturn

from vt_api.wire import MAX_TEXT, MESG_SIZE, pack_msg, unpack_msg

from vtcore.protocol.challenge import (
    CHAL_SIZE,
    chal_response,
    check_response,
    decode_chal,
    encode_chal,
)
from vtcore.protocol.errors import ProtocolError
from vtcore.protocol.events import (
    Accept,
    Accepted,
    Answer,
    Challenge,
    ChallengeAnswered,
    Challenged,
    Decision,
    Denied,
    Event,
    HostAnnounced,
    Reject,
)
from vtcore.protocol.flags import VTUND_LETTERS, Flags, Letters, format_flags, parse_flags

DEFAULT_GREETING = "VTUN server ver 3.X vt"
_TOKEN_SPLIT = re.compile(r"[ :]+")
_BAD_TOKEN_CHARS = frozenset(" :\r\n\0")


def _server_tokens(text: str) -> list[str]:
    """vtund's server parse: ``strtok(buf, "\\r\\n")`` then ``strtok(..., " :")``.

    ``strtok`` skips leading delimiters when searching, but does not remove them from the
    buffer, so leading CR/LF stay glued to the first token (and make it mismatch).
    """
    i = 0
    while i < len(text) and text[i] in "\r\n":
        i += 1
    if i < len(text):
        end = min(
            (j for j in (text.find("\r", i), text.find("\n", i)) if j >= 0), default=len(text)
        )
        text = text[:end]
    return [t for t in _TOKEN_SPLIT.split(text) if t]


def _check_token(kind: str, value: str) -> None:
    if not value or _BAD_TOKEN_CHARS & set(value):
        raise ValueError(f"{kind} must be non-empty without space, ':', CR, LF or NUL")
    value.encode("latin-1")


class ServerState(enum.Enum):
    WAIT_HOST = "wait_host"
    NEED_CHALLENGE = "need_challenge"
    """HostAnnounced was produced; the runtime must ``send(Challenge(...))``."""
    WAIT_CHAL = "wait_chal"
    NEED_VERDICT = "need_verdict"
    """ChallengeAnswered was produced; the runtime must ``send(Accept(...))`` or ``Reject``."""
    DONE = "done"
    FAILED = "failed"


class ClientState(enum.Enum):
    WAIT_GREETING = "wait_greeting"
    WAIT_CHAL = "wait_chal"
    NEED_ANSWER = "need_answer"
    """Challenged was produced; the runtime must ``send(Answer())`` (or switch modes)."""
    WAIT_FLAGS = "wait_flags"
    DONE = "done"
    FAILED = "failed"


class ServerHandshake:
    """Server side: greeting, HOST -> challenge, CHAL -> verdict.

    The client speaks only after each of our messages, so at most one 50-byte message is
    ever buffered; anything more is a protocol error.  Like vtund, the host is not looked
    up before the answer arrives: unknown hosts get a challenge too, and fail with the
    same ``ERR`` as a wrong password.
    """

    def __init__(self, greeting: str = DEFAULT_GREETING) -> None:
        if not greeting.startswith("VTUN") or len(greeting) > MAX_TEXT - 1:
            raise ValueError("the greeting must start with 'VTUN' and fit in 47 characters")
        self.greeting = greeting
        self.state = ServerState.WAIT_HOST
        self.host: str | None = None
        self.host_extra: tuple[str, ...] = ()
        self.chal_extra: tuple[str, ...] = ()
        self._out = pack_msg(greeting + "\n")
        self.transcript = self._out
        """The blocks so far, in order: the greeting, then the ``HOST:`` line (what a
        secure mode binds its keys to)."""
        self._buf = b""
        self._events: deque[Event] = deque()
        self._chal: bytes | None = None
        self._response: bytes | None = None
        self._trailing = b""

    def __repr__(self) -> str:
        return f"<ServerHandshake state={self.state.value} host={self.host!r}>"

    def data_to_send(self) -> bytes:
        """The greeting (once; empty afterwards)."""
        out, self._out = self._out, b""
        return out

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the client.  Raises ProtocolError on a bad message."""
        if self.state is ServerState.DONE:
            self._trailing += data
            return
        if self.state is ServerState.FAILED or not data:
            return
        if self.state not in (ServerState.WAIT_HOST, ServerState.WAIT_CHAL):
            self._fail("client spoke out of turn")
        self._buf += data
        if len(self._buf) > MESG_SIZE:
            self._fail("client sent more than one message")
        if len(self._buf) == MESG_SIZE:
            block, self._buf = self._buf, b""
            if self.state is ServerState.WAIT_HOST:
                self.transcript += block
            self._handle(unpack_msg(block))

    @property
    def bytes_needed(self) -> int:
        """Bytes that complete the client's current message (0 when none is due)."""
        if self.state not in (ServerState.WAIT_HOST, ServerState.WAIT_CHAL):
            return 0
        return MESG_SIZE - len(self._buf)

    def next_event(self) -> Event | None:
        """The next event, or None when more data is needed (or a decision is due)."""
        return self._events.popleft() if self._events else None

    def send(self, decision: Decision) -> bytes:
        """The block for ``Challenge`` (after HostAnnounced), ``Accept`` (after a
        password that ``check`` passed) or ``Reject`` (at any time before ``Accept``)."""
        if isinstance(decision, Challenge):
            return self._challenge(decision.chal)
        if isinstance(decision, Accept):
            return self._accept(decision.flags)
        if isinstance(decision, Reject):
            return self._reject(decision.reason)
        raise TypeError(f"a server does not send {decision!r}")

    def check(self, password: bytes, sslauth: bool = True) -> bool:
        """After ChallengeAnswered: does the answer match ``password``?"""
        self._expect(ServerState.NEED_VERDICT)
        assert self._chal is not None and self._response is not None
        return check_response(self._chal, self._response, password, sslauth)

    def trailing_data(self) -> bytes:
        """Bytes received after ``Accept`` (belong to the tunnel); returned once."""
        out, self._trailing = self._trailing, b""
        return out

    # -- internals

    def _challenge(self, chal: bytes) -> bytes:
        self._expect(ServerState.NEED_CHALLENGE)
        if len(chal) != CHAL_SIZE:
            raise ValueError(f"a challenge is {CHAL_SIZE} bytes")
        self._chal = bytes(chal)
        self.state = ServerState.WAIT_CHAL
        return pack_msg(f"OK CHAL: {encode_chal(self._chal)}\n")

    def _accept(self, flags: str | Flags) -> bytes:
        self._expect(ServerState.NEED_VERDICT)
        text = flags if isinstance(flags, str) else format_flags(flags)
        msg = f"OK FLAGS: {text}\n"
        if len(msg) > MAX_TEXT or not (text.startswith("<") and text.endswith(">")):
            raise ValueError(f"flags string {text!r} is malformed or too long")
        self.state = ServerState.DONE
        return pack_msg(msg)

    def _reject(self, reason: str) -> bytes:
        """vtund's client gets vtund's bare ``ERR``; a vt client may be told why."""
        if self.state is ServerState.DONE:
            raise RuntimeError("handshake already accepted")
        self.state = ServerState.FAILED
        self._events.clear()
        told = f" {reason}" if reason and self.host_extra else ""
        return pack_msg(f"ERR{told}\n")

    def _expect(self, state: ServerState) -> None:
        if self.state is not state:
            raise RuntimeError(f"not allowed in state {self.state.value}")

    def _fail(self, why: str) -> NoReturn:
        self.state = ServerState.FAILED
        self._buf = b""
        raise ProtocolError(why)

    def _handle(self, text: str) -> None:
        tokens = _server_tokens(text)
        if len(tokens) < 2:
            self._fail("malformed message")
        if self.state is ServerState.WAIT_HOST:
            if tokens[0] != "HOST":
                self._fail("expected HOST")
            self.host, self.host_extra = tokens[1], tuple(tokens[2:])
            self.state = ServerState.NEED_CHALLENGE
            self._events.append(HostAnnounced(self.host, self.host_extra))
            return
        if tokens[0] != "CHAL":
            self._fail("expected CHAL")
        try:
            self._response = decode_chal(tokens[1])
        except ProtocolError as exc:
            self._fail(str(exc))
        self.chal_extra = tuple(tokens[2:])
        self.state = ServerState.NEED_VERDICT
        assert self.host is not None
        self._events.append(ChallengeAnswered(self.host, self._response, self.chal_extra))


class ClientHandshake:
    """Client side: answers the greeting with HOST, stops at the server's reply
    (:class:`Challenged`: a challenge, or a secure mode's offer) for the runtime to decide,
    answers the challenge on ``send(Answer())`` and reads the verdict.

    The server may start the tunnel right behind ``OK FLAGS`` (an ECHO_REQ, or the UDP
    port): those bytes are kept for ``trailing_data()``.  A client created with
    ``host_extra`` announces itself (see module doc) and accepts ``F<extra>`` in the flags.
    """

    def __init__(
        self, host: str, password: bytes, sslauth: bool = True, host_extra: tuple[str, ...] = (),
        letters: Letters = VTUND_LETTERS,
    ) -> None:
        _check_token("host", host)
        for tok in host_extra:
            _check_token("host_extra token", tok)
        if not sslauth and not password.split(b"\0", 1)[0]:
            raise ValueError("sslauth no needs a non-empty password")
        self.host = host
        self.host_extra = tuple(host_extra)
        self._password = password
        self._sslauth = sslauth
        self._letters = letters
        """The installed transports' and devices' ``OK FLAGS`` letters."""
        self.state = ClientState.WAIT_GREETING
        self.peer_greeting: str | None = None
        """The server's greeting text (without newline), e.g. ``VTUN server ver 3.X ...``."""
        self.transcript = b""
        """The blocks so far, in order: greeting, ``HOST:`` line, the server's reply to it."""
        self.reply: bytes | None = None
        """The server's reply to ``HOST:`` as received (a challenge, an offer or ``ERR``):
        what a client that requires a secure mode checks before anything else."""
        self._buf = b""
        self._out = b""
        self._reply = ""
        self._events: deque[Event] = deque()
        self._trailing = b""

    def __repr__(self) -> str:
        return f"<ClientHandshake state={self.state.value} host={self.host!r}>"

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the server.  Raises ProtocolError on a bad message."""
        if self.state is ClientState.DONE:
            self._trailing += data
            return
        if self.state is ClientState.FAILED or not data:
            return
        if self.state is ClientState.NEED_ANSWER:
            self._fail("server spoke out of turn")
        self._buf += data
        while len(self._buf) >= MESG_SIZE and self.state in (
            ClientState.WAIT_GREETING, ClientState.WAIT_CHAL, ClientState.WAIT_FLAGS,
        ):
            block, self._buf = self._buf[:MESG_SIZE], self._buf[MESG_SIZE:]
            if self.state is not ClientState.WAIT_FLAGS and self._buf:
                self._fail("server spoke out of turn")
            self._handle(block)
        if self.state is ClientState.DONE:
            self._trailing, self._buf = self._buf, b""
        elif self.state is ClientState.FAILED:
            self._buf = b""

    @property
    def bytes_needed(self) -> int:
        """Bytes that complete the server's current message (0 when none is due)."""
        if self.state not in (ClientState.WAIT_GREETING, ClientState.WAIT_CHAL,
                              ClientState.WAIT_FLAGS):
            return 0
        return MESG_SIZE - len(self._buf)

    def next_event(self) -> Event | None:
        """``Challenged``, then ``Accepted`` or ``Denied``; None while more is needed."""
        return self._events.popleft() if self._events else None

    def data_to_send(self) -> bytes:
        """The ``HOST:`` line once the greeting came (once; empty afterwards)."""
        out, self._out = self._out, b""
        return out

    def send(self, decision: Decision) -> bytes:
        """The ``CHAL:`` block for ``Answer()`` after Challenged.  Raises ProtocolError
        when the server's reply was not a challenge."""
        if not isinstance(decision, Answer):
            raise TypeError(f"a client does not send {decision!r}")
        if self.state is not ClientState.NEED_ANSWER:
            raise RuntimeError(f"not allowed in state {self.state.value}")
        try:
            chal = decode_chal(self._reply)
        except ProtocolError as exc:
            self._fail(str(exc))
        resp = chal_response(chal, self._password, self._sslauth)
        self.state = ClientState.WAIT_FLAGS
        return pack_msg(f"CHAL: {encode_chal(resp)}\n")

    def trailing_data(self) -> bytes:
        """Bytes that came after ``OK FLAGS`` (tunnel or UDP port); returned once."""
        out, self._trailing = self._trailing, b""
        return out

    # -- internals

    def _fail(self, why: str) -> NoReturn:
        self.state = ClientState.FAILED
        self._buf = b""
        raise ProtocolError(why)

    def _handle(self, block: bytes) -> None:
        text = unpack_msg(block)
        if self.state is ClientState.WAIT_GREETING:
            if not text.startswith("VTUN"):
                self._fail("not a VTun server greeting")
            self.peer_greeting = text.split("\n", 1)[0].rstrip("\r")
            words = " ".join((self.host, *self.host_extra))
            self._out += pack_msg(f"HOST: {words}\n")
            self.transcript += block + self._out
            self.state = ClientState.WAIT_CHAL
            return
        if self.state is ClientState.WAIT_CHAL:
            self.reply = block
            self.transcript += block
        if text.startswith("ERR"):
            self.state = ClientState.FAILED
            reason = text[3:].split("\n", 1)[0].strip() if self.host_extra else ""
            self._events.append(Denied("".join(c for c in reason if c.isprintable())))
            return
        if not text.startswith("OK"):
            self._fail("expected OK or ERR")
        if self.state is ClientState.WAIT_CHAL:
            self._reply = text
            self.state = ClientState.NEED_ANSWER
            self._events.append(Challenged(block))
            return
        try:
            flags = parse_flags(text, allow_extra=bool(self.host_extra), letters=self._letters)
        except ProtocolError as exc:
            self._fail(str(exc))
        start = text.find("<")
        raw = text[start : text.index(">", start) + 1]
        self.state = ClientState.DONE
        self._events.append(Accepted(flags, raw))


__all__ = [
    "DEFAULT_GREETING", "MAX_TEXT", "MESG_SIZE", "ClientHandshake", "ClientState",
    "ServerHandshake", "ServerState", "pack_msg", "unpack_msg",
]
