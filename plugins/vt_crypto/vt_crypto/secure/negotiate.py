"""Choosing between secure mode and vtund's legacy path, inside the vtun handshake.

A vt client always announces itself with an extra token on its host line
(``HOST: <name> vt2``; vtund's server ignores it).  The server answers ``OK VT2 <suite>``
instead of ``OK CHAL`` when it chooses secure mode.  Neither end falls back to the
legacy path for a host configured for secure mode.
"""

from __future__ import annotations

from vt_api import HOST_TOKEN

from vt_crypto.secure.errors import SecureHandshakeError
from vt_crypto.secure.suites import AUTO_WORD, SECURE_WORDS, SUITES, choose_suite
from vtcore.protocol.handshake import MESG_SIZE, pack_msg, unpack_msg

OFFER_PREFIX = "OK VT2 "


def offer_block(suite: str) -> bytes:
    """The 50-byte ``OK VT2 <suite>`` message the server sends instead of ``OK CHAL``."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}")
    return pack_msg(f"{OFFER_PREFIX}{suite}\n")


def parse_offer(block: bytes) -> str | None:
    """The suite of an ``OK VT2`` block, None for any other block.

    SecureHandshakeError when the block is an ``OK VT2`` with a suite we do not know
    (or not a 50-byte block at all).
    """
    if len(block) != MESG_SIZE:
        raise SecureHandshakeError(f"a handshake message is {MESG_SIZE} bytes")
    text = unpack_msg(block)
    if not text.startswith(OFFER_PREFIX):
        return None
    suite = text[len(OFFER_PREFIX) :].rstrip("\r\n")
    if suite not in SUITES:
        raise SecureHandshakeError("server offered an unknown secure-mode suite")
    return suite


def server_mode(
    host: str, extra: tuple[str, ...], host_known: bool, encrypt_word: str | None
) -> str | None:
    """Server, after ``HostAnnounced``: the suite to offer, or None for ``OK CHAL``.

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


def check_server_reply(block: bytes, host: str, require_secure: bool) -> str | None:
    """Client, the block after ``HOST:``: the offered suite, or None to go on with the
    legacy path (feed the block to ``ClientHandshake`` as usual).

    A client whose host is configured for secure mode (``require_secure``) refuses
    anything but ``OK VT2``: ``OK CHAL``, ``ERR`` or garbage raise SecureHandshakeError.
    """
    try:
        suite = parse_offer(block)
    except SecureHandshakeError:
        if require_secure:
            raise
        return None
    if suite is not None or not require_secure:
        return suite
    text = unpack_msg(block) if len(block) == MESG_SIZE else ""
    if text.startswith("OK CHAL"):
        why = f"server does not offer secure mode for host {host}"
    elif text.startswith("ERR"):
        why = (
            f"server refused host {host} before secure mode (not configured for it, "
            "overloaded, or the request was altered)"
        )
    else:
        why = f"unexpected server reply for host {host}"
    raise SecureHandshakeError(f"{why}; refusing to fall back (downgrade?)")
