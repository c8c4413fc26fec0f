"""Registers vtund's ciphers as the ``encrypt`` frame module.

Secure mode (AEAD: ``encrypt aead|chacha20poly1305|aes256gcm``) is registered separately,
as a secure mode (``vt_register_secure_modes``): it replaces the handshake and framing.
"""

from __future__ import annotations

import structlog
from vt_api import FrameModule, FrameModuleType, LinkSettings, Registry, Stage, hookimpl

from vt_crypto.ciphers import CIPHERS, MAX_FRAME, WORDS
from vt_crypto.factory import make_codec

log = structlog.get_logger()


def create(settings: LinkSettings) -> FrameModule | None:
    """The session's cipher module, or ``None`` when ``encrypt`` is off (None or 0)."""
    if not settings.encrypt:
        return None
    # Native framing (vt <-> vt) lifts vtund's 4095-byte frame limit.
    max_frame = max(MAX_FRAME, settings.max_frame or 0)
    codec = make_codec(settings.encrypt, settings.password, max_frame=max_frame)
    log.info(
        "cipher initialized",
        host=settings.host,
        role=settings.role,
        cipher=codec.spec.name,
        code=settings.encrypt,
    )
    return codec


CRYPTO = FrameModuleType(
    name="crypto",
    stage=Stage.ENCRYPT,
    keyword="encrypt",
    words=WORDS,
    create=create,
    describe="encrypt yes|" + "|".join(spec.name for spec in CIPHERS.values()),
)


@hookimpl
def vt_register_frame_modules(registry: Registry) -> None:
    registry.add_frame_module(CRYPTO)


@hookimpl
def vt_register_secure_modes(registry: Registry) -> None:
    from vt_crypto.secure.mode import MODE

    registry.add_secure_mode(MODE)
