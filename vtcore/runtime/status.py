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
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path

from vtcore.config.check import VTUND_CIPHERS

RUN_DIR_ENV = "VT_RUN_DIR"
DEFAULT_RUN_DIR = "/run/vt"
READ_LIMIT = 1 << 20
SAMPLE_EVERY = 1.0
"""Seconds between the status server's samples of every session's counters (rates)."""
RATE_WINDOW = 5.0
"""Seconds of samples a session's current rates are computed over."""
CIPHER_NAMES = {code: name for name, code in VTUND_CIPHERS.items()}
RATED = ("byte_in", "byte_out", "frames_in", "frames_out")


def run_dir() -> Path:
    return Path(os.environ.get(RUN_DIR_ENV) or DEFAULT_RUN_DIR)


def session_status(session) -> dict[str, object]:
    """One session, for the status document."""
    tunnel = getattr(session, "tunnel", None)
    if tunnel is not None:
        tunnel.pull_counters()  # live figures, not the last session's end
    counters = session.counters.as_dict()
    return {
        "host": session.host.name,
        "peer": session.peer,
        "udp_peer": session.udp_peer,
        "since": round(session.started, 3),
        "uptime": round(time.time() - session.started, 1),
        "proto": session.settings.transport,
        "type": session.settings.tunnel_type,
        "device": getattr(session.device, "name", None),
        "native": session.settings.native,
        "offload": session.settings.offload,
        "segments": session.settings.segments,
        "runs": session.settings.runs,
        "secure": session.settings.secure is not None,
        "compress": compression_name(session.settings),
        "cipher": cipher_name(session.settings),
        "counters": counters,
        "rates": _rates(session, counters),
        "rekeys": int(getattr(getattr(session.tunnel, "link", None), "rekeys", 0) or 0),
        "max_payload": _max_payload(session),
        "last_frame_age": _frame_age(session, "link_idle"),
        "last_frame_out_age": _frame_age(session, "device_idle"),
    }


def _max_payload(session) -> int | None:
    """The largest packet the session's link carries now: between vt ends over udp it
    follows the path MTU (DF set); a larger one is answered "too big"."""
    link = getattr(getattr(session, "tunnel", None), "link", None)
    return None if link is None else int(link.max_payload)


def compression_name(settings) -> str | None:
    """``lzo:1``, ``zlib:9``; None without compression."""
    return f"{settings.compress[0]}:{settings.compress[1]}" if settings.compress else None


def cipher_name(settings) -> str | None:
    """vtund's cipher name (``aes128cbc``), ``secure <mode> <suite>`` for vt's secure
    mode (never a vtund cipher: secure mode replaces it), None without encryption."""
    if settings.secure is not None:
        return f"secure {settings.secure}"
    if settings.encrypt is None:
        return None
    return CIPHER_NAMES.get(settings.encrypt, f"cipher {settings.encrypt}")


def module_names(settings) -> list[str]:
    """The session's compression and cipher by name, for its ``session up`` log line."""
    comp = settings.compress[0] if settings.compress else None
    return [n for n in (comp, cipher_name(settings)) if n]


def _frame_age(session, which: str) -> float:
    """Seconds since the link woke the tunnel with frames (``link_idle``: in) or the
    device did with packets to send (``device_idle``: out); since the session started
    before the first.  Taken at batch granularity: nothing is counted per packet."""
    idle = getattr(session.tunnel, which)(time.monotonic()) if session.tunnel else None
    return round(time.time() - session.started if idle is None else idle, 3)


_windows: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""Per session: the last :data:`RATE_WINDOW` seconds of (monotonic time, counters)."""


def _rates(session, counters: dict[str, int]) -> dict[str, float] | None:
    """Per-second rates of :data:`RATED` over the session's recent samples (the status
    server samples every :data:`SAMPLE_EVERY` s, each answer adds one); None until two
    samples are at least half a sample interval apart."""
    now = time.monotonic()
    window = _windows.setdefault(session, deque(maxlen=64))
    sample = (now, tuple(counters[k] for k in RATED))
    if window and any(new < old for new, old in zip(sample[1], window[-1][1], strict=True)):
        window.clear()  # a counter reset (SIGUSR1): start again
    if not window or now - window[-1][0] >= SAMPLE_EVERY / 2:
        window.append(sample)
    while len(window) > 2 and now - window[1][0] >= RATE_WINDOW:
        window.popleft()
    then, old = window[0]
    if now - then < SAMPLE_EVERY / 2:
        return None
    return {k: round((new - was) / (now - then), 1)
            for k, new, was in zip(RATED, sample[1], old, strict=True)}


class StatusServer:
    """Serves ``snapshot()`` as JSON on a Unix socket until closed."""

    def __init__(self, role: str, name: str, snapshot: Callable[[], dict],
                 refresh: Callable[[], Awaitable[None]] | None = None) -> None:
        self.refresh = refresh
        """Brings what ``snapshot`` shows up to date first (a master asks its workers)."""
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:40]
        self.path = run_dir() / f"{role}-{safe}-{os.getpid()}.sock"
        self.snapshot = snapshot
        self._server: asyncio.AbstractServer | None = None
        self._sampler: asyncio.Task | None = None

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
            return
        self._sampler = asyncio.get_running_loop().create_task(self._sample_forever())

    async def _sample_forever(self) -> None:
        """A snapshot every :data:`SAMPLE_EVERY` s, so that the first ``vt status`` already
        has current rates (off the data path: one timer per daemon)."""
        while True:
            await asyncio.sleep(SAMPLE_EVERY)
            with contextlib.suppress(Exception):  # a snapshot that fails is not fatal here
                if self.refresh is not None:
                    await self.refresh()
                self.snapshot()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.refresh is not None:
                await self.refresh()
            doc = {"pid": os.getpid(), "monotonic": round(time.monotonic(), 3),
                   **self.snapshot()}
            writer.write(json.dumps(doc).encode() + b"\n")
            await asyncio.wait_for(writer.drain(), 5)
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
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
