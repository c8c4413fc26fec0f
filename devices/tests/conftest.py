"""Fixtures for the device tests: a throw-away network namespace, and the netns gate.

Tests marked ``netns`` need root, ``/dev/net/tun`` and ``ip``; without them they are
skipped, or fail when ``VT_REQUIRE_NETNS=1`` (CI that must prove them).
"""

from __future__ import annotations

import ctypes
import itertools
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

CLONE_NEWNET = 0x40000000
_counter = itertools.count()


def vt_require_netns() -> None:
    """Skip (or fail under ``VT_REQUIRE_NETNS=1``) unless namespaces and tun are usable."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root")
    if not os.path.exists("/dev/net/tun"):
        missing.append("/dev/net/tun")
    if shutil.which("ip") is None:
        missing.append("the ip command")
    if not missing:
        return
    why = "needs " + ", ".join(missing)
    if os.environ.get("VT_REQUIRE_NETNS") == "1":
        pytest.fail(f"VT_REQUIRE_NETNS=1 but this test {why}")
    pytest.skip(why)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("netns") is not None:
        vt_require_netns()


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class NetNS:
    """A network namespace this test run created (``vtdev-<pid>-<n>``)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``ip -n <ns> ARGS``."""
        return subprocess.run(
            ["ip", "-n", self.name, *args], capture_output=True, text=True, check=check, timeout=10
        )

    def link(self, dev: str) -> dict | None:
        """``ip -j link show dev`` inside the namespace, or None if there is no such device."""
        res = self.ip("-j", "-d", "link", "show", "dev", dev, check=False)
        if res.returncode != 0:
            return None
        return json.loads(res.stdout)[0]

    @contextmanager
    def entered(self) -> Iterator[None]:
        """Run the body with this thread in the namespace (devices opened here live in it)."""
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        target = os.open(f"/run/netns/{self.name}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(home)
        finally:
            os.close(target)
            os.close(home)


@pytest.fixture
def netns() -> Iterator[NetNS]:
    """A fresh, empty network namespace, deleted afterwards (with all its devices)."""
    vt_require_netns()
    name = f"vtdev-{os.getpid()}-{next(_counter)}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        yield NetNS(name)
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=10)
