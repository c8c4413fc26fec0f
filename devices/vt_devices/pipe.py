"""The ``pipe`` device: a Unix stream socket pair, as vtund uses (not a real pipe).

vt reads and writes one end; the other (:meth:`PipeDevice.stdio_fd`, blocking) is given to
the ``up`` commands as stdin and stdout.  vtund closes its copy of that end as soon as the
up commands are forked; vt keeps it until :meth:`PipeDevice.release_stdio` (the runtime
calls it once they are started).  Then the last holder closing it makes
:meth:`read_packets` raise ``EOFError``.

``name`` (``%d`` in up commands) is the requested device name, else ``pipe``.
"""

from __future__ import annotations

import socket

from vt_api import DeviceRequest

from vt_devices.base import DeviceError, StreamDevice


class PipeDevice(StreamDevice):
    """Our end of a socket pair; byte chunks of at most 2048 bytes."""

    def __init__(self, name: str = "pipe") -> None:
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        except OSError as err:
            raise DeviceError(f"cannot create pipe: {err.strerror}", err.errno) from None
        ours.setblocking(False)
        # The fds are owned as plain ints from here on; the socket objects let go of them.
        super().__init__(ours.detach())
        self._peer = theirs.detach()
        self.name = name

    def stdio_fd(self) -> int | None:
        """The other end (blocking) for the up commands; None once released."""
        return self._peer if self._peer >= 0 else None

    def release_stdio(self) -> None:
        """Close vt's copy of the other end, so its last holder exiting ends the session."""
        if self._peer >= 0:
            fd, self._peer = self._peer, -1
            _close(fd)

    def close(self) -> None:
        self.release_stdio()
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            _close(fd)

    def __repr__(self) -> str:
        return f"<pipe {self.name} fd={self._fd}>"


def _close(fd: int) -> None:
    socket.socket(fileno=fd).close()


def open_pipe_device(request: DeviceRequest) -> PipeDevice:
    """Backend opener for ``type pipe``."""
    return PipeDevice(request.name or "pipe")
