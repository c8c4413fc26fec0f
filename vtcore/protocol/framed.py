"""A secure mode's handshake machine as the driver sees it: length-framed messages.

The extension's :class:`vt_api.SansIOHandshake` parses its own messages; this wrapper
(sans-I/O too) tells the driver how much to read, so it reads exactly one message at a
time: the length, which the extension sees at once (a bad one is refused before the body
is waited for), then the body, which the extension may take milliseconds over (a PAKE
step): it is handed to the driver by :meth:`take_work`, to run off the event loop.
``on_message`` is called (on the driver's side) for each whole message read, before the
extension sees its body (the server counts a password guess from there).
"""

from __future__ import annotations

from collections.abc import Callable

from vt_api import HandshakeRefused, SansIOHandshake
from vt_api.wire import HANDSHAKE_LENGTH_SIZE, MAX_HANDSHAKE_MESSAGE


class FramedHandshake:
    def __init__(self, ext: SansIOHandshake,
                 on_message: Callable[[], None] | None = None) -> None:
        self.ext = ext
        self._on_message = on_message
        self._head = b""
        self._body = b""
        self._size = 0
        """The body's length once the head is complete, else 0."""
        self._work: bytes | None = None
        """A whole body the extension has not been given yet."""

    def __repr__(self) -> str:
        return f"<FramedHandshake {self.ext!r}>"

    @property
    def bytes_needed(self) -> int:
        if self._work is not None:
            return 0
        if self._size:
            return self._size - len(self._body)
        return HANDSHAKE_LENGTH_SIZE - len(self._head)

    def take_work(self) -> Callable[[], None] | None:
        """The extension's step on a whole body (may be slow), once; None when none."""
        body, self._work = self._work, None
        if body is None:
            return None
        return lambda: self.ext.receive_data(body)

    def receive_data(self, data: bytes) -> None:
        if len(data) > self.bytes_needed:
            raise HandshakeRefused("secure handshake: more data than one message")
        if not self._size:
            self._head += data
            if len(self._head) < HANDSHAKE_LENGTH_SIZE:
                return
            head, self._head = self._head, b""
            self.ext.receive_data(head)
            size = int.from_bytes(head, "big")
            if size == 0 or size > MAX_HANDSHAKE_MESSAGE:
                raise HandshakeRefused("malformed secure handshake message")
            self._size = size
            return
        self._body += data
        if len(self._body) < self._size:
            return
        body, self._body, self._size = self._body, b"", 0
        if self._on_message is not None:
            self._on_message()
        self._work = body

    def data_to_send(self) -> bytes:
        return self.ext.data_to_send()

    def next_event(self) -> object | None:
        return self.ext.next_event()
