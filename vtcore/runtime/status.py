"""Live status of a running vt: a Unix socket answering one JSON document per connection.

Every ``vt serve`` and ``vt run`` listens on ``<rundir>/<role>-<name>-<pid>.sock``
(``rundir`` is ``$VT_RUN_DIR`` or ``/run/vt``); ``vt status`` reads them all.  Nothing
secret is in the document: host names, peers, modes and counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

RUN_DIR_ENV = "VT_RUN_DIR"
DEFAULT_RUN_DIR = "/run/vt"
READ_LIMIT = 1 << 20


def run_dir() -> Path:
    return Path(os.environ.get(RUN_DIR_ENV) or DEFAULT_RUN_DIR)


def session_status(session) -> dict[str, object]:
    """One session, for the status document."""
    opts = session.settings.options
    tunnel = getattr(session, "tunnel", None)
    if tunnel is not None:
        tunnel.pull_counters()  # live figures, not the last session's end
    return {
        "host": session.host.name,
        "peer": session.peer,
        "udp_peer": session.udp_peer,
        "since": round(session.started, 3),
        "uptime": round(time.time() - session.started, 1),
        "proto": session.settings.transport,
        "type": session.settings.tunnel_type,
        "device": getattr(session.device, "name", None),
        "native": bool(opts.get("native")),
        "offload": bool(opts.get("offload")),
        "secure": opts.get("secure") is not None,
        "counters": session.counters.as_dict(),
        "rekeys": int(getattr(getattr(session.tunnel, "link", None), "rekeys", 0) or 0),
        "last_frame_age": _last_frame_age(session),
    }


def _last_frame_age(session) -> float:
    """Seconds since a frame last came in (since the session started, before the first)."""
    idle = session.tunnel.link_idle(time.monotonic()) if session.tunnel is not None else None
    return round(time.time() - session.started if idle is None else idle, 3)


class StatusServer:
    """Serves ``snapshot()`` as JSON on a Unix socket until closed."""

    def __init__(self, role: str, name: str, snapshot: Callable[[], dict]) -> None:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:40]
        self.path = run_dir() / f"{role}-{safe}-{os.getpid()}.sock"
        self.snapshot = snapshot
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            remove_stale(self.path.parent)
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self._server = await asyncio.start_unix_server(self._answer, path=str(self.path))
            os.chmod(self.path, 0o600)
        except OSError:
            self._server = None  # status is a convenience; never stop the tunnel for it

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            doc = {"pid": os.getpid(), **self.snapshot()}
            writer.write(json.dumps(doc).encode() + b"\n")
            await asyncio.wait_for(writer.drain(), 5)
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        with contextlib.suppress(OSError):
            self.path.unlink()


def _connect(path: Path, timeout: float) -> socket.socket | None:
    """A connection to the daemon behind ``path``; None if there is none.  A socket
    nobody listens on (its daemon was killed with -9) is removed."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
        return sock
    except ConnectionRefusedError:
        with contextlib.suppress(OSError):
            path.unlink()
    except OSError:
        pass
    sock.close()
    return None


def remove_stale(directory: Path, timeout: float = 0.5) -> None:
    """Remove the sockets of dead daemons, as every daemon starts (not only when
    ``vt status`` runs).  Only ``*.sock`` files nothing listens on go."""
    for path in directory.glob("*.sock"):
        sock = _connect(path, timeout)
        if sock is not None:
            sock.close()


def query_all(timeout: float = 2.0) -> list[dict]:
    """Ask every live vt on this machine; stale sockets of dead processes are removed."""
    out: list[dict] = []
    directory = run_dir()
    if not directory.is_dir():
        return out
    for path in sorted(directory.glob("*.sock")):
        sock = _connect(path, timeout)
        if sock is None:
            continue
        try:
            buf = b""
            while len(buf) < READ_LIMIT:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
            out.append(json.loads(buf))
        except (OSError, ValueError):
            continue
        finally:
            sock.close()
    return out
