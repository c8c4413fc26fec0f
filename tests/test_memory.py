"""The allocator tuning of the daemons (vtcore.runtime.memory), in a fresh interpreter each.

What it must change: a freed batch of super-packet-sized buffers stays in the heap for
the next batch, instead of going back to the kernel (``brk``) and faulting in again.
"""

from __future__ import annotations

import platform
import subprocess
import sys

from netns import _skip_or_fail

PROBE = """
import ctypes, sys
from vtcore.runtime.memory import tune_allocator

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split())]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
tuned = tune_allocator() if sys.argv[1] == "tuned" else None
for _ in range(3):  # a few batches, as the linker makes them
    batch = [bytes(65536 - 33) + bytes([i % 256]) for i in range(64)]  # 4 MiB of frames
    del batch
info = libc.mallinfo2()
print(tuned, info.fordblks, info.hblkhd)
"""

def _after_batches(mode: str) -> tuple[str, int, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    return out[0], int(out[1]), int(out[2])


def test_freed_frames_stay_in_the_heap_for_the_next_batch() -> None:
    if platform.libc_ver()[0] != "glibc":
        _skip_or_fail("mallopt and mallinfo2 are glibc's")  # a failure under CI
    tuned, free_tuned, mmapped_tuned = _after_batches("tuned")
    assert tuned == "True"
    assert free_tuned >= 3 * 1024 * 1024, "a freed batch should stay in the heap"
    _, free_default, mmapped_default = _after_batches("default")
    assert mmapped_tuned <= mmapped_default, "frames must not be mmapped one by one"
    # glibc's default trims the heap as soon as its free top passes 128 KiB.
    assert free_default < 1024 * 1024 < free_tuned
