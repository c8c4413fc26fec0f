"""Registers the four device backends vtund knows: tun, ether (tap), tty (pty) and pipe.

Written on the plugin contract alone (:mod:`vt_api`, a leaf distribution): vt-devices
does not import vtcore, which depends on it.
"""

from __future__ import annotations

from vt_api import DeviceBackendType, Registry, hookimpl

from vt_devices.base import adopt_stream
from vt_devices.pipe import open_pipe_device
from vt_devices.pty import open_pty_device
from vt_devices.tun import adopt, open_tap_device, open_tun_device

BACKENDS = (
    DeviceBackendType("tun", "tun", "u", open_tun_device, "tun: raw IP packets (/dev/net/tun)",
                      adopt=adopt, runs=True),
    DeviceBackendType("tap", "ether", "e", open_tap_device,
                      "tap: raw Ethernet frames (/dev/net/tun)", adopt=adopt, runs=True),
    DeviceBackendType("pty", "tty", "t", open_pty_device,
                      "pty: byte stream on a pseudo tty (pppd, slip)", adopt=adopt_stream),
    DeviceBackendType("pipe", "pipe", "p", open_pipe_device, "pipe: byte stream on a socket pair",
                      adopt=adopt_stream),
)


@hookimpl
def vt_register_devices(registry: Registry) -> None:
    for backend in BACKENDS:
        registry.add_device(backend)
