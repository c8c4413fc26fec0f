"""Process priority while links run: vtund's ``LINKFD_PRIO`` (nice -1).

vtund lowers its nice value to -1 for the life of a link, so that tunnel traffic gets an
edge over bulk work on the same host (its wake-ups preempt a busy process sooner); users
moving from vtund should not lose that.  A vt server runs all its sessions in one
process: the first link to start lowers the value, the last to end restores the one
found.  A value already lower (``nice -n -5 vt ...``) is kept, and without the
privilege (not root, no CAP_SYS_NICE) nothing changes, as with vtund.  On Linux the
value is per thread: it applies to the event loop's thread, which runs every data path.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

LINK_NICE = -1


class LinkPriority:
    """Counts running links; nice is ``min(found, LINK_NICE)`` while any runs."""

    def __init__(self, nice: int = LINK_NICE) -> None:
        self.nice = nice
        self.active = 0
        self._found: int | None = None

    def started(self) -> None:
        self.active += 1
        if self.active > 1:
            return
        try:
            found = os.getpriority(os.PRIO_PROCESS, 0)
            if found > self.nice:
                os.setpriority(os.PRIO_PROCESS, 0, self.nice)
                self._found = found
        except OSError:
            self._found = None

    def ended(self) -> None:
        if self.active == 0:
            return
        self.active -= 1
        if self.active == 0 and self._found is not None:
            found, self._found = self._found, None
            try:
                os.setpriority(os.PRIO_PROCESS, 0, found)
            except OSError:
                pass

    @contextmanager
    def link(self) -> Iterator[None]:
        """The priority for the life of one link."""
        self.started()
        try:
            yield
        finally:
            self.ended()


PROCESS = LinkPriority()
"""The one instance for this process: its event loop thread runs every link."""
