"""Negotiating vt-native features between two vt ends, never with vtund.

A vt client announces itself with an extra token on its HOST line (``HOST: name vt2``);
vtund's server ignores extra tokens.  A vt server that saw it, for a host with
``vtmode yes`` (the default), appends ``F<features>`` to ``OK FLAGS``; vtund's client
would reject that letter, which is why it is only sent to a client that announced
itself.  Features:

``n``  native framing on TCP: 4-byte headers, frames up to 128 KiB
       (:mod:`vtcore.protocol.native`);
``o``  tun/tap opened with ``IFF_VNET_HDR`` and offloads on both ends: frames carry
       whole GSO super-packets (up to 64 KiB), segmented by the receiving kernel.
``m``  over UDP: modules may use their native formats (the framing stays one datagram
       per frame); ``n`` implies it.  Plugins see both as ``LinkSettings.native``.
``g``  over UDP, tun/tap: both devices read TCP super-packets (offloads on) and cut them
       into packets in user space (``vt_devices.gso``); the TCP/UDP checksums they carry
       are left to the receiving kernel (``NEEDS_CSUM``).  Granted only to a client that
       offered it with the HOST token ``gso``: a vt client from before it would ignore an
       unknown letter and take packets it cannot write (checksums not complete), so it
       is never told.  An old server ignores the token and grants no ``g``.
``r``  with ``g``: a super-packet goes as marked segments, which the receiver joins
       without parsing each (``DeviceRequest.runs``, ``vt_devices.runs``).  Granted only
       to a client that offered the HOST token ``runs`` (its tun and tap backends take
       them), by a server whose own backend for the host's type does; otherwise ``g``
       alone, real packets.

``vtmode no;`` in a host section turns all of it off (vtun framing, one packet per
frame, exactly what vtund would send) -- for trouble-shooting and measurement.
A man in the middle who strips the token or the ``F`` letter only costs speed; the
secure mode (vt-crypto) authenticates its own negotiation.

Plugin compressors (any ``compress WORD`` but vtund's zlib and lzo) have no letter in
``OK FLAGS``, so they are agreed by name: a vt client offers the ones it has installed in
one more HOST token (``HOST: name vt2 c=zstd,br``); a server whose host wants one confirms
it after the letters (``F<letters>+zstd:19``), or, when the peer did not offer it (vtund,
or vt without the plugin), refuses before the session: a tunnel compressed on one side
only would carry garbage.  A client configured for a plugin compressor that the server
does not confirm (vtund never does) stops with a clear error for the same reason.
"""

from __future__ import annotations

from typing import TypedDict

from vt_api import HOST_TOKEN
from vt_api.wire import MAX_TEXT

from vtcore.protocol.native import MAX_NATIVE_FRAME

__all__ = [
    "GSO_TOKEN", "HOST_TOKEN", "RUNS_TOKEN", "takes_runs", "compressor_offer", "host_tokens", "confirmation_error", "confirmed_compressor",
    "feature_settings", "legacy_cipher", "plugin_compressor", "refusal", "server_features",
]
NATIVE_FRAMING = "n"
OFFLOAD = "o"
MODULE_FORMATS = "m"
SEGMENTS = "g"
SEGMENT_RUNS = "r"
GSO_TOKEN = "gso"
"""HOST token: this client can cut super-packets over UDP and takes partial checksums."""
RUNS_TOKEN = "runs"
"""HOST token: this client's tun backend sends and joins marked segments (``r``)."""

VTUND_COMPRESSORS = frozenset({"zlib", "lzo"})
"""The compressors ``OK FLAGS`` carries (``C``, ``L``); any other is agreed by name."""
OFFER = "c="
"""Prefix of the HOST token offering plugin compressors: ``c=zstd,br``."""
CONFIRM = "+"
"""Separates the feature letters from the confirmed compressor: ``no+zstd:19``."""


def legacy_cipher(encrypt: object) -> bool:
    """A vtund cipher (a code); secure-mode words stay words after the config check."""
    return isinstance(encrypt, int)


def plugin_compressor(compress: tuple[str, int] | None) -> str | None:
    """The compressor of a ``compress`` setting that no vtund letter carries, else None."""
    return compress[0] if compress and compress[0] not in VTUND_COMPRESSORS else None


def compressor_offer(installed: list[str], wanted: str | None, room: int) -> tuple[str, ...]:
    """The client's HOST token offering its plugin compressors (``wanted`` first), in at
    most ``room`` characters (the HOST line is 48); () when there is none to offer."""
    names = [w for w in dict.fromkeys([*([wanted] if wanted else []), *installed])
             if w not in VTUND_COMPRESSORS]
    while names and len(OFFER) + len(",".join(names)) > room:
        names.pop()
    return (OFFER + ",".join(names),) if names else ()


def host_tokens(name: str, tokens: tuple[str, ...], installed: list[str],
                wanted: str | None, runs: bool = False) -> tuple[str, ...]:
    """A client's HOST tokens after its name: ``tokens`` (``vt2`` or its secure mode's;
    none: a vtund-like client, nothing added), the plugin compressors it offers, then
    ``gso`` and (``runs``: its tun backend takes marked segments) ``runs``, each if the
    line still fits its 48 characters.  Speed only, so last: a long host name must not
    cost a compressor offer (a refusal) or a line cut inside a token."""
    if not tokens:
        return ()
    room = MAX_TEXT - len(f"HOST: {' '.join((name, *tokens))} \n")
    tokens += compressor_offer(installed, wanted, room)
    for token in (GSO_TOKEN, RUNS_TOKEN) if runs else (GSO_TOKEN,):
        if len(f"HOST: {' '.join((name, *tokens, token))}\n") > MAX_TEXT:
            break
        tokens += (token,)
    return tokens


def takes_runs(registry, kinds: tuple[str, ...] = ("tun", "ether")) -> bool:
    """Whether this side's backends for the ``kinds`` take marked segments (contract 1.4:
    ``DeviceBackendType.runs``): a client offers them when both packet types' do (the
    server's host picks the type), a server grants them for its host's type."""
    return all(getattr(registry.devices.get(kind), "runs", False) for kind in kinds)


def offered(peer_tokens: tuple[str, ...]) -> frozenset[str]:
    """The plugin compressors a client offered in its HOST tokens."""
    return frozenset(name for tok in peer_tokens if tok.startswith(OFFER)
                     for name in tok[len(OFFER):].split(",") if name)


def refusal(host, peer_tokens: tuple[str, ...]) -> tuple[str, str] | None:
    """Why the server must refuse this peer before the session, or None: its host wants a
    plugin compressor that the peer did not offer (vtund offers none).  Returns the log
    line and the shorter reason that fits in the ``ERR`` block for a vt client."""
    word = plugin_compressor(host.compress)
    if word is None or (HOST_TOKEN in peer_tokens and word in offered(peer_tokens)):
        return None
    return (f"host {host.name} needs compress {word}, which the peer does not offer",
            f"needs compress {word}, not offered")


def server_features(host, peer_tokens: tuple[str, ...], stream: bool | None = None,
                    runs: bool = False) -> str:
    """The ``F`` features a server grants a client that sent ``peer_tokens`` (call
    :func:`refusal` first: the confirmed compressor is assumed offered).  ``stream``: the
    host's frames travel on a byte stream (``tcp``, or a transport that wraps the TCP
    connection, e.g. ``proto ws``); by default, only for ``proto tcp``.  ``runs``: this
    server's backend for the host's type takes marked segments (:func:`takes_runs`)."""
    if HOST_TOKEN not in peer_tokens:
        return ""
    word = plugin_compressor(host.compress)
    confirm = f"{CONFIRM}{word}:{max(1, int(host.compress[1]))}" if word else ""
    if not getattr(host, "vtmode", True):
        return confirm
    # A shaped host keeps packet-sized frames: a 64 KiB burst is 2 s at 256 kbit/s.
    shaped = any(getattr(host, "speed", (0, 0)))
    if not (host.proto == "tcp" if stream is None else stream):
        feats = MODULE_FORMATS
        if (host.proto == "udp" and GSO_TOKEN in peer_tokens
                and host.type in ("tun", "ether") and not shaped):
            feats += SEGMENTS
            if runs and RUNS_TOKEN in peer_tokens:
                feats += SEGMENT_RUNS
        return feats + confirm
    feats = NATIVE_FRAMING
    if host.type in ("tun", "ether") and not shaped:
        feats += OFFLOAD
    return feats + confirm


def confirmed_compressor(features: str) -> tuple[str, int] | None:
    """The plugin compressor and level a server confirmed in its features, or None."""
    _, sep, named = features.partition(CONFIRM)
    word, _, level = named.partition(":")
    if not sep or not word or not level.isdigit():
        return None
    return (word, max(1, int(level)))


def confirmation_error(wanted: str | None, offer: tuple[str, ...], features: str,
                       server: str) -> str | None:
    """Why the client must not run the session the server accepted, or None: the server
    confirmed a compressor this client did not offer (a secure-mode server learns that
    only after the handshake, and refuses then too), or did not confirm the one this
    client's host wants (vtund never confirms one)."""
    confirmed = confirmed_compressor(features)
    if confirmed is not None and confirmed[0] not in offered(offer):
        return (f"{server} needs compress {confirmed[0]}, which this client does not offer "
                "(no plugin here provides it)")
    if wanted is not None and (confirmed is None or confirmed[0] != wanted):
        return (f"host needs compress {wanted}, which {server} did not confirm "
                "(vtund, or vt without the plugin that provides it)")
    return None


class FeatureSettings(TypedDict):
    native: bool
    native_framing: bool
    offload: bool
    segments: bool
    runs: bool
    max_frame: int | None


def feature_settings(features: str) -> FeatureSettings:
    """The :class:`~vt_api.LinkSettings` fields the granted features set."""
    features = features.partition(CONFIRM)[0]
    native_framing = NATIVE_FRAMING in features
    return {
        "native": native_framing or MODULE_FORMATS in features,
        "native_framing": native_framing,
        "offload": OFFLOAD in features,
        "segments": SEGMENTS in features,
        "runs": SEGMENTS in features and SEGMENT_RUNS in features,
        "max_frame": MAX_NATIVE_FRAME if native_framing else None,
    }


