"""Small socket helpers for the handshake phase: every read bounded in size and time."""

from __future__ import annotations

import asyncio
import socket

from vtcore.protocol.handshake import MESG_SIZE as MSG_SIZE


async def recv_some(sock: socket.socket, timeout: float, limit: int = MSG_SIZE) -> bytes:
    """Read at most ``limit`` bytes, waiting at most ``timeout`` seconds.

    Raises ``TimeoutError`` on silence and ``EOFError`` when the peer closed."""
    loop = asyncio.get_running_loop()
    data = await asyncio.wait_for(loop.sock_recv(sock, limit), timeout)
    if not data:
        raise EOFError("connection closed during the handshake")
    return data


async def send_all(sock: socket.socket, data: bytes, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    await asyncio.wait_for(loop.sock_sendall(sock, data), timeout)


def peer_name(addr) -> str:
    """``ip:port`` (``[ip]:port`` for IPv6) for logs."""
    if isinstance(addr, tuple) and len(addr) >= 2:
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(addr or "stdin")
