"""Directories and files vt trusts only because nobody else could have written them.

vt runs as root and acts on what it finds in ``lockdir`` (it signals the PID in a lock
file) and ``statdir`` (it refuses to fall back from secure mode when a file there says
so).  The default ``lockdir`` lies under the world-writable ``/run/lock``: a user who
creates it first, or plants a symlink there, would choose what root reads and writes.
So every directory is created mode 0700, opened without following a symlink and
refused when another user owns it or when group or others may write to it; files are
opened relative to that directory descriptor, with ``O_NOFOLLOW``, and must be regular
files of ours that nobody else may write.  Root-owned directories are trusted by any
user (as ssh's StrictModes does), so a non-root vt can still use root's ``statdir``
for reading.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator

DIR_MODE = 0o700
FILE_MODE = 0o600


class UnsafePath(Exception):
    """A directory or file someone else could have written (one line, for the log)."""


def _trusted_owner(uid: int) -> bool:
    return uid in (0, os.geteuid())


def _check(path: str, st: os.stat_result, kind: str) -> None:
    if not _trusted_owner(st.st_uid):
        raise UnsafePath(f"{path}: owned by uid {st.st_uid}, not by root or uid "
                         f"{os.geteuid()}; refusing to use this {kind}")
    if st.st_mode & 0o022:
        raise UnsafePath(f"{path}: writable by group or others (mode "
                         f"{stat.S_IMODE(st.st_mode):04o}); refusing to use this {kind}")


def check_name(name: str) -> str:
    """``name`` as one path component (a host name, a server address) or UnsafePath."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise UnsafePath(f"{name!r} cannot be a file name")
    return name


def open_dir(path: str, create: bool = True) -> int:
    """A descriptor of the directory ``path``, created mode 0700 if missing.

    Refused (UnsafePath) when ``path`` is a symlink, not a directory, owned by another
    user or writable by group or others.  Raises OSError when it cannot be created.
    """
    if create:
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, 0o755, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, DIR_MODE)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if os.path.islink(path):
            raise UnsafePath(f"{path}: is a symlink; refusing to use this directory") from None
        if os.path.exists(path) and not os.path.isdir(path):
            raise UnsafePath(f"{path}: not a directory") from None
        raise exc
    try:
        _check(path, os.fstat(fd), "directory")
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def private_dir(path: str, create: bool = True) -> Iterator[int]:
    """:func:`open_dir` as a context manager (the descriptor is closed on exit)."""
    fd = open_dir(path, create)
    try:
        yield fd
    finally:
        os.close(fd)


def open_file(dir_fd: int, name: str, flags: int, mode: int = FILE_MODE) -> int:
    """Open ``name`` in the directory ``dir_fd`` without following a symlink; refuse
    anything but a regular file of ours (or root's) that nobody else may write."""
    check_name(name)
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # the last component is a symlink
            raise UnsafePath(f"{name}: is a symlink; refusing to open it") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePath(f"{name}: not a regular file")
        _check(name, st, "file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def prepare(*paths: str) -> None:
    """At start-up: create each directory (0700) or refuse to start on an unsafe one,
    so nobody can plant it after boot and before vt first needs it."""
    for path in paths:
        with private_dir(path):
            pass
