"""Hook implementation: the ``zstd`` frame module answering ``compress zstd:1-19``.

Found by vt through the entry point ``zstd = "vt_zstd.plugin"`` in the group
``vt.plugins`` (see pyproject.toml).
"""

from __future__ import annotations

from vt_api import FrameModuleType, LinkSettings, Registry, Stage, hookimpl

from vt_zstd.module import DEFAULT_MAX_FRAME, ZstdModule

WORD = "zstd"
LEVELS = (1, 19)
STAGE = Stage.COMPRESS + 2
"""Next to zlib (100) and lzo (101): a session uses one compressor."""


def max_frame(settings: LinkSettings) -> int:
    """The decoded-frame limit: the session's ``max_frame`` when the core sets one."""
    return settings.max_frame or DEFAULT_MAX_FRAME


def create(settings: LinkSettings) -> ZstdModule | None:
    """A module for sessions that agreed on zstd, else None."""
    if settings.compress is None or settings.compress[0] != WORD:
        return None
    level = min(max(settings.compress[1], LEVELS[0]), LEVELS[1])
    return ZstdModule(level, max_frame(settings))


@hookimpl
def vt_register_frame_modules(registry: Registry) -> None:
    registry.add_frame_module(
        FrameModuleType(
            name=WORD,
            stage=STAGE,
            keyword="compress",
            words={WORD: 0},  # no vtund code: vt agrees on it by name, vt to vt only
            create=create,
            describe="compress zstd:1-19 (vt to vt only)",
            levels=LEVELS,
        )
    )
