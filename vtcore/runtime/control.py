"""The channel between the root master and an unprivileged worker.

One ``SOCK_SEQPACKET`` socket pair per worker: each message is one JSON object (at most
:data:`MAX_MESSAGE` bytes, kept whole by the kernel) with at most :data:`MAX_FDS`
descriptors (SCM_RIGHTS).  Either side may ask (``{"op": ..., "id": N}``) and answers
with ``{"re": N, ...}``.

The master trusts nothing a worker sends: :func:`parse_request` turns a worker's message
into one of the few typed requests below, or raises :class:`Violation` (the master then
kills the worker).  A worker never sends descriptors.  The worker trusts the master.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

MAX_MESSAGE = 64 * 1024
"""Bytes in one message either way (a status document of a busy worker fits)."""
MAX_FDS = 2
ASK_TIMEOUT = 30.0
"""Bound on any answer (the up commands' own bound, 60 s per waited command, is the
master's business: it answers when they are done)."""


class Violation(Exception):
    """A worker's message the master must not act on; ``str()`` says why in a line."""


# ------------------------------------------------------------------ worker -> master


@dataclass(frozen=True)
class Claim:
    """The worker authenticated ``host`` on connection ``conn``: lock it (``multi``).
    ``response`` is the client's answer to the master's challenge (vtun's handshake),
    empty after a secure-mode handshake."""

    id: int
    conn: int
    host: str
    response: bytes


@dataclass(frozen=True)
class OpenDevice:
    """The claimed host's device, with the modes the peers agreed on."""

    id: int
    conn: int
    type: str
    """The ``type`` word: the server's host says it (a server's master checks it is the
    host's own); a client learns it from the server."""
    offload: bool
    split: bool
    runs: bool


@dataclass(frozen=True)
class Up:
    """Run the host's up commands; the link's endpoints for ``%a %p %A %P``."""

    id: int
    conn: int
    local: tuple[str, int]
    remote: tuple[str, int]


@dataclass(frozen=True)
class Down:
    """Run the host's down commands (once, only after its up)."""

    id: int
    conn: int


@dataclass(frozen=True)
class Release:
    """The session on ``conn`` is over: close its device, release its lock."""

    id: int
    conn: int


@dataclass(frozen=True)
class Stat:
    """A ``stat yes`` line's counters: bytes in, out, compressed in, out."""

    id: int
    conn: int
    counters: tuple[int, int, int, int]


@dataclass(frozen=True)
class Pinned:
    """A client's worker: did this server speak secure mode before (trust on first use,
    a file only root reads)?"""

    id: int


@dataclass(frozen=True)
class Remember:
    """A client's worker: this server spoke secure mode; remember it."""

    id: int


Request = Claim | OpenDevice | Up | Down | Release | Stat | Pinned | Remember

_FIELDS: dict[str, tuple[type, dict[str, Any]]] = {
    "claim": (Claim, {"conn": int, "host": str, "response": str}),
    "device": (OpenDevice, {"conn": int, "type": str, "offload": bool, "split": bool,
                            "runs": bool}),
    "up": (Up, {"conn": int, "local": list, "remote": list}),
    "down": (Down, {"conn": int}),
    "release": (Release, {"conn": int}),
    "stat": (Stat, {"conn": int, "counters": list}),
    "pinned": (Pinned, {}),
    "remember": (Remember, {}),
}
MAX_HOST = 64
MAX_COUNTER = 1 << 63


def _endpoint(value: list, what: str) -> tuple[str, int]:
    """``[address, port]``: an IP address as text and a port, nothing else (they end up
    in the arguments of root's commands)."""
    if len(value) != 2 or not isinstance(value[0], str) or type(value[1]) is not int:
        raise Violation(f"{what}: not [address, port]")
    addr, port = value
    try:
        ipaddress.ip_address(addr)
    except ValueError:
        raise Violation(f"{what}: not an IP address") from None
    if not 0 <= port <= 65535:
        raise Violation(f"{what}: port out of range")
    return addr, port


def parse_request(msg: object) -> Request:
    """A worker's message as a typed request, or :class:`Violation`."""
    if not isinstance(msg, dict):
        raise Violation("not an object")
    op = msg.get("op")
    if not isinstance(op, str) or op not in _FIELDS:
        raise Violation(f"unknown op {str(op)[:20]!r}")
    cls, fields = _FIELDS[op]
    if set(msg) != {"op", "id", *fields}:
        raise Violation(f"{op}: wrong fields")
    if type(msg["id"]) is not int or not 0 <= msg["id"] < MAX_COUNTER:
        raise Violation(f"{op}: bad id")
    for name, kind in fields.items():
        if type(msg[name]) is not kind:
            raise Violation(f"{op}: {name} is not {kind.__name__}")
    args: dict[str, Any] = {"id": msg["id"]}
    if "conn" in fields:
        args["conn"] = msg["conn"]
    if op == "claim":
        if not 0 < len(msg["host"]) <= MAX_HOST:
            raise Violation("claim: bad host name")
        try:
            response = bytes.fromhex(msg["response"])
        except ValueError:
            raise Violation("claim: response is not hex") from None
        if len(response) not in (0, 16):
            raise Violation("claim: response of the wrong size")
        args.update(host=msg["host"], response=response)
    elif op == "device":
        if not 0 < len(msg["type"]) <= MAX_HOST:
            raise Violation("device: bad type")
        args.update(type=msg["type"], offload=msg["offload"], split=msg["split"],
                    runs=msg["runs"])
    elif op == "up":
        args.update(local=_endpoint(msg["local"], "up local"),
                    remote=_endpoint(msg["remote"], "up remote"))
    elif op == "stat":
        counters = msg["counters"]
        if len(counters) != 4 or any(type(c) is not int or not 0 <= c < MAX_COUNTER
                                     for c in counters):
            raise Violation("stat: bad counters")
        args.update(counters=tuple(counters))
    return cls(**args)


# ------------------------------------------------------------------ the channel


class Channel:
    """One end of a worker's socket pair on the running loop: ``ask`` (request, await
    the answer), ``tell`` (no answer), ``answer``; incoming requests go to ``handler``."""

    def __init__(self, sock: socket.socket,
                 handler: Callable[[dict, list[int]], Coroutine[Any, Any, None]]) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.handler = handler
        self._next = 0
        self._waiting: dict[int, asyncio.Future] = {}
        self._tasks: set[asyncio.Task] = set()
        self.closed = asyncio.Event()

    def _write(self, msg: dict, fds: list[int]) -> None:
        data = json.dumps(msg, separators=(",", ":")).encode()
        if len(data) > MAX_MESSAGE:
            raise ValueError(f"control message of {len(data)} bytes")
        # Messages are small and the peer drains its end on its loop: a full queue
        # (EAGAIN) means a peer that stopped reading, which the caller's bound handles.
        if fds:
            socket.send_fds(self.sock, [data], fds)
        else:
            self.sock.send(data)

    async def send(self, msg: dict, fds: list[int] | None = None) -> None:
        for _ in range(200):  # bounded: ~10 s of a full queue
            try:
                self._write(msg, fds or [])
                return
            except BlockingIOError:
                await asyncio.sleep(0.05)
            except OSError as exc:
                raise EOFError(f"control channel: {exc.strerror}") from None
        raise TimeoutError("control channel full")

    async def ask(self, msg: dict, fds: list[int] | None = None,
                  timeout: float = ASK_TIMEOUT) -> tuple[dict, list[int]]:
        self._next += 1
        msg = {**msg, "id": self._next}
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._waiting[self._next] = future
        try:
            await self.send(msg, fds)
            return await asyncio.wait_for(future, timeout)
        finally:
            self._waiting.pop(msg["id"], None)

    async def tell(self, msg: dict, fds: list[int] | None = None) -> None:
        self._next += 1
        await self.send({**msg, "id": self._next}, fds)

    def post(self, msg: dict) -> None:
        """:meth:`tell` from code that cannot wait (a full queue: sent by a task)."""
        self._next += 1
        msg = {**msg, "id": self._next}
        try:
            self._write(msg, [])
        except BlockingIOError:
            task = asyncio.get_running_loop().create_task(self.send(msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        except OSError:
            pass  # the channel is gone: its owner learns that from run()

    async def answer(self, request_id: int, msg: dict, fds: list[int] | None = None) -> None:
        await self.send({**msg, "re": request_id}, fds)

    async def _recv(self) -> tuple[bytes, list[int]]:
        loop = asyncio.get_running_loop()
        while True:
            try:
                data, fds, flags, _ = socket.recv_fds(self.sock, MAX_MESSAGE, MAX_FDS)
            except BlockingIOError:
                ready = loop.create_future()
                loop.add_reader(self.sock.fileno(), ready.set_result, None)
                try:
                    await ready
                finally:
                    loop.remove_reader(self.sock.fileno())
                continue
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                _close_all(fds)
                raise Violation("message or descriptors cut: too large")
            return data, fds

    async def run(self) -> None:
        """Read until the peer closes; answers wake their ``ask``, requests are handled
        each in a task.  Raises :class:`Violation` for a message that is no JSON object
        (the caller decides what that costs the peer)."""
        try:
            while True:
                try:
                    data, fds = await self._recv()
                except OSError:
                    return
                if not data:
                    return
                try:
                    msg = json.loads(data)
                except (ValueError, UnicodeDecodeError):
                    _close_all(fds)
                    raise Violation("not JSON") from None
                if not isinstance(msg, dict):
                    _close_all(fds)
                    raise Violation("not an object")
                re = msg.get("re")
                if re is not None:
                    future = self._waiting.get(re) if type(re) is int else None
                    if future is not None and not future.done():
                        future.set_result((msg, fds))
                    else:
                        _close_all(fds)
                    continue
                task = asyncio.get_running_loop().create_task(self.handler(msg, fds))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            self.closed.set()
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(EOFError("control channel closed"))

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self.sock.close()


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
