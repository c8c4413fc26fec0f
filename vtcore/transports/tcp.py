"""Frames over the TCP connection the handshake ran on: vtun's 2-byte headers, or
vt-native 4-byte ones between two vt ends (``native_framing``, secure mode)."""

from __future__ import annotations

import mmap
import socket

from vtcore.protocol.errors import ProtocolError
from vtcore.protocol.frames import MAX_FRAME, StreamDecoder
from vtcore.protocol.native import (
    MAX_NATIVE_FRAME,
    NativeStreamDecoder,
    native_control,
    native_header,
)
from vtcore.transports.base import VTUN_FRAMING, Endpoints, HeaderFraming, endpoints_of

RECV_SIZE = 256 * 1024
MAX_BACKLOG = 4 * 1024 * 1024
"""Hard bound on queued outgoing bytes; the tunnel pauses the device well before."""


class TcpLink(HeaderFraming):
    """Frames on a stream socket: a bounded decoder in, a byte queue out."""

    stream = True

    def __init__(self, sock: socket.socket, max_frame: int = MAX_FRAME, native: bool = False) -> None:
        sock.setblocking(False)
        if sock.family != socket.AF_UNIX:  # a wrapped stream (``TransportType.wrap``) is not
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self.sock = sock
        self.endpoints: Endpoints = endpoints_of(sock)
        self.decoder: NativeStreamDecoder | StreamDecoder
        if native:
            self.decoder = NativeStreamDecoder(MAX_NATIVE_FRAME)
            self._header, self._control = native_header, native_control
            self.max_payload = MAX_NATIVE_FRAME
        else:
            self.decoder = StreamDecoder(max_frame=max_frame)
            self._header, self._control = VTUN_FRAMING.header, VTUN_FRAMING.control
            self.max_payload = VTUN_FRAMING.max_payload
        self.out = bytearray()
        self.dropped_out = 0
        # One receive buffer for the session: ``recv(RECV_SIZE)`` would mmap a fresh
        # 256 KiB object, fault a page in, mremap and munmap it on every wake-up.  An
        # anonymous mapping (not a zero-filled bytearray) costs an idle session only the
        # pages its reads have touched.
        self._rbuf = mmap.mmap(-1, RECV_SIZE)
        self._rview = memoryview(self._rbuf)

    @property
    def bad_frames(self) -> int:
        return self.decoder.bad_frames

    @property
    def unknown_frames(self) -> int:
        """Frames with undefined flags, skipped (vtun framing; native framing refuses them)."""
        return getattr(self.decoder, "unknown_frames", 0)

    def fileno(self) -> int:
        return self.sock.fileno()

    def read_frames(self, limit: int) -> list[tuple[int, bytes]]:
        try:
            n = self.sock.recv_into(self._rbuf)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError as exc:
            raise EOFError(f"connection error: {exc.strerror or exc}") from None
        if not n:
            raise EOFError("connection closed by peer")
        try:
            # The decoders copy what they keep, so the buffer is free again on return.
            return self.decoder.feed(self._rview[:n])
        except ProtocolError as exc:
            raise EOFError(f"protocol error: {exc}") from None

    def _write(self, parts: list[bytes]) -> None:
        """Queue frames given as header/payload pairs; gather-write when nothing waits."""
        out = self.out
        if not out:
            try:
                sent = self.sock.sendmsg(parts)
            except (BlockingIOError, InterruptedError):
                sent = 0
            for part in parts:
                if sent >= len(part):
                    sent -= len(part)
                    continue
                out += part[sent:] if sent else part
                sent = 0
            return
        for i in range(0, len(parts), 2):
            if len(out) >= MAX_BACKLOG:
                # The tunnel stops reading its device long before this; reaching it
                # means the peer stopped reading.  Drop whole frames rather than grow.
                self.dropped_out += 1
                continue
            out += parts[i]
            out += parts[i + 1]
        self.flush()

    def flush(self) -> None:
        out = self.out
        if not out:
            return
        try:
            n = self.sock.send(out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            out.clear()
            raise
        del out[:n]

    def backlog(self) -> int:
        return len(self.out)

    def ready(self) -> bool:
        return True

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


async def open_tcp_link(sock: socket.socket, settings, timeout: float, nat_hack: bool = False):
    """The TCP transport keeps using the handshake's connection."""
    return TcpLink(sock, max_frame=settings.max_frame or MAX_FRAME,
                   native=settings.native_framing or settings.secure is not None)
