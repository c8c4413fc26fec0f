"""``passwd_file PATH;`` (vt only): a host's password kept outside a config that is
shared, versioned or readable by many, in a file only its owner may read."""

from __future__ import annotations

import errno
import os
import stat

MAX_PASSWORD_FILE = 4096
"""Bytes read at most: a password file is one line."""


class PasswordFileError(ValueError):
    """The file is unsafe or unusable; the message never quotes its content."""


def read_password_file(path: str) -> str:
    """The first line of ``path`` (without its line end).  As ssh does for its keys, the
    file must be a regular file owned by root or by the user vt runs as, that group and
    others may neither read nor write: else anyone who could read it knows the password,
    and anyone who could write it chooses it.  A symlink is refused (``O_NOFOLLOW``); the
    checks are made on the open descriptor, so the file cannot be swapped in between."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        hint = " (a symlink: name the file itself)" if exc.errno == errno.ELOOP else ""
        raise PasswordFileError(f"cannot read passwd_file {path}: {exc.strerror}{hint}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PasswordFileError(f"passwd_file {path} is not a regular file")
        if st.st_uid not in (0, os.geteuid()):
            raise PasswordFileError(f"passwd_file {path} belongs to uid {st.st_uid}: it must "
                                    "belong to root or to the user vt runs as")
        if st.st_mode & 0o077:
            raise PasswordFileError(f"passwd_file {path} may be read or written by group or "
                                    f"others (mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it")
        data = os.read(fd, MAX_PASSWORD_FILE + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_PASSWORD_FILE:
        raise PasswordFileError(f"passwd_file {path} is over {MAX_PASSWORD_FILE} bytes; it "
                                "holds one line, the password")
    line = data.split(b"\n", 1)[0].rstrip(b"\r")
    if not line:
        raise PasswordFileError(f"passwd_file {path}: its first line (the password) is empty")
    return line.decode("utf-8", "surrogateescape")
