"""Pieces shared by the device backends.

This package must not import :mod:`vtcore` (vtcore depends on it); the devices here
implement the contract's :class:`vt_api.Device` (and its extras).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from typing import Any

MAX_PENDING = 1 << 20
"""Bytes a stream device buffers when its peer does not read; beyond that, writes drop."""

STREAM_CHUNK = 2048
"""Largest chunk a stream device returns per read (vtund's frame size)."""

# Errors after which a stream descriptor is of no further use: the peer is gone.
_GONE = frozenset({errno.EIO, errno.EPIPE, errno.ECONNRESET, errno.EBADF, errno.EBADFD})


class DeviceError(OSError):
    """A device could not be opened.  ``str()`` is a one-line message; ``errno`` is kept."""

    def __init__(self, message: str, err: int | None = None) -> None:
        super().__init__(message)
        self.errno = err  # type: ignore[misc]

    def __str__(self) -> str:
        return str(self.args[0])


class StreamDevice:
    """Common part of byte-stream devices (tty, pipe).

    Reads return chunks of at most :data:`STREAM_CHUNK` bytes.  Writes never block: what the
    kernel does not take at once is kept (at most :data:`MAX_PENDING` bytes) and written by
    the next :meth:`write_packet`, :meth:`read_packets` or :meth:`flush`.  A caller that wants
    the backlog out sooner watches :meth:`fileno` for writability while :attr:`pending` is
    non-zero and calls :meth:`flush`.
    """

    stream = True
    name: str

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._pending = bytearray()
        self.dropped = 0
        """Writes refused (backlog full or peer gone)."""

    # -- descriptors -------------------------------------------------------------

    def export(self) -> tuple[int, dict[str, Any]]:
        """For a worker (:class:`vt_api.PortableDevice`): the data end and the name."""
        return self._fd, {"name": self.name}

    def fileno(self) -> int:
        return self._fd

    def stdio_fd(self) -> int | None:  # pragma: no cover - overridden
        return None

    def __enter__(self) -> StreamDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    # -- data path ---------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Bytes accepted by :meth:`write_packet` but not yet taken by the kernel."""
        return len(self._pending)

    def _gone(self, err: OSError) -> bool:
        """True when ``err`` means the other side is gone for good."""
        return err.errno in _GONE

    def read_packets(self, limit: int) -> list[bytes]:
        """Read up to ``limit`` chunks; ``EOFError`` once the other side is gone."""
        if self._pending:
            self.flush()
        out: list[bytes] = []
        read = os.read
        fd = self._fd
        try:
            while len(out) < limit:
                chunk = read(fd, STREAM_CHUNK)
                if not chunk:
                    break
                out.append(chunk)
            else:
                return out
        except BlockingIOError:
            return out
        except OSError as err:
            if not self._gone(err):
                raise
        # End of stream (b"" or hang-up).  Hand over what was read; the next call raises.
        if out:
            return out
        raise EOFError(f"{self.name}: other side closed")

    def write_packets(self, packets: list[bytes]) -> tuple[int, int]:
        """Write a batch in order (:class:`vt_api.Device`); the packets and bytes refused."""
        lost = lost_bytes = 0
        for p in packets:
            if not self.write_packet(p):
                lost += 1
                lost_bytes += len(p)
        return lost, lost_bytes

    def write_packet(self, packet: bytes) -> bool:
        """Queue ``packet`` for the stream; False (and ``dropped`` += 1) if refused."""
        if self._pending:
            if len(self._pending) + len(packet) > MAX_PENDING:
                self.dropped += 1
                return False
            self._pending += packet
            self.flush()
            return True
        try:
            n = os.write(self._fd, packet)
        except BlockingIOError:
            n = 0
        except OSError:
            # Peer gone (EIO on a hung-up pty, EPIPE on a pipe): the read side reports EOF.
            self.dropped += 1
            return False
        if n < len(packet):
            if len(packet) - n > MAX_PENDING:
                self.dropped += 1
                return False
            self._pending += memoryview(packet)[n:]
        return True

    def flush(self) -> bool:
        """Write as much of the backlog as the kernel takes; True when none is left."""
        while self._pending:
            try:
                n = os.write(self._fd, self._pending)
            except BlockingIOError:
                return False
            except OSError:
                self.dropped += 1
                self._pending.clear()
                return True
            if n == 0:
                return False
            del self._pending[:n]
        return True


class AdoptedStream(StreamDevice):
    """A worker's copy of a master's pty or pipe data end: no stdio (the master gave its
    other end to the up commands and closed its copy), so the program's exit still ends
    the session."""

    def __init__(self, fd: int, name: str) -> None:
        super().__init__(fd)
        self.name = name

    def stdio_fd(self) -> int | None:
        return None

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __repr__(self) -> str:
        return f"<adopted {self.name} fd={self._fd}>"


def adopt_stream(fd: int, state: Mapping[str, Any]) -> AdoptedStream:
    """``adopt`` of the pty and pipe backends."""
    os.set_blocking(fd, False)
    return AdoptedStream(fd, str(state["name"]))
