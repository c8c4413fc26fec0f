"""The hookspecs, re-exported from :mod:`vt_api.hookspecs` for existing imports."""

from vt_api.hookspecs import (  # noqa: F401
    PROJECT,
    hookimpl,
    hookspec,
    vt_register_commands,
    vt_register_devices,
    vt_register_frame_modules,
    vt_register_secure_modes,
    vt_register_transports,
)
