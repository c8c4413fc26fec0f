"""Choosing between secure mode and vtund's legacy path, inside the vtun handshake.

A vt client always announces itself with an extra token on its host line
(``HOST: <name> vt2``; vtund's server ignores it).  The server answers ``OK VT3``
instead of ``OK CHAL`` when it chooses secure mode (``VT3``: the protocol version; vt
releases before CPace sent ``OK VT2 <suite>``, which this one refuses).  Neither end
falls back to the legacy path for a host configured for secure mode.

The offer is the same 50 bytes for every host, known or not, whatever its suite: the
suite travels in the sealed settings, so nothing before the key confirmation tells one
host name from another (the server's choice stays on the :class:`Offer` object).
"""

from __future__ import annotations

from vt_api import HOST_TOKEN, MESG_SIZE, pack_msg, unpack_msg

from vt_crypto.secure.errors import SecureHandshakeError
from vt_crypto.secure.suites import AUTO_WORD, SECURE_WORDS, SUITES, choose_suite

OFFER_TEXT = "OK VT3"
OLD_OFFER_PREFIXES = ("OK VT2 ",)
"""Offers of earlier secure-mode versions (SPAKE2): refused with a clear message."""


class Offer(bytes):
    """The offer block as sent (identical for every host), carrying the suite the server
    chose for this host to :meth:`ServerSecureHandshake`'s settings, never to the wire."""

    suite: str

    def __new__(cls, suite: str) -> Offer:
        if suite not in SUITES:
            raise ValueError(f"unknown suite {suite!r}")
        block = super().__new__(cls, pack_msg(OFFER_TEXT + "\n"))
        block.suite = suite
        return block


def offer_block() -> bytes:
    """The 50-byte ``OK VT3`` message the server sends instead of ``OK CHAL``."""
    return pack_msg(OFFER_TEXT + "\n")


def parse_offer(block: bytes) -> bool:
    """True for the ``OK VT3`` block, False for any other 50-byte block.

    SecureHandshakeError when the block is not 50 bytes.
    """
    if len(block) != MESG_SIZE:
        raise SecureHandshakeError(f"a handshake message is {MESG_SIZE} bytes")
    return unpack_msg(block).rstrip("\r\n") == OFFER_TEXT


def server_mode(
    host: str, extra: tuple[str, ...], host_known: bool, encrypt_word: str | None
) -> str | None:
    """Server, after ``HostAnnounced``: the suite for this host, or None for ``OK CHAL``.

    ``encrypt_word`` is the host's ``encrypt`` value as written (``aead``, ``aes256gcm``,
    ``blowfish128ecb``, ``yes`` ...) or None.  An unknown host announced by a vt client
    gets an offer too (the runtime then runs the PAKE with ``password=None``), so that it
    fails exactly like a wrong password.  A host configured for secure mode whose client
    did not announce ``vt2`` raises: send ``ERR`` and close, never fall back.
    """
    vt_client = HOST_TOKEN in extra
    if not host_known:
        return choose_suite(AUTO_WORD) if vt_client else None
    if encrypt_word in SECURE_WORDS:
        if not vt_client:
            raise SecureHandshakeError(
                f"client did not ask for secure mode for host {host}; "
                "refusing to fall back (downgrade?)"
            )
        return choose_suite(encrypt_word)
    return None


def check_server_reply(block: bytes, host: str, require_secure: bool) -> bool:
    """Client, the block after ``HOST:``: True for the secure offer, False to go on with
    the legacy path (feed the block to ``ClientHandshake`` as usual).

    A client whose host is configured for secure mode (``require_secure``) refuses
    anything but ``OK VT3``: ``OK CHAL``, ``ERR``, an older ``OK VT2`` or garbage raise
    SecureHandshakeError.
    """
    try:
        offered = parse_offer(block)
    except SecureHandshakeError:
        if require_secure:
            raise
        return False
    if offered or not require_secure:
        return offered
    text = unpack_msg(block) if len(block) == MESG_SIZE else ""
    if text.startswith("OK CHAL"):
        why = f"server does not offer secure mode for host {host}"
    elif text.startswith("ERR"):
        why = (
            f"server refused host {host} before secure mode (not configured for it, "
            "overloaded, or the request was altered)"
        )
    elif text.startswith(OLD_OFFER_PREFIXES):
        why = f"server speaks an older secure-mode protocol for host {host} (upgrade it)"
    else:
        why = f"unexpected server reply for host {host}"
    raise SecureHandshakeError(f"{why}; refusing to fall back (downgrade?)")
