"""The daemons' event loop (vtcore.runtime.loop): direct readers beside asyncio's own.

Real descriptors (pipes, socket pairs, UDP sockets on loopback), no root needed.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from vtcore.runtime import loop as loop_mod
from vtcore.runtime.loop import DataLoop


def run(coro_fn):
    return loop_mod.run(coro_fn())


def test_daemons_run_on_the_data_loop():
    async def which():
        return type(asyncio.get_running_loop())

    assert run(which) is DataLoop


def test_direct_reader_runs_inside_the_poll_before_the_iterations_callbacks():
    """The point of it: a readable descriptor's reader runs straight from the poll, ahead
    of the callbacks that poll schedules."""
    r, w = os.pipe()
    order: list[str] = []

    async def main():
        lp = asyncio.get_running_loop()
        got = asyncio.Event()

        def on_read():
            order.append(f"direct {os.read(r, 10)!r}")
            lp.call_soon(order.append, "soon")
            got.set()

        lp.add_direct_reader(r, on_read)
        os.write(w, b"x")
        await asyncio.wait_for(got.wait(), 2)
        await asyncio.sleep(0)
        assert lp.remove_direct_reader(r)
        assert not lp.remove_direct_reader(r)

    try:
        run(main)
    finally:
        os.close(r)
        os.close(w)
    assert order == ["direct b'x'", "soon"]


def test_direct_reader_and_asyncio_writer_share_a_descriptor():
    """Back-pressure: the tunnel reads its link directly and waits for writability
    through asyncio, on one socket.  Removing one leaves the other working."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    seen: list[str] = []

    async def main():
        lp = asyncio.get_running_loop()
        readable = asyncio.Event()
        writable = asyncio.Event()

        def on_read():
            seen.append(a.recv(100).decode())
            readable.set()

        lp.add_direct_reader(a.fileno(), on_read)
        lp.add_writer(a.fileno(), writable.set)
        await asyncio.wait_for(writable.wait(), 2)
        lp.remove_writer(a.fileno())
        b.send(b"one")
        await asyncio.wait_for(readable.wait(), 2)
        readable.clear()
        # The writer gone, the reader still runs; the reader gone, asyncio's reader runs.
        b.send(b"two")
        await asyncio.wait_for(readable.wait(), 2)
        lp.remove_direct_reader(a.fileno())
        fut = lp.create_future()
        lp.add_reader(a.fileno(), lambda: fut.done() or fut.set_result(a.recv(100)))
        b.send(b"three")
        assert await asyncio.wait_for(fut, 2) == b"three"
        lp.remove_reader(a.fileno())

    try:
        run(main)
    finally:
        a.close()
        b.close()
    assert seen == ["one", "two"]


def test_error_on_a_descriptor_wakes_its_direct_reader():
    """An ICMP port-unreachable on a connected UDP socket must reach the session's reader
    (libuv's loop stops polling after POLLERR, which is why vt is not on uvloop)."""
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nobody listens there now: the kernel answers with ICMP
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    s.connect(("127.0.0.1", port))

    async def main():
        lp = asyncio.get_running_loop()
        fut = lp.create_future()

        def on_read():
            try:
                s.recv(100)
            except OSError as exc:
                if not fut.done():
                    fut.set_result(exc)

        lp.add_direct_reader(s.fileno(), on_read)
        s.send(b"hello")
        return await asyncio.wait_for(fut, 2)

    try:
        exc = run(main)
    finally:
        s.close()
    assert isinstance(exc, ConnectionRefusedError)


def test_a_failing_direct_reader_is_reported_and_the_loop_goes_on():
    r, w = os.pipe()
    r2, w2 = os.pipe()
    reported: list[BaseException] = []

    async def main():
        lp = asyncio.get_running_loop()
        lp.set_exception_handler(lambda _lp, ctx: reported.append(ctx["exception"]))
        other = asyncio.Event()

        def broken():
            os.read(r, 10)
            raise RuntimeError("bug in one session")

        lp.add_direct_reader(r, broken)
        lp.add_direct_reader(r2, lambda: (os.read(r2, 10), other.set()))
        os.write(w, b"x")
        os.write(w2, b"y")
        await asyncio.wait_for(other.wait(), 2)
        await asyncio.sleep(0.01)
        lp.remove_direct_reader(r)
        lp.remove_direct_reader(r2)

    try:
        run(main)
    finally:
        for fd in (r, w, r2, w2):
            os.close(fd)
    assert [str(e) for e in reported] == ["bug in one session"]


def test_a_reader_removed_by_an_earlier_one_in_the_same_poll_is_not_called():
    """Two sessions ready in one wake-up; the first ends the second (server shutdown,
    say): the second's reader must not run on a descriptor it has let go of."""
    pipes = [os.pipe(), os.pipe()]
    calls: list[int] = []

    async def main():
        lp = asyncio.get_running_loop()

        def make(i):
            def reader():
                calls.append(i)
                os.read(pipes[i][0], 10)
                for j in (0, 1):
                    lp.remove_direct_reader(pipes[j][0])
            return reader

        for i in (0, 1):
            lp.add_direct_reader(pipes[i][0], make(i))
        for _, wfd in pipes:
            os.write(wfd, b"x")
        await asyncio.sleep(0.05)

    try:
        run(main)
    finally:
        for pair in pipes:
            for fd in pair:
                os.close(fd)
    assert len(calls) == 1


def test_a_descriptor_closed_without_removal_can_be_registered_again():
    """epoll forgets a closed descriptor by itself; the number, reused, registers anew."""

    async def main():
        lp = asyncio.get_running_loop()
        r, w = os.pipe()
        lp.add_direct_reader(r, lambda: None)
        os.close(r)
        os.close(w)
        lp.remove_direct_reader(r)  # after the close: no error
        r2, w2 = os.pipe()
        try:
            got = lp.create_future()
            lp.add_direct_reader(r2, lambda: got.done() or got.set_result(os.read(r2, 5)))
            os.write(w2, b"again")
            assert await asyncio.wait_for(got, 2) == b"again"
            lp.remove_direct_reader(r2)
        finally:
            os.close(r2)
            os.close(w2)

    run(main)


def test_one_direct_reader_per_descriptor():
    r, w = os.pipe()

    async def main():
        lp = asyncio.get_running_loop()
        lp.add_direct_reader(r, lambda: None)
        with pytest.raises(KeyError):
            lp.add_direct_reader(r, lambda: None)
        lp.remove_direct_reader(r)

    try:
        run(main)
    finally:
        os.close(r)
        os.close(w)


def test_asyncio_streams_and_timers_work_on_the_data_loop():
    """The control plane (handshakes on streams, keep-alive timers) is plain asyncio."""

    async def main():
        async def echo(reader, writer):
            writer.write(await reader.readline())
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping\n")
        line = await asyncio.wait_for(reader.readline(), 2)
        writer.close()
        server.close()
        await server.wait_closed()
        lp = asyncio.get_running_loop()
        t0 = lp.time()
        await asyncio.sleep(0.02)
        return line, lp.time() - t0

    line, slept = run(main)
    assert line == b"ping\n"
    assert 0.02 <= slept < 1.0


def test_plain_asyncio_loops_get_ordinary_readers():
    """Tools and tests that run a tunnel on another loop get asyncio readers."""
    r, w = os.pipe()

    async def main():
        lp = asyncio.get_running_loop()
        got = lp.create_future()
        loop_mod.add_reader(lp, r, lambda: got.done() or got.set_result(os.read(r, 3)))
        os.write(w, b"abc")
        data = await asyncio.wait_for(got, 2)
        loop_mod.remove_reader(lp, r)
        return data

    try:
        assert asyncio.run(main()) == b"abc"
    finally:
        os.close(r)
        os.close(w)


def test_work_a_direct_reader_hands_to_asyncio_runs_at_once():
    """Between packets the selector waits on by itself; whatever a reader schedules
    (a callback, a timer, a result) must end that wait, with no timer due to end it."""
    r, w = os.pipe()

    async def main():
        lp = asyncio.get_running_loop()
        soon = lp.create_future()
        later = lp.create_future()

        def reader():
            os.read(r, 10)
            lp.call_soon(lambda: soon.done() or soon.set_result(lp.time()))
            lp.call_later(0.05, lambda: later.done() or later.set_result(lp.time()))

        lp.add_direct_reader(r, reader)
        t0 = lp.time()
        os.write(w, b"x")
        # Waited on without wait_for: no timer of ours bounds the selector's wait.
        ran_soon = await soon
        ran_later = await later
        lp.remove_direct_reader(r)
        return ran_soon - t0, ran_later - t0

    try:
        soon_after, later_after = run_bounded(main, 5.0)
    finally:
        os.close(r)
        os.close(w)
    assert soon_after < 0.5
    assert 0.05 <= later_after < 0.5


def test_stop_from_a_direct_reader_ends_run_forever():
    r, w = os.pipe()
    lp = DataLoop()
    try:
        lp.add_direct_reader(r, lambda: (os.read(r, 10), lp.stop()))
        lp.call_later(5.0, lp.stop)  # the bound, were stop() not to end the wait
        os.write(w, b"x")
        t0 = time.monotonic()
        lp.run_forever()
        took = time.monotonic() - t0
        lp.remove_direct_reader(r)
    finally:
        lp.close()
        os.close(r)
        os.close(w)
    assert took < 1.0


def run_bounded(coro_fn, limit: float):
    """Run on a DataLoop with a watchdog thread that stops a hung loop after ``limit``."""
    box: dict = {}

    def target():
        box["result"] = run(coro_fn)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(limit)
    assert not t.is_alive(), f"the loop did not finish within {limit} s"
    return box["result"]


def test_a_signal_after_main_returned_does_not_kill_the_exiting_process() -> None:
    """A daemon's second SIGTERM (a master's, after it forwarded the first) may land after
    its loop is done: it must not kill the process with the default action (-15)."""
    code = (
        "import asyncio, os, signal, sys\n"
        "from vtcore.runtime import loop\n"
        "async def main():\n"
        "    done = asyncio.Event()\n"
        "    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, done.set)\n"
        "    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, done.set)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    await asyncio.wait_for(done.wait(), 5)\n"
        "    return 7\n"
        "rc = loop.run(main())\n"
        "os.kill(os.getpid(), signal.SIGTERM)  # late: the loop is closed\n"
        "os.kill(os.getpid(), signal.SIGHUP)\n"
        "sys.exit(rc)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30)
    assert res.returncode == 7, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr and "Exception ignored" not in res.stderr
