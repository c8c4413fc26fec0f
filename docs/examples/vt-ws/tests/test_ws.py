"""The upgrade (sans I/O) and the relay (over real socket pairs): what ``proto ws`` does
to a connection before vt's handshake runs inside it."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from vt_ws import plugin
from vt_ws.relay import Upgrade, wrap


def exchange(client: Upgrade, server: Upgrade) -> None:
    for _ in range(4):  # request, response: two rounds at most
        out = client.data_to_send()
        if out:
            server.receive_data(out)
        back = server.data_to_send()
        if back:
            client.receive_data(back)


def test_upgrade_names_the_path_and_completes() -> None:
    client, server = Upgrade("client", "example.org", "/tunnel"), Upgrade("server")
    request = client.data_to_send()
    assert request.startswith(b"GET /tunnel HTTP/1.1\r\n") and b"Upgrade: websocket" in request
    assert request.startswith(plugin.GREETING)
    server.receive_data(request)
    assert server.done and server.target == "/tunnel"
    response = server.data_to_send()
    assert response.startswith(b"HTTP/1.1 101")
    client.receive_data(response)
    assert client.done and not client.pending


def test_a_vtun_greeting_or_an_http_error_is_refused_in_one_line() -> None:
    client = Upgrade("client", "srv")
    client.data_to_send()
    with pytest.raises(ConnectionError, match=r"vtun's greeting, not a WebSocket upgrade"):
        client.receive_data(b"VTUN server ver 3.X 05/14/2022\n" + b"\0" * 18)
    client = Upgrade("client", "srv")
    client.data_to_send()
    with pytest.raises(ConnectionError, match=r"upgrade refused: HTTP 404"):
        client.receive_data(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(ConnectionError, match=r"connection closed during the WebSocket"):
        Upgrade("server").receive_data(b"")


def test_the_server_refuses_a_request_that_is_not_http() -> None:
    with pytest.raises(ConnectionError, match=r"bad WebSocket upgrade"):
        Upgrade("server").receive_data(b"\x00\x01garbage\r\n\r\n")


async def _pair(path: str = "/"):
    """Two wrapped ends over one real connection: (client's inner, server's inner)."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return await asyncio.gather(wrap(a, "client", {"server": "t", "ws_path": path}, 5),
                                wrap(b, "server", {}, 5))


async def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    loop = asyncio.get_running_loop()
    out = bytearray()
    while len(out) < n:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, n - len(out)), 10)
        assert chunk, "closed early"
        out += chunk
    return bytes(out)


def test_the_relay_carries_bytes_both_ways_unchanged_and_ends_together() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        cli, srv = await _pair("/tunnel")
        up, down = os.urandom(1 << 20), os.urandom(300 << 10)
        send = loop.create_task(loop.sock_sendall(cli, up))
        send2 = loop.create_task(loop.sock_sendall(srv, down))
        got_up, got_down = await asyncio.gather(_recv_exactly(srv, len(up)),
                                                _recv_exactly(cli, len(down)))
        await asyncio.gather(send, send2)
        assert got_up == up and got_down == down
        cli.close()  # vt ends its session: the WebSocket closes, the server's end sees EOF
        assert await asyncio.wait_for(loop.sock_recv(srv, 10), 5) == b""
        srv.close()

    asyncio.run(main())


def test_the_plugin_registers_the_wrapping_transport_and_the_keyword() -> None:
    from vt_api import Registry

    registry = Registry()
    plugin.vt_register_transports(registry)
    plugin.vt_register_frame_modules(registry)
    ws = registry.transports["ws"]
    assert (ws.flag, ws.greets_with) == ("W", b"GET ") and ws.wrap is not None
    assert registry.answers("ws_path", "/tunnel")


@pytest.mark.parametrize("path", ["tunnel", "/a b", "/x\r\nHost: evil"])
def test_a_bad_ws_path_is_refused_before_anything_is_sent(path: str) -> None:
    async def main() -> None:
        a, b = socket.socketpair()
        with a, b:
            with pytest.raises(ValueError, match=r"ws_path must be an absolute request path"):
                await wrap(a, "client", {"ws_path": path}, 1)
            b.setblocking(False)
            with pytest.raises(BlockingIOError):
                b.recv(1)

    asyncio.run(main())
