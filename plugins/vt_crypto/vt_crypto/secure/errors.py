"""The one exception of secure mode's handshake and negotiation."""

from __future__ import annotations

from vt_api import HandshakeRefused


class SecureHandshakeError(HandshakeRefused):
    """The secure handshake or its negotiation failed.

    The message is one line, safe to log and to show on both ends: it never contains a
    password, key, nonce or transcript.  Wrong password and unknown host give the same
    text, :data:`AUTH_FAILED`, so that a peer cannot tell them apart.
    """


AUTH_FAILED = "authentication failed"
