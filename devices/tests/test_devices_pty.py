"""The tty device: a pty pair; we hold the master, up commands get the slave."""

from __future__ import annotations

import os
import select
import stat
import subprocess
import termios
import time

import pytest
from vt_devices import base
from vt_devices.pty import PtyDevice, open_pty_device
from vtdev_helpers import drain, read_peer

from vtcore.api import DeviceRequest


def test_names_slave_and_is_raw() -> None:
    with open_pty_device(DeviceRequest("tty", "ignored")) as dev:
        assert dev.name.startswith("/dev/pts/")
        assert stat.S_ISCHR(os.stat(dev.name).st_mode)
        assert dev.stream is True
        assert os.get_blocking(dev.fileno()) is False
        slave = dev.stdio_fd()
        assert os.ttyname(slave) == dev.name
        lflag = termios.tcgetattr(slave)[3]
        assert not lflag & (termios.ECHO | termios.ICANON | termios.ISIG)


def test_binary_transparent_both_ways_without_echo() -> None:
    with PtyDevice() as dev:
        slave = dev.stdio_fd()
        every_byte = bytes(range(256)) * 3  # ^C, ^D, CR, LF... all pass untouched
        assert dev.write_packet(every_byte)
        assert read_peer(slave, len(every_byte)) == every_byte
        time.sleep(0.05)
        assert dev.read_packets(8) == []  # raw: nothing echoed back into the tunnel

        data = os.urandom(6000)
        os.write(slave, data)
        assert drain(dev, len(data)) == data


def test_up_command_exit_ends_session_after_release() -> None:
    with PtyDevice() as dev:
        proc = subprocess.Popen(["cat"], stdin=dev.stdio_fd(), stdout=dev.stdio_fd())
        try:
            dev.release_stdio()
            assert dev.stdio_fd() is None
            assert dev.write_packet(b"through the pty")
            assert drain(dev, 15) == b"through the pty"
        finally:
            proc.terminate()
            proc.wait(5)
        # Last slave holder gone: the master reads EIO, reported as EOF.
        deadline = time.monotonic() + 3
        with pytest.raises(EOFError, match="/dev/pts/"):
            while time.monotonic() < deadline:
                select.select([dev], [], [], 0.5)
                dev.read_packets(4)


def test_holding_the_slave_keeps_the_session() -> None:
    with PtyDevice() as dev:
        other = os.open(dev.name, os.O_RDWR | os.O_NOCTTY)
        os.close(other)  # someone else opened and closed it; we still hold a copy
        assert dev.read_packets(4) == []


def test_close_releases_both_fds() -> None:
    dev = PtyDevice()
    master, slave = dev.fileno(), dev.stdio_fd()
    dev.close()
    for fd in (master, slave):
        with pytest.raises(OSError):
            os.fstat(fd)
    assert base.STREAM_CHUNK == 2048
