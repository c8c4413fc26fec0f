"""Registers the LZO frame module: answers ``compress lzo:N`` (vtund flag ``L<n>``)."""

from __future__ import annotations

from vt_api import FrameModuleType, LinkSettings, Registry, Stage, hookimpl

from vt_lzo.codec import DEFAULT_MAX_FRAME, LzoModule

STAGE = Stage.COMPRESS + 1
"""Just after zlib on the way out (vtund stacks zlib, then lzo, should both be on)."""


def max_frame(settings: LinkSettings) -> int:
    """The decoded-frame limit: the session's ``max_frame`` when the core sets one."""
    return settings.max_frame or DEFAULT_MAX_FRAME


def create(settings: LinkSettings) -> LzoModule | None:
    """A module for sessions that settled on LZO, else None."""
    if settings.compress is None or settings.compress[0] != "lzo":
        return None
    return LzoModule(settings.compress[1], max_frame(settings),
                     native=settings.native)


@hookimpl
def vt_register_frame_modules(registry: Registry) -> None:
    registry.add_frame_module(
        FrameModuleType(
            name="lzo",
            stage=STAGE,
            keyword="compress",
            words={"lzo": 2},
            create=create,
            describe="compress lzo:1-9",
            levels=(1, 9),
        )
    )
