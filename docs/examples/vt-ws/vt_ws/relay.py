"""The WebSocket side of ``proto ws``: the HTTP Upgrade, then a relay between the real
connection (WebSocket binary messages, by the sans-I/O ``wsproto``) and one end of a
socketpair whose other end vt uses as if it were the TCP connection.  vt's handshake and
frames run unchanged inside; the WebSocket message boundaries mean nothing to them."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Mapping

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

CHUNK = 64 * 1024
"""Bytes read at a time from either side: the relay buffers no more than this each way."""
DEFAULT_PATH = "/"
VTUN_GREETING = b"VTUN"
NOT_WS = "(vtund, or a vt server with no proto ws host)"

_relays: set[asyncio.Task[None]] = set()
"""Running relays, referenced so the loop does not drop them."""


class Upgrade:
    """The HTTP Upgrade of one connection, sans I/O: feed it bytes, send what it says.

    ``done`` once the upgrade succeeded; ``pending`` holds tunnel bytes that arrived with
    it.  A refusal or a non-HTTP answer raises ``ConnectionError`` with one line."""

    def __init__(self, role: str, host: str = "", path: str = DEFAULT_PATH) -> None:
        client = role == "client"
        self.ws = WSConnection(ConnectionType.CLIENT if client else ConnectionType.SERVER)
        self.done = False
        self.pending = bytearray()
        self.target = ""
        self._first = True
        self._out = self.ws.send(Request(host=host, target=path)) if client else b""

    def data_to_send(self) -> bytes:
        out, self._out = self._out, b""
        return out

    def receive_data(self, data: bytes) -> None:
        if not data:
            raise ConnectionError(f"connection closed during the WebSocket upgrade {NOT_WS}")
        first, self._first = self._first, False
        if first and data.startswith(VTUN_GREETING):  # h11 would wait for a blank line
            raise ConnectionError("the server answered with vtun's greeting, not a "
                                  f"WebSocket upgrade {NOT_WS}")
        try:
            self.ws.receive_data(data)
            for event in self.ws.events():
                self._handle(event)
        except RemoteProtocolError as exc:
            raise ConnectionError(f"bad WebSocket upgrade: {exc}") from None

    def _handle(self, event: Event) -> None:
        if isinstance(event, Request):
            self.target = event.target
            self._out += self.ws.send(AcceptConnection())
            self.done = True
        elif isinstance(event, AcceptConnection):
            self.done = True
        elif isinstance(event, RejectConnection):
            raise ConnectionError(f"WebSocket upgrade refused: HTTP {event.status_code}")
        elif isinstance(event, BytesMessage):
            self.pending += event.data
        else:
            raise ConnectionError(f"unexpected {type(event).__name__} during the upgrade")


async def upgrade(sock: socket.socket, state: Upgrade, timeout: float) -> None:
    """Run ``state`` on ``sock`` until the upgrade is done, within ``timeout``."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        while True:
            out = state.data_to_send()
            if out:
                await loop.sock_sendall(sock, out)
            if state.done:
                return
            try:
                data = await loop.sock_recv(sock, CHUNK)
            except ConnectionResetError:
                # vtund takes the request for its HOST line, refuses and closes unread.
                raise ConnectionError(f"connection reset during the WebSocket upgrade "
                                      f"{NOT_WS}") from None
            state.receive_data(data)


async def wrap(sock: socket.socket, role: str, options: Mapping[str, object],
               timeout: float) -> socket.socket:
    """``TransportType.wrap`` for ``proto ws``: upgrade, start the relay, return vt's end."""
    path = str(options.get("ws_path") or DEFAULT_PATH)
    if not path.startswith("/") or not path.isprintable() or " " in path:
        raise ValueError(f"ws_path must be an absolute request path such as /tunnel, "
                         f"not {path!r}")
    own = socket.socket(sock.family, sock.type, sock.proto, fileno=sock.detach())
    own.setblocking(False)
    state = Upgrade(role, str(options.get("server", "")), path)
    try:
        await upgrade(own, state, timeout)
    except BaseException:
        own.close()
        raise
    inner, outer = socket.socketpair()
    inner.setblocking(False)
    outer.setblocking(False)
    if state.pending:
        outer.sendall(bytes(state.pending))  # a few bytes at most: the socketpair takes them
    task = asyncio.get_running_loop().create_task(relay(own, outer, state.ws))
    _relays.add(task)
    task.add_done_callback(_relays.discard)
    return inner


async def relay(net: socket.socket, local: socket.socket, ws: WSConnection) -> None:
    """Carry bytes both ways until either side ends; then close both."""
    loop = asyncio.get_running_loop()
    lock = asyncio.Lock()  # both directions write to ``net``: whole WebSocket frames only
    inbound = loop.create_task(_inbound(net, local, ws, lock))
    outbound = loop.create_task(_outbound(net, local, ws, lock))
    try:
        await asyncio.wait((inbound, outbound), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (inbound, outbound):
            task.cancel()
        for task in (inbound, outbound):
            with contextlib.suppress(BaseException):
                await task
        for s in (net, local):
            with contextlib.suppress(OSError):
                s.close()


async def _send(net: socket.socket, data: bytes, lock: asyncio.Lock) -> None:
    async with lock:
        await asyncio.get_running_loop().sock_sendall(net, data)


async def _inbound(net: socket.socket, local: socket.socket, ws: WSConnection,
                   lock: asyncio.Lock) -> None:
    """WebSocket messages from the peer -> bytes to vt; answers pings and the close."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            data = await loop.sock_recv(net, CHUNK)
        except OSError:
            return
        ws.receive_data(data or None)
        for event in ws.events():
            if isinstance(event, BytesMessage):
                await loop.sock_sendall(local, event.data)
            elif isinstance(event, Ping):
                await _send(net, ws.send(event.response()), lock)
            elif isinstance(event, (CloseConnection, TextMessage)):
                # Text has no place in the tunnel: end it as a protocol error.
                code = 1003 if isinstance(event, TextMessage) else event.code
                with contextlib.suppress(LocalProtocolError, OSError):
                    await _send(net, ws.send(CloseConnection(code=code)), lock)
                return
        if not data:
            return


async def _outbound(net: socket.socket, local: socket.socket, ws: WSConnection,
                    lock: asyncio.Lock) -> None:
    """Bytes from vt -> one binary message each; vt closing its end closes the WebSocket."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            data = await loop.sock_recv(local, CHUNK)
        except OSError:
            data = b""
        if not data:
            with contextlib.suppress(LocalProtocolError, OSError):
                await _send(net, ws.send(CloseConnection(code=1000)), lock)
            return
        await _send(net, ws.send(Message(data=data)), lock)
