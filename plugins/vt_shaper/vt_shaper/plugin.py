"""Registers the shaper as a pacer: answers ``speed`` (vtund flag ``S<n>``), paces what
this side sends."""

from __future__ import annotations

from vt_api import LinkSettings, PacerType, Registry, hookimpl

from vt_shaper.bucket import Shaper


def create(settings: LinkSettings) -> Shaper | None:
    """A shaper when this side has an outgoing limit, else None."""
    if settings.speed_out <= 0:
        return None
    return Shaper(settings.speed_out)


SHAPER = PacerType(name="shaper", keyword="speed", create=create,
                   describe="speed N | IN:OUT kbit/s (IN: to the client, OUT: from it)")


@hookimpl
def vt_register_pacers(registry: Registry) -> None:
    registry.add_pacer(SHAPER)
