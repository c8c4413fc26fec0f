"""The Python relays of bench/floor.py: ``floor_relay.py MODE PORT_IN PORT_OUT PORT_ECHO``.

The same UDP relay as ``floor/relay.c``, three ways: ``epoll`` (a bare ``select.epoll``
loop, the least a Python program can run per packet), ``asyncio`` (``loop.add_reader``,
how vt's data path ran before its DataLoop) and ``dataloop`` (vt's loop, a direct reader).
"""

from __future__ import annotations

import asyncio
import select
import socket
import sys


def bound(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", port))
    s.setblocking(False)
    return s


def main() -> None:
    mode = sys.argv[1]
    port_in, port_out, port_echo = (int(a) for a in sys.argv[2:5])
    inbound, outbound = bound(port_in), bound(port_out)
    outbound.connect(("127.0.0.1", port_echo))
    pinger: list = [None]

    def on_in() -> None:
        data, pinger[0] = inbound.recvfrom(2048)
        outbound.send(data)

    def on_out() -> None:
        data = outbound.recv(2048)
        if pinger[0] is not None:
            inbound.sendto(data, pinger[0])

    print("ready", flush=True)
    if mode == "epoll":
        ep = select.epoll()
        ep.register(inbound.fileno(), select.EPOLLIN)
        ep.register(outbound.fileno(), select.EPOLLIN)
        handlers = {inbound.fileno(): on_in, outbound.fileno(): on_out}
        while True:
            for fd, _ in ep.poll():
                handlers[fd]()

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        if mode == "dataloop":
            loop.add_direct_reader(inbound.fileno(), on_in)
            loop.add_direct_reader(outbound.fileno(), on_out)
        else:
            loop.add_reader(inbound.fileno(), on_in)
            loop.add_reader(outbound.fileno(), on_out)
        await asyncio.Event().wait()

    if mode == "dataloop":
        from vtcore.runtime.loop import run

        run(serve())
    elif mode == "asyncio":
        asyncio.run(serve())
    else:
        sys.exit(f"floor_relay: unknown mode {mode!r}")


if __name__ == "__main__":
    main()
