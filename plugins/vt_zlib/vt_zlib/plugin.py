"""Registers the zlib frame module: answers ``compress zlib:N`` (vtund flag ``C<n>``)."""

from __future__ import annotations

from vt_api import FrameModuleType, LinkSettings, Registry, Stage, hookimpl

from vt_zlib.codec import DEFAULT_MAX_FRAME, ZlibModule


def max_frame(settings: LinkSettings) -> int:
    """The decoded-frame limit: the session's ``max_frame`` when the core sets one."""
    return settings.max_frame or DEFAULT_MAX_FRAME


def create(settings: LinkSettings) -> ZlibModule | None:
    """A module for sessions that settled on zlib, else None."""
    if settings.compress is None or settings.compress[0] != "zlib":
        return None
    return ZlibModule(settings.compress[1], max_frame(settings),
                      native=settings.native)


@hookimpl
def vt_register_frame_modules(registry: Registry) -> None:
    registry.add_frame_module(
        FrameModuleType(
            name="zlib",
            stage=Stage.COMPRESS,
            keyword="compress",
            words={"zlib": 1},
            create=create,
            describe="compress zlib:1-9",
            levels=(1, 9),
        )
    )
