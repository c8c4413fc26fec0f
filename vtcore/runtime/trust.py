"""Trust on first use: a vt client remembers that a server once spoke secure mode.

A client whose host has no secure word (the vtund habit: only the server sets
``encrypt``) still offers secure mode, but would take vtund's challenge from anyone who
answers ``OK CHAL``: a man in the middle rewriting ``OK VT3`` gets a Blowfish/MD5
response to guess the password from offline, and the server is never authenticated.
So once a server answered in secure mode, the client writes
``<statdir>/vt-secure-servers/<host>@<server>:<port>`` (directory 0700, file 0600, both
created through :mod:`vtcore.runtime.fsguard`), and from then on refuses legacy
authentication from that server.  Deleting the file forgets it (for a server really
moved back to vtund).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from urllib.parse import quote

from vtcore.runtime import fsguard

SUBDIR = "vt-secure-servers"

LEGACY_AUTH = "legacy vtund authentication: a recorded session allows offline password guessing"
SSLAUTH_NO = ("sslauth no: the response is the challenge XOR the password; one recorded "
              "session gives the password away")


def legacy_warnings(sslauth: bool) -> list[str]:
    """What each session authenticated the vtund way logs, on either end."""
    return [LEGACY_AUTH] if sslauth else [LEGACY_AUTH, SSLAUTH_NO]


def record_path(statdir: str, host: str, server: str, port: int) -> Path:
    """The file for ``host`` at ``server:port`` (any ``/`` or ``%`` in the names
    quoted, so the name stays one path component)."""
    return Path(statdir) / SUBDIR / quote(f"{host}@{server}:{port}", safe="@:.-_+[]")


def is_pinned(statdir: str, host: str, server: str, port: int) -> bool:
    """This server spoke secure mode before.  Raises UnsafePath for a directory or file
    someone else could have written (the caller refuses to connect)."""
    path = record_path(statdir, host, server, port)
    try:
        with fsguard.private_dir(str(path.parent), create=False) as dfd:
            os.close(fsguard.open_file(dfd, path.name, os.O_RDONLY))
    except FileNotFoundError:
        return False
    return True


def remember(statdir: str, host: str, server: str, port: int, now: float) -> bool:
    """Record that the server spoke secure mode; False if it was known already."""
    path = record_path(statdir, host, server, port)
    with fsguard.private_dir(str(path.parent)) as dfd:
        try:
            fd = fsguard.open_file(dfd, path.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            return False
        try:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
            os.write(fd, f"secure mode first seen {stamp}\n".encode())
        finally:
            os.close(fd)
    return True
