"""Registers the four device backends vtund knows: tun, ether (tap), tty (pty) and pipe.

Uses pluggy's marker directly rather than ``vtcore.hookimpl``: vtcore depends on this
distribution, so importing it here would make a cycle.  The records are
:class:`vt_devices.base.Backend`, duck-typed to ``vtcore.api.DeviceBackendType``.
"""

from __future__ import annotations

from typing import Any

import pluggy

from vt_devices.base import Backend
from vt_devices.pipe import open_pipe_device
from vt_devices.pty import open_pty_device
from vt_devices.tun import open_tap_device, open_tun_device

hookimpl = pluggy.HookimplMarker("vt")

BACKENDS = (
    Backend("tun", "tun", "u", open_tun_device, "tun: raw IP packets (/dev/net/tun)"),
    Backend("tap", "ether", "e", open_tap_device, "tap: raw Ethernet frames (/dev/net/tun)"),
    Backend("pty", "tty", "t", open_pty_device, "pty: byte stream on a pseudo tty (pppd, slip)"),
    Backend("pipe", "pipe", "p", open_pipe_device, "pipe: byte stream on a socket pair"),
)


@hookimpl
def vt_register_devices(registry: Any) -> None:
    for backend in BACKENDS:
        registry.add_device(backend)
