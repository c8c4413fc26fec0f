"""The ``tty`` device: a pseudo-terminal pair, as vtund uses to carry pppd (or slip).

vt reads and writes the master; the slave is what the ``up`` commands get as stdin and
stdout (:meth:`PtyDevice.stdio_fd`), and its path (``/dev/pts/N``) is ``%d``.  A requested
device name is ignored, as in vtund.

Differences from vtund, and why:

* vt puts the slave in raw mode (no echo, no line editing).  vtund leaves the fresh pty's
  cooked defaults and relies on pppd to set raw mode; with no up command its tunnel would
  echo every byte back.  pppd sets its own mode anyway, so nothing changes with it.
* vtund's parent never holds the slave: when the up command exits the master reads EIO
  and the session ends.  vt opens the slave itself (it must hand it to the up commands), so
  it keeps a copy until :meth:`PtyDevice.release_stdio` -- the runtime calls it once the up
  commands are started.  After that, the last slave holder going away makes
  :meth:`read_packets` raise ``EOFError`` (Linux reports EIO on the master).  Without the
  release the tty device never ends by itself.
"""

from __future__ import annotations

import os
import tty

from vt_api import DeviceRequest

from vt_devices.base import DeviceError, StreamDevice


class PtyDevice(StreamDevice):
    """Master side of a pty pair; byte chunks of at most 2048 bytes."""

    def __init__(self) -> None:
        try:
            master, slave = os.openpty()
        except OSError as err:
            raise DeviceError(f"cannot allocate a pseudo tty: {err.strerror}", err.errno) from None
        try:
            tty.setraw(slave)
            os.set_blocking(master, False)
            self.name = os.ttyname(slave)
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        super().__init__(master)
        self._slave = slave

    def stdio_fd(self) -> int | None:
        """The slave fd (blocking, raw) for the up commands' stdin/stdout; None once released."""
        return self._slave if self._slave >= 0 else None

    def release_stdio(self) -> None:
        """Close vt's copy of the slave, so the up command's exit ends the session."""
        if self._slave >= 0:
            fd, self._slave = self._slave, -1
            os.close(fd)

    def close(self) -> None:
        self.release_stdio()
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __repr__(self) -> str:
        return f"<pty {self.name} fd={self._fd}>"


def open_pty_device(request: DeviceRequest) -> PtyDevice:
    """Backend opener for ``type tty``."""
    return PtyDevice()
