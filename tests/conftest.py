"""Shared test set-up: skip-or-fail guards for netns/vtund tests, applied by marker.

``@pytest.mark.netns`` / ``@pytest.mark.vtund`` on a test is enough: the guard runs before it.
Without root/netns (or without /usr/sbin/vtund) the test is skipped, unless
``VT_REQUIRE_NETNS=1`` (set by CI), which turns the skip into a failure.
The helpers themselves live in ``netns.py`` and ``peers.py`` (importable from tests as
``from netns import two_hosts`` etc., since this directory is on ``sys.path``).
"""

from __future__ import annotations

import os
import sys

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:  # already there under pytest's default "prepend" import mode
    sys.path.insert(0, _HERE)

from netns import requires_netns  # noqa: E402
from peers import requires_vtund  # noqa: E402

__all__ = ["requires_netns", "requires_vtund"]


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("netns") is not None:
        requires_netns()
    if item.get_closest_marker("vtund") is not None:
        requires_vtund()


@pytest.fixture
def netns_ok() -> None:
    """Fixture form of :func:`requires_netns`."""
    requires_netns()


@pytest.fixture
def vtund_ok() -> None:
    """Fixture form of :func:`requires_vtund`."""
    requires_vtund()
