"""The tunnel frame codec (spec 2.1, 3.2): a 2-byte big-endian header, then the payload.

Header bits 15..12 are flags, bits 11..0 the payload length.  Over TCP frames follow
each other in the byte stream (:class:`StreamDecoder`); over UDP each datagram is one
frame (:func:`decode_datagram`).  This is the per-packet path: no logging, counters only.

The 12-bit length caps vtun framing at 4095 bytes whatever ``max_frame`` says; between
two vt ends native framing (:mod:`vtcore.protocol.native`, negotiated in the handshake)
has its own header for larger frames.
"""

from __future__ import annotations

from vt_api import CONN_CLOSE, ECHO_REP, ECHO_REQ

BAD_FRAME = 0x8000
FLAGS_MASK = 0xF000
FSIZE_MASK = 0x0FFF
FRAME_SIZE = 2048
FRAME_OVERHEAD = 100
MAX_FRAME = FRAME_SIZE + FRAME_OVERHEAD
"""Largest payload a vtund receiver accepts (2148); longer ones are discarded."""

FRAME_EOF = 0x10000
"""Flag value returned for a zero-length data frame (``00 00``).

vtund's reader returns 0 for it, which its linker takes as end of file: the session
ends.  It is outside the 16-bit header space so it can never be mistaken for a real
header; the caller must end the session when it sees it.
"""

_CONTROL = {
    CONN_CLOSE: (CONN_CLOSE, b""),
    ECHO_REQ: (ECHO_REQ, b""),
    ECHO_REP: (ECHO_REP, b""),
}
_EOF = (FRAME_EOF, b"")


def frame(payload: bytes, max_len: int = MAX_FRAME) -> bytes:
    """Prefix ``payload`` with its data-frame header.

    Refuses an empty payload (``00 00`` would end the peer's session) and one longer
    than ``max_len`` (vtund drops payloads over 2148 bytes; the header cannot carry
    more than 4095).
    """
    n = len(payload)
    if not 0 < n <= max_len or n > FSIZE_MASK:
        raise ValueError(f"frame payload must be 1..{min(max_len, FSIZE_MASK)} bytes, got {n}")
    return n.to_bytes(2, "big") + payload


class StreamDecoder:
    """Split a TCP byte stream into frames, as vtund's ``tcp_read`` does.

    ``feed`` returns ``(flags, payload)`` tuples: flags 0 is a data frame; CONN_CLOSE,
    ECHO_REQ and ECHO_REP come with ``b""``; ``FRAME_EOF`` is a zero-length data frame
    (end the session; the decoder ignores everything after it).  Like vtund:

    * a header whose length exceeds ``max_frame`` is skipped with its payload and counted
      in ``bad_frames`` (this check comes first, whatever the flags);
    * a header with flags reads no payload, whatever its length bits say;
    * a ``BAD_FRAME`` flag from the peer is counted in ``bad_frames``; other flag
      combinations are ignored and counted in ``unknown_frames``.

    Memory stays bounded: at most one incomplete frame (< 2 + ``max_frame`` bytes) is kept.
    """

    __slots__ = ("_max", "_pending", "_skip", "bad_frames", "unknown_frames", "closed")

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        if max_frame < 1:
            raise ValueError("max_frame must be positive")
        self._max = max_frame
        self._pending = b""
        self._skip = 0
        self.bad_frames = 0
        self.unknown_frames = 0
        self.closed = False
        """True once a zero-length data frame was seen."""

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for the rest of a frame."""
        return len(self._pending)

    def feed(self, data: bytes | memoryview) -> list[tuple[int, bytes]]:
        """Add received bytes; return the frames they complete, in order."""
        out: list[tuple[int, bytes]] = []
        if self.closed or not data:
            return out
        if type(data) is not bytes:
            data = bytes(data)
        n = len(data)
        pos = 0
        if self._skip:
            pos = min(self._skip, n)
            self._skip -= pos
            if self._skip:
                return out
        if self._pending:
            pos = self._finish_pending(data, pos, out)
            if self._pending or self.closed:
                return out
            if self._skip:
                k = min(self._skip, n - pos)
                self._skip -= k
                pos += k
                if self._skip:
                    return out
        pos = self._parse(data, pos, n, out)
        if pos < n and not self.closed:
            self._pending = data[pos:]
        return out

    def _finish_pending(self, data: bytes, pos: int, out: list[tuple[int, bytes]]) -> int:
        """Complete the held-back frame from ``data[pos:]``; return the new position."""
        p = self._pending
        n = len(data)
        if len(p) < 2:
            pos += 1  # exactly one header byte is missing
            p += data[pos - 1 : pos]
            if self._parse(p, 0, 2, out) == 2:  # control, oversize or EOF: header only
                self._pending = b""
                return pos
        need = 2 + (((p[0] << 8) | p[1]) & FSIZE_MASK) - len(p)
        take = min(need, n - pos)
        p += data[pos : pos + take]
        pos += take
        if take == need:
            out.append((0, p[2:]))
            p = b""
        self._pending = p
        return pos

    def _parse(self, buf: bytes, pos: int, end: int, out: list[tuple[int, bytes]]) -> int:
        """Decode complete frames from ``buf[pos:end]``; return where the rest starts."""
        max_frame = self._max
        append = out.append
        control = _CONTROL
        while end - pos >= 2:
            hdr = (buf[pos] << 8) | buf[pos + 1]
            flen = hdr & FSIZE_MASK
            if flen > max_frame:
                self.bad_frames += 1
                stop = pos + 2 + flen
                if stop > end:
                    self._skip = stop - end
                    return end
                pos = stop
                continue
            flags = hdr & FLAGS_MASK
            if flags:
                pos += 2
                ev = control.get(flags)
                if ev is not None:
                    append(ev)
                elif flags == BAD_FRAME:
                    self.bad_frames += 1
                else:
                    self.unknown_frames += 1
                continue
            if not flen:
                self.closed = True
                append(_EOF)
                return end
            stop = pos + 2 + flen
            if stop > end:
                return pos
            append((0, buf[pos + 2 : stop]))
            pos = stop
        return pos


def decode_datagram(d: bytes, max_frame: int = MAX_FRAME) -> tuple[int, bytes] | None:
    """Decode one UDP datagram, as vtund's ``udp_read``.

    Returns ``(flags, payload)`` like :meth:`StreamDecoder.feed` (``FRAME_EOF`` for
    ``00 00``), or ``None`` for a bad datagram (length not 2 + header length, payload
    over ``max_frame``, a ``BAD_FRAME`` or unknown flag combination): the caller counts
    it and goes on.  Control datagrams may carry a payload; it is ignored.
    """
    n = len(d)
    if n < 2:
        return None
    hdr = (d[0] << 8) | d[1]
    flen = hdr & FSIZE_MASK
    if n - 2 != flen or flen > max_frame:
        return None
    flags = hdr & FLAGS_MASK
    if flags:
        return _CONTROL.get(flags)
    if not flen:
        return _EOF
    return (0, bytes(d[2:]))
