"""The vtun 3 protocol as pure state machines: bytes in, events and bytes out, no I/O.

Modules: :mod:`.challenge` (challenge/response), :mod:`.flags` (``OK FLAGS`` string),
:mod:`.handshake` (server and client handshakes), :mod:`.frames` (frame codec),
:mod:`.keepalive` (keep-alive timer), :mod:`.udp` (UDP port exchange).  Bad peer input
raises :class:`ProtocolError` and nothing else.
"""

from vtcore.protocol.errors import ProtocolError

__all__ = ["ProtocolError"]
