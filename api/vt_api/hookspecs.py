"""The contract between vt's core and its plugins.

Every hook runs once, at set-up, in the process that will carry tunnels.  None runs
per packet: hooks *register* plain objects (see :mod:`vt_api`) and the data path
calls those directly.  Each hook receives a registry and adds to it (the tox 4
pattern); the registry rejects duplicate names.  Return values are ignored.

A plugin implements any subset of these with ``@hookimpl`` (``pluggy.HookimplMarker("vt")``,
also importable as :data:`vt_api.hookimpl` and :data:`vtcore.hookimpl`) and is found
through an entry point in the group ``vt.plugins``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from vt_api import Registry

PROJECT = "vt"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# ---------------------------------------------------------------------------
# Data path building blocks
# ---------------------------------------------------------------------------


@hookspec
def vt_register_devices(registry: Registry) -> None:
    """Add device backends with ``registry.add_device(DeviceBackendType(...))``.

    Called once at start-up.  One backend per ``type`` keyword (tun, ether, tty, pipe).
    """


@hookspec
def vt_register_transports(registry: Registry) -> None:
    """Add transports with ``registry.add_transport(TransportType(...))``.

    Called once at start-up.  The ``flag`` letter is the one carried in ``OK FLAGS``.
    """


@hookspec
def vt_register_frame_modules(registry: Registry) -> None:
    """Add frame modules with ``registry.add_frame_module(FrameModuleType(...))``.

    Called once at start-up.  The record names the configuration keyword and words the
    module answers to, its stage in the chain, and a factory called once per session.
    The linker orders modules by ``stage``, never by registration order.
    """


@hookspec
def vt_register_secure_modes(registry: Registry) -> None:
    """Add handshake extensions with ``registry.add_secure_mode(...)`` (see
    :class:`vt_api.SecureMode`): modes that replace vtund's challenge/response and
    framing between two vt ends, selected by ``encrypt`` words.

    Called once at start-up.
    """


@hookspec
def vt_register_pacers(registry: Registry) -> None:
    """Add pacers with ``registry.add_pacer(PacerType(...))``: what limits the send rate
    (the shaper, answering ``speed``).  A pacer sees no frame; after each batch goes out
    the linker asks it how long to pause.

    Called once at start-up.
    """


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


@hookspec
def vt_register_commands(cli: click.Group) -> None:
    """Add sub-commands to the ``vt`` command line with ``cli.add_command(...)``.

    Called once when the CLI is built, before arguments are parsed.
    """
