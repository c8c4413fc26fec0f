"""Registers the shaper: answers ``speed`` (vtund flag ``S<n>``), paces outgoing frames."""

from __future__ import annotations

from vt_api import FrameModuleType, LinkSettings, Registry, Stage, hookimpl

from vt_shaper.bucket import Shaper


def create(settings: LinkSettings) -> Shaper | None:
    """A shaper when this side has an outgoing limit, else None."""
    if settings.speed_out <= 0:
        return None
    return Shaper(settings.speed_out)


@hookimpl
def vt_register_frame_modules(registry: Registry) -> None:
    registry.add_frame_module(
        FrameModuleType(
            name="shaper",
            stage=Stage.SHAPE,
            keyword="speed",
            words={},
            create=create,
            describe="speed N | IN:OUT kbit/s",
        )
    )
