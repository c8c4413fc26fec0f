"""vt's secure mode: a PAKE handshake over the shared ``passwd`` and AEAD-sealed frames.

Offered only between two vt ends for hosts configured ``encrypt aead``,
``encrypt chacha20poly1305`` or ``encrypt aes256gcm``; vtund peers keep the legacy path.
See docs/secure-mode.md for the protocol and what it protects against.
"""

from vt_crypto.secure.errors import AUTH_FAILED, SecureHandshakeError
from vt_crypto.secure.handshake import (
    ClientSecureHandshake,
    SecureEstablished,
    ServerSecureHandshake,
)
from vt_crypto.secure.keys import SessionKeys
from vt_crypto.secure.limiter import HandshakeLimiter, source_key
from vt_crypto.secure.negotiate import (
    HOST_TOKEN,
    check_server_reply,
    offer_block,
    parse_offer,
    server_mode,
)
from vt_crypto.secure.rekey import SessionCrypto
from vt_crypto.secure.seal import (
    FRAME_CLOSE,
    FRAME_DATA,
    FRAME_ECHO_REP,
    FRAME_ECHO_REQ,
    OVERHEAD,
    Opener,
    Sealer,
)
from vt_crypto.secure.settings import SecureSettings
from vt_crypto.secure.suites import SECURE_WORDS, SUITES, choose_suite, cpu_has_aes

__all__ = [
    "AUTH_FAILED",
    "FRAME_CLOSE",
    "FRAME_DATA",
    "FRAME_ECHO_REP",
    "FRAME_ECHO_REQ",
    "HOST_TOKEN",
    "OVERHEAD",
    "SECURE_WORDS",
    "SUITES",
    "ClientSecureHandshake",
    "HandshakeLimiter",
    "Opener",
    "Sealer",
    "SecureEstablished",
    "SecureHandshakeError",
    "SecureSettings",
    "ServerSecureHandshake",
    "SessionCrypto",
    "SessionKeys",
    "check_server_reply",
    "choose_suite",
    "cpu_has_aes",
    "offer_block",
    "parse_offer",
    "server_mode",
    "source_key",
]
