"""glibc's allocator, tuned for a data path that frees megabytes per wake-up.

On the native path a frame is a whole GSO super-packet (up to 64 KiB), and a batch of
them (up to :data:`vtcore.runtime.tunnel.BATCH`) lives until the link has written it:
megabytes allocated and freed per wake-up.  Those buffers are under glibc's mmap
threshold, so they come from the heap, and with the default trim threshold (128 KiB)
every batch freed shrinks the heap with ``brk`` and the next one grows it again, faulting
in fresh zeroed pages.  Profiled on the aes128cbc native path, ``brk`` and the page faults
took about a quarter of the encrypting daemon's CPU.

Setting the trim threshold keeps up to :data:`TRIM_THRESHOLD` of free memory at the top
of the heap for the next batch.  It also stops glibc's dynamic mmap threshold, so that
one is pinned at :data:`MMAP_THRESHOLD`, above the largest frame: a frame never gets a
mapping of its own (fresh pages faulted in per frame).  The cost is up to
:data:`TRIM_THRESHOLD` of resident memory kept after a burst, per process, not per
session (the TCP link's receive buffer is an explicit ``mmap`` for that reason).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
TRIM_THRESHOLD = 16 * 1024 * 1024
MMAP_THRESHOLD = 256 * 1024
"""Above ``MAX_NATIVE_FRAME`` (128 KiB) plus any module's expansion."""


def tune_allocator() -> bool:
    """Apply the settings above; False where the C library is not glibc (nothing done)."""
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    return mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
