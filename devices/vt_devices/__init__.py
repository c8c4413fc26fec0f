"""vt device backends: tun, tap (ether), pty (tty) and pipe.

Independent of :mod:`vtcore` (which depends on this distribution); see
:mod:`vt_devices.plugin` for the registration.
"""

from vt_devices.base import DeviceError
from vt_devices.pipe import PipeDevice
from vt_devices.pty import PtyDevice
from vt_devices.tun import TunDevice, TunOpen, open_tun

__all__ = [
    "DeviceError",
    "PipeDevice",
    "PtyDevice",
    "TunDevice",
    "TunOpen",
    "open_tun",
]
