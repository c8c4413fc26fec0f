"""The frame module: writes each frame it sees to the capture file, passes it on unchanged.

It must never break the tunnel: the first I/O error (disk full, file removed from under a
read-only mount, bad path) disables the capture, is logged once and counted; the frames go
on.  One ``os.write`` per packet on an ``O_APPEND`` descriptor keeps each record whole even
when several sessions append to the same file.
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Callable

import structlog

from vt_pcap.pcapfile import (
    GLOBAL_HEADER_SIZE,
    PcapError,
    global_header,
    parse_global_header,
    record,
)

log = structlog.get_logger("vt.pcap")


class PcapModule:
    """A pass-through frame module that copies frames to a pcap file."""

    def __init__(self, path: str, linktype: int, *, host: str = "",
                 clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.linktype = linktype
        self.host = host
        self.clock = clock
        self.captured = 0
        """Records written."""
        self.missed = 0
        """Frames not captured because the capture is disabled."""
        self.errors = 0
        """I/O errors seen (at most one: the first disables the capture)."""
        self.error = ""
        self._fd: int | None = None
        self._closer: weakref.finalize | None = None
        try:
            self._open()
        except (OSError, PcapError) as exc:
            self._disable(exc)

    def _open(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if os.fstat(fd).st_size == 0:
                _write_all(fd, global_header(self.linktype))
            else:
                head = parse_global_header(os.pread(fd, GLOBAL_HEADER_SIZE, 0))
                if head.linktype != self.linktype:
                    raise PcapError(
                        f"existing capture has linktype {head.linktype}, not {self.linktype}"
                    )
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        # The FrameModule protocol has no close(): release the descriptor with the module.
        self._closer = weakref.finalize(self, os.close, fd)

    def _disable(self, exc: Exception) -> None:
        self.errors += 1
        self.error = str(exc)
        self.close()
        log.warning("pcap capture disabled", host=self.host, path=self.path, error=self.error)

    @property
    def enabled(self) -> bool:
        return self._fd is not None

    def close(self) -> None:
        if self._closer is not None:
            self._closer()
        self._fd = None

    def _capture(self, frame: bytes) -> None:
        if self._fd is None:
            self.missed += 1
            return
        try:
            _write_all(self._fd, record(frame, self.clock()))
            self.captured += 1
        except Exception as exc:  # whatever happens, the tunnel goes on
            self.missed += 1
            self._disable(exc)

    def encode(self, frame: bytes) -> bytes | None:
        self._capture(frame)
        return frame

    def decode(self, frame: bytes) -> bytes | None:
        self._capture(frame)
        return frame


def _write_all(fd: int, data: bytes) -> None:
    """One write; a short write (disk full) is an error, not a retry loop."""
    n = os.write(fd, data)
    if n != len(data):
        raise OSError(f"short write ({n} of {len(data)} bytes)")
