"""How ``vt run`` opens its connection (vtcore.runtime.client), on loopback only."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path

from vtcore.config import load_config
from vtcore.runtime.client import Client

CONF = """options { port 5000; timeout 5; }
conn { passwd secret; }
"""


def _client(tmp_path: Path, server: str, port: int) -> Client:
    path = tmp_path / "vtund.conf"
    path.write_text(CONF)
    client = Client(load_config(str(path)), "conn", server, plugins=None)
    client.o.port = port
    return client


def test_an_address_connects_without_a_resolver_thread(tmp_path) -> None:
    addr = "127.0.0.1"
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((addr, 0))
    listener.listen(1)
    client = _client(tmp_path, addr, listener.getsockname()[1])

    async def connect() -> tuple[socket.socket, int]:
        before = threading.active_count()
        sock = await client._open_socket()
        return sock, threading.active_count() - before

    try:
        sock, new_threads = asyncio.run(connect())
        peer, _ = listener.accept()
        assert sock.getpeername()[:2] == peer.getsockname()[:2]
        assert new_threads == 0, "a numeric server address must not start the resolver pool"
        sock.close()
        peer.close()
    finally:
        listener.close()
