"""The daemons' event loop: asyncio's, with a selector that calls data-path readers at once.

Why: through an idle tunnel, what vt adds to a ping is the time its daemons spend in the
interpreter between a wake-up and the packet's system calls, four times per round trip,
and after an idle gap it is spent with cold caches.  Per hop on loopback
(``bench/floor.py``), asyncio's ``add_reader`` adds ~70 us over a C relay; a bare
``epoll`` loop in Python ~30 us; this loop ~40 us.

A *direct reader* (``DataLoop.add_direct_reader``) is called from ``select()`` as soon as
``epoll`` reports its descriptor readable, or in error or hang-up (the reader's own read
then raises, so an ICMP error or a reset still ends a session).  While only direct
readers have work, ``select()`` goes on waiting by itself; it returns to asyncio when an
asyncio descriptor is ready, a timer is due, or a reader scheduled something.  Everything
else, timers, writers, coroutines, goes through asyncio unchanged, and a descriptor may
have a direct reader and an asyncio writer at once.  Only the public selector interface
and public loop methods are used.
"""

from __future__ import annotations

import asyncio
import errno
import math
import select
import selectors
import signal
import time
from collections.abc import Callable, Coroutine, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

T = TypeVar("T")

_READ, _WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
_NOT_OUT = ~select.EPOLLOUT
"""Any event but writability wakes a reader: data, error or hang-up."""
_NOT_IN = ~select.EPOLLIN


def _fd_of(fileobj: Any) -> int:
    fd = fileobj if isinstance(fileobj, int) else int(fileobj.fileno())
    if fd < 0:
        raise ValueError(f"invalid file descriptor: {fd}")
    return fd


class DirectSelector(selectors.BaseSelector):
    """An ``epoll`` selector for asyncio that also runs direct readers inside ``select()``."""

    def __init__(self, report: Callable[[BaseException, Callable[[], object]], None]) -> None:
        self._epoll = select.epoll()
        self._keys: dict[int, selectors.SelectorKey] = {}
        self._direct: dict[int, Callable[[], object]] = {}
        self._armed: dict[int, int] = {}
        """What ``epoll`` watches per descriptor: asyncio's events and the direct reader's."""
        self._report = report
        self.wake = False
        """Set when a direct reader gave asyncio work (a callback, a timer, a stop):
        ``select()`` then returns at once instead of waiting on."""

    # ------------------------------------------------------------------ epoll interest

    def _sync(self, fd: int) -> None:
        key = self._keys.get(fd)
        want = 0
        if fd in self._direct or (key is not None and key.events & _READ):
            want |= select.EPOLLIN
        if key is not None and key.events & _WRITE:
            want |= select.EPOLLOUT
        have = self._armed.get(fd)
        if want == have:
            return
        if not want:
            del self._armed[fd]
            try:
                self._epoll.unregister(fd)
            except OSError:  # closed already: epoll forgot it with the file
                pass
            return
        try:
            if have is None:
                self._register(fd, want)
            else:
                self._modify(fd, want)
        except OSError:
            self._armed.pop(fd, None)
            raise
        self._armed[fd] = want

    def _register(self, fd: int, mask: int) -> None:
        try:
            self._epoll.register(fd, mask)
        except FileExistsError:  # a descriptor number reused before we heard of the close
            self._epoll.modify(fd, mask)

    def _modify(self, fd: int, mask: int) -> None:
        try:
            self._epoll.modify(fd, mask)
        except OSError as exc:
            if exc.errno != errno.ENOENT:  # closed and reopened under the same number
                raise
            self._epoll.register(fd, mask)

    # ------------------------------------------------------------------ direct readers

    def add_direct(self, fd: int, callback: Callable[[], object]) -> None:
        if fd in self._direct:
            raise KeyError(f"FD {fd} already has a direct reader")
        self._direct[fd] = callback
        try:
            self._sync(fd)
        except OSError:
            del self._direct[fd]
            raise

    def remove_direct(self, fd: int) -> bool:
        if self._direct.pop(fd, None) is None:
            return False
        self._sync(fd)
        return True

    # ------------------------------------------------------------------ selector interface

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._store(fileobj, events, data, new=True)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        fd = _fd_of(fileobj)
        try:
            key = self._keys.pop(fd)
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None
        self._sync(fd)
        return key

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._store(fileobj, events, data, new=False)

    def _store(self, fileobj: Any, events: int, data: Any, *, new: bool) -> selectors.SelectorKey:
        """Register (``new``) or modify asyncio's interest; the old key back if epoll refuses."""
        if not events or events & ~(_READ | _WRITE):
            raise ValueError(f"invalid events: {events!r}")
        fd = _fd_of(fileobj)
        old = self._keys.get(fd)
        if new and old is not None:
            raise KeyError(f"{fileobj!r} (FD {fd}) is already registered")
        if not new and old is None:
            raise KeyError(f"{fileobj!r} is not registered")
        key = self._keys[fd] = selectors.SelectorKey(fileobj, fd, events, data)
        try:
            self._sync(fd)
        except OSError:
            if old is None:
                del self._keys[fd]
            else:
                self._keys[fd] = old
            raise
        return key

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        try:
            return self._keys[_fd_of(fileobj)]
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return MappingProxyType(self._keys)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        """Wait for events; run direct readers as they come, return asyncio's share.

        While only direct readers have work, the wait goes on here until ``timeout`` (the
        loop's next timer): a trip through asyncio's iteration between two packets would
        be as long as the packet's own work, and a reply arriving meanwhile would wait.
        It returns as soon as an asyncio descriptor is ready or a reader scheduled work
        for asyncio (:attr:`wake`, set by :class:`DataLoop`)."""
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        self.wake = False
        direct = self._direct
        keys = self._keys
        while True:
            if deadline is None:
                wait = -1.0
            else:  # epoll counts milliseconds: round up so as not to spin
                left = deadline - time.monotonic()
                wait = math.ceil(left * 1e3) * 1e-3 if left > 0 else 0.0
            try:
                events = self._epoll.poll(wait, max(len(self._armed), 1))
            except InterruptedError:
                return []
            ready = []
            for fd, ev in events:
                if ev & _NOT_OUT:
                    reader = direct.get(fd)
                    if reader is not None:
                        try:
                            reader()
                        except Exception as exc:  # one session's bug must not stop the loop
                            self._report(exc, reader)
                key = keys.get(fd)
                if key is not None:
                    mask = (_WRITE if ev & _NOT_IN else 0) | (_READ if ev & _NOT_OUT else 0)
                    mask &= key.events
                    if mask:
                        ready.append((key, mask))
            if ready or self.wake or not events or wait == 0.0:
                return ready

    def close(self) -> None:
        self._epoll.close()
        self._keys.clear()
        self._direct.clear()
        self._armed.clear()


class DataLoop(asyncio.SelectorEventLoop):
    """asyncio's selector loop on a :class:`DirectSelector` (Linux: epoll)."""

    def __init__(self) -> None:
        self._direct_selector = DirectSelector(self._report_direct)
        super().__init__(self._direct_selector)

    # Whatever a direct reader hands to asyncio must end the selector's wait.
    def call_soon(self, *args: Any, **kwargs: Any) -> asyncio.Handle:  # type: ignore[override]
        self._direct_selector.wake = True
        return super().call_soon(*args, **kwargs)

    def call_at(self, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:  # type: ignore[override]
        self._direct_selector.wake = True
        return super().call_at(*args, **kwargs)

    def stop(self) -> None:
        self._direct_selector.wake = True
        super().stop()

    def add_direct_reader(self, fd: int, callback: Callable[[], object]) -> None:
        """Call ``callback()`` as soon as ``fd`` is readable (or in error), before timers
        and other callbacks of that loop iteration.  One direct reader per descriptor."""
        if self.is_closed():
            raise RuntimeError("Event loop is closed")
        self._direct_selector.add_direct(fd, callback)

    def remove_direct_reader(self, fd: int) -> bool:
        if self.is_closed():
            return False
        return self._direct_selector.remove_direct(fd)

    def _report_direct(self, exc: BaseException, callback: Callable[[], object]) -> None:
        self.call_exception_handler({
            "message": f"Exception in direct reader {callback!r}",
            "exception": exc,
        })


def add_reader(loop: asyncio.AbstractEventLoop, fd: int, callback: Callable[[], object]) -> None:
    """A data-path reader: direct on a :class:`DataLoop`, an asyncio reader elsewhere."""
    if isinstance(loop, DataLoop):
        loop.add_direct_reader(fd, callback)
    else:
        loop.add_reader(fd, callback)


def remove_reader(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    if isinstance(loop, DataLoop):
        loop.remove_direct_reader(fd)
    else:
        loop.remove_reader(fd)


QUIETED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on a :class:`DataLoop`: what the daemons run their top coroutine with."""
    with asyncio.Runner(loop_factory=DataLoop) as runner:
        try:
            return runner.run(main)
        finally:
            _ignore_late_signals(runner.get_loop())


def _ignore_late_signals(loop: asyncio.AbstractEventLoop) -> None:
    """``main`` is done: the process is on its way out.  Closing the loop would put the
    default actions back, so a late SIGTERM (a master's second one, or the service
    manager's) would kill it mid-exit (status -15), or find the loop's wakeup pipe
    closed; it is ignored instead."""
    for sig in QUIETED:
        if loop.remove_signal_handler(sig):
            signal.signal(sig, signal.SIG_IGN)
