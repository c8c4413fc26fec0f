"""The pipe device: a socket pair, our end non-blocking, the other for up commands."""

from __future__ import annotations

import os
import select
import subprocess
import time

import pytest
from vt_devices import base
from vt_devices.pipe import PipeDevice, open_pipe_device
from vtdev_helpers import drain, read_peer

from vtcore.api import DeviceRequest


def test_both_directions_and_chunks() -> None:
    with open_pipe_device(DeviceRequest("pipe")) as dev:
        assert dev.name == "pipe" and dev.stream is True
        assert os.get_blocking(dev.fileno()) is False
        peer = dev.stdio_fd()
        assert peer is not None and os.get_blocking(peer) is True
        assert dev.read_packets(8) == []

        assert dev.write_packet(b"to the up command")
        assert read_peer(peer, 17) == b"to the up command"

        data = os.urandom(10_000)
        os.write(peer, data)
        assert drain(dev, len(data)) == data


def test_batch_write_is_the_contracts_one_write() -> None:
    with open_pipe_device(DeviceRequest("pipe")) as dev:
        assert dev.write_packets([b"one ", b"two ", b"three"]) == (0, 0)
        assert read_peer(dev.stdio_fd(), 13) == b"one two three"
        peer = os.dup(dev.stdio_fd())
        dev.release_stdio()
        os.close(peer)
        assert dev.write_packets([b"lost", b"too"]) == (2, 7)  # EPIPE: counted, no exception
        assert dev.dropped == 2


def test_requested_name_is_kept() -> None:
    with open_pipe_device(DeviceRequest("pipe", "mypipe")) as dev:
        assert dev.name == "mypipe"


def test_eof_after_release_and_peer_close() -> None:
    dev = PipeDevice()
    peer = os.dup(dev.stdio_fd())
    dev.release_stdio()
    assert dev.stdio_fd() is None
    os.write(peer, b"last words")
    os.close(peer)
    assert drain(dev, 10) == b"last words"
    with pytest.raises(EOFError):
        dev.read_packets(4)
    assert dev.write_packet(b"nobody there") is False  # EPIPE: dropped, no exception
    assert dev.dropped == 1
    dev.close()
    dev.close()


def test_up_command_echo_then_exit_ends_session() -> None:
    """As vtund runs its up commands: stdin and stdout are the other end."""
    with PipeDevice() as dev:
        proc = subprocess.Popen(["cat"], stdin=dev.stdio_fd(), stdout=dev.stdio_fd())
        try:
            dev.release_stdio()
            assert dev.write_packet(b"ping through cat")
            assert drain(dev, 16) == b"ping through cat"
        finally:
            proc.terminate()
            proc.wait(5)
        deadline = time.monotonic() + 3
        with pytest.raises(EOFError):
            while time.monotonic() < deadline:
                select.select([dev], [], [], 0.5)
                dev.read_packets(4)


def test_backlog_is_bounded_and_kept_in_order() -> None:
    with PipeDevice() as dev:
        peer = dev.stdio_fd()
        block = os.urandom(64 * 1024)
        sent = bytearray()
        # The peer does not read: the kernel fills, then our backlog, then we drop.
        for _ in range(64):
            if dev.write_packet(block):
                sent += block
            else:
                break
        assert dev.dropped == 1
        assert 0 < dev.pending <= base.MAX_PENDING
        assert len(sent) > base.MAX_PENDING
        # The peer catches up; flushing delivers everything accepted, in order.
        got = bytearray()
        deadline = time.monotonic() + 10
        while len(got) < len(sent) and time.monotonic() < deadline:
            dev.flush()
            r, _, _ = select.select([peer], [], [], 0.5)
            if r:
                got += os.read(peer, 1 << 16)
        assert dev.flush() is True and dev.pending == 0
        assert bytes(got) == bytes(sent)
