"""What a daemon tells its service manager, and what it takes from it.

``sd_notify`` (through the ``sdnotify`` package): ``READY=1`` once the daemon serves,
``STATUS=`` a one-line summary, ``WATCHDOG=1`` every half ``WATCHDOG_USEC`` from the event
loop (so a wedged loop gets the service restarted), ``STOPPING=1`` when shutdown starts.
Socket activation: the listening socket systemd passes as fd 3 (``LISTEN_FDS``).
Outside systemd (no ``NOTIFY_SOCKET``, no ``LISTEN_PID``) all of it does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import sys
from collections.abc import AsyncIterator, Callable

import sdnotify

LISTEN_FDS_START = 3
"""sd_listen_fds(3): passed descriptors start here."""


def listen_socket() -> socket.socket | None:
    """The listening socket systemd passed, or None when not socket-activated.

    Only the first descriptor is used (``vt-server.socket`` has one ``ListenStream``).
    The variables are removed so that ``up``/``down`` commands do not see them."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    try:
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return None
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    if count < 1:
        return None
    sock = socket.socket(fileno=LISTEN_FDS_START)
    sock.set_inheritable(False)
    if sock.type != socket.SOCK_STREAM or not sock.getsockopt(socket.SOL_SOCKET,
                                                              socket.SO_ACCEPTCONN):
        raise ValueError("the socket passed by systemd (LISTEN_FDS) is not a listening "
                         "stream socket (use ListenStream= and Accept=no)")
    sock.setblocking(False)
    return sock


def watchdog_interval() -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``WATCHDOG_USEC``), or None."""
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None


READY_WAIT = 30.0
"""How long the terminal waits for a detached daemon to report that it is up."""

_ready_fd: int | None = None
"""The pipe to the process on the terminal, in a daemon that detached (:func:`report_to`)."""


def report_to(fd: int) -> None:
    """This (detaching) process tells ``fd`` when it is up, or why it could not start."""
    global _ready_fd
    _ready_fd = fd


def _tell_parent(message: bytes) -> None:
    global _ready_fd
    if _ready_fd is not None:
        with contextlib.suppress(OSError):
            os.write(_ready_fd, message[:4000])
        with contextlib.suppress(OSError):
            os.close(_ready_fd)
        _ready_fd = None


def startup_failed(reason: str) -> None:
    """Tell the waiting terminal why the detached daemon could not start."""
    _tell_parent(f"error: {reason}".encode(errors="replace"))


def wait_ready(read_end: int, timeout: float = READY_WAIT) -> int:
    """In the process on the terminal: the exit status once the daemon is up (0), or
    failed (1, with its reason on stderr)."""
    ready, _, _ = select.select([read_end], [], [], timeout)
    if not ready:
        sys.stderr.write(f"vt: no word from the daemon after {timeout:.0f} s; see its logs\n")
        return 0
    message = os.read(read_end, 4096).decode(errors="replace")
    if message == "ready":
        return 0
    reason = message.removeprefix("error: ") or "the daemon exited while starting; see its logs"
    sys.stderr.write(f"vt: {reason}\n")
    return 1


class Notifier:
    """Sends sd_notify messages when ``NOTIFY_SOCKET`` is set; otherwise drops them."""

    def __init__(self) -> None:
        self._sd = sdnotify.SystemdNotifier() if os.environ.get("NOTIFY_SOCKET") else None
        # Only the main process may notify (NotifyAccess=main): children need not know.
        os.environ.pop("NOTIFY_SOCKET", None)

    def send(self, *fields: str) -> None:
        if self._sd is not None:
            self._sd.notify("\n".join(f.replace("\n", " ") for f in fields))

    @contextlib.asynccontextmanager
    async def serving(self, status: Callable[[], str]) -> AsyncIterator[None]:
        """READY on entry, WATCHDOG and STATUS while inside, STOPPING on the way out."""
        self.send("READY=1", f"STATUS={status()}")
        _tell_parent(b"ready")
        interval = watchdog_interval()
        task = None
        if self._sd is not None and interval:
            task = asyncio.get_running_loop().create_task(self._watchdog(interval, status))
        try:
            yield
        finally:
            self.send("STOPPING=1", "STATUS=stopping")
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _watchdog(self, interval: float, status: Callable[[], str]) -> None:
        while True:
            await asyncio.sleep(interval)
            self.send("WATCHDOG=1", f"STATUS={status()}")
