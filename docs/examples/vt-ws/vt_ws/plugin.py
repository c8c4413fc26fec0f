"""Hook implementations: the ``ws`` transport answering ``proto ws;`` and the
``ws_path "/PATH";`` host keyword.

Found by vt through the entry point ``ws = "vt_ws.plugin"`` in the group ``vt.plugins``.
"""

from __future__ import annotations

import socket

from vt_api import (
    FrameModuleType,
    Link,
    LinkSettings,
    Registry,
    Stage,
    TransportType,
    hookimpl,
)

from vt_ws.relay import wrap

NAME = "ws"
FLAG = "W"
GREETING = b"GET "
"""An HTTP Upgrade starts with it; a vtun client sends nothing before the server's greeting."""


async def _never_opened(sock: socket.socket, settings: LinkSettings, timeout: float,
                        nat_hack: bool) -> Link:
    """A wrapping transport's frames use vt's tcp link (contract 1.1): never called."""
    raise RuntimeError("proto ws has no link of its own")


def _no_module(settings: LinkSettings) -> None:
    """``ws_path`` only configures the wrapper: it adds no frame module."""
    return None


@hookimpl
def vt_register_transports(registry: Registry) -> None:
    registry.add_transport(TransportType(
        NAME, FLAG, _never_opened, "the tcp tunnel inside a WebSocket (vt to vt only)",
        wrap=wrap, greets_with=GREETING))


@hookimpl
def vt_register_frame_modules(registry: Registry) -> None:
    registry.add_frame_module(FrameModuleType(
        name="ws_path", stage=Stage.SHAPE, keyword="ws_path", words={}, create=_no_module,
        describe='ws_path "/PATH" (the WebSocket request path, for a reverse proxy)'))
