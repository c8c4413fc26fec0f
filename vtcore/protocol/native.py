"""vt-native framing: what two vt ends speak over TCP when both announced it.

vtun's 2-byte header caps a frame at 4095 bytes, one IP packet each.  Between two vt
ends (negotiated with the ``vt2`` HOST token and ``F`` features in ``OK FLAGS``, see
:mod:`vtcore.runtime.native`) frames get a 4-byte header so a frame can carry a whole
GSO super-packet from a tun device opened with ``IFF_VNET_HDR``:

    u32 big-endian:  bits 31..28 flags (vtun's: CONN_CLOSE 1, ECHO_REQ 2, ECHO_REP 4)
                     bits 27..0  payload length (data frames only; at most ``max_frame``)

Control frames carry no payload.  A data frame of length 0 is invalid.  Like
:class:`vtcore.protocol.frames.StreamDecoder`, the decoder returns ``(flags, payload)``
with vtun's flag values, so the tunnel treats both framings alike.
"""

from __future__ import annotations

import struct

from vtcore.protocol.errors import ProtocolError
from vtcore.protocol.frames import CONN_CLOSE, ECHO_REP, ECHO_REQ

HEADER = 4
MAX_NATIVE_FRAME = 128 * 1024
"""Largest payload: a 64 KiB GSO packet, its virtio header and module overhead fit."""
_SHIFT = 28
_LEN_MASK = (1 << _SHIFT) - 1
_pack = struct.Struct(">I").pack
_CONTROL = {CONN_CLOSE >> 12: CONN_CLOSE, ECHO_REQ >> 12: ECHO_REQ, ECHO_REP >> 12: ECHO_REP}


def native_header(n: int) -> bytes:
    """Header of a data frame of ``n`` payload bytes."""
    return _pack(n)


def native_control(vtun_flag: int) -> bytes:
    """A control frame (``vtun_flag`` is CONN_CLOSE, ECHO_REQ or ECHO_REP)."""
    return _pack((vtun_flag >> 12) << _SHIFT)


class NativeStreamDecoder:
    """Split a native TCP stream into ``(flags, payload)``; bounded buffer.

    Unlike vtun framing there is no quirk to copy: an oversize or zero-length data frame,
    or unknown flags, is a :class:`ProtocolError` (the peer is vt and broken, or not vt).
    """

    __slots__ = ("_buf", "_max", "bad_frames")

    def __init__(self, max_frame: int = MAX_NATIVE_FRAME) -> None:
        self._buf = b""
        self._max = max_frame
        self.bad_frames = 0

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes | memoryview) -> list[tuple[int, bytes]]:
        buf = self._buf + data if self._buf else bytes(data)
        out: list[tuple[int, bytes]] = []
        pos = 0
        end = len(buf)
        max_frame = self._max
        while end - pos >= HEADER:
            word = int.from_bytes(buf[pos : pos + HEADER], "big")
            flags = word >> _SHIFT
            n = word & _LEN_MASK
            if flags:
                flag = _CONTROL.get(flags)
                if flag is None or n:
                    self.bad_frames += 1
                    raise ProtocolError(f"bad native control frame {word:#010x}")
                out.append((flag, b""))
                pos += HEADER
                continue
            if n == 0 or n > max_frame:
                self.bad_frames += 1
                raise ProtocolError(f"bad native frame length {n}")
            stop = pos + HEADER + n
            if stop > end:
                break
            out.append((0, buf[pos + HEADER : stop]))
            pos = stop
        self._buf = buf[pos:] if pos < end else b""
        return out
