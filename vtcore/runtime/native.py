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
       per frame); ``n`` implies it.  Plugins see both as ``options["native"]``.

``vtmode no;`` in a host section turns all of it off (vtun framing, one packet per
frame, exactly what vtund would send) -- for trouble-shooting and measurement.
A man in the middle who strips the token or the ``F`` letter only costs speed; the
secure mode (vt-crypto) authenticates its own negotiation.
"""

from __future__ import annotations

from vt_api import HOST_TOKEN

from vtcore.protocol.native import MAX_NATIVE_FRAME

__all__ = ["HOST_TOKEN", "feature_options", "legacy_cipher", "server_features"]
NATIVE_FRAMING = "n"
OFFLOAD = "o"
MODULE_FORMATS = "m"


def legacy_cipher(encrypt: object) -> bool:
    """A vtund cipher (a code); secure-mode words stay words after the config check."""
    return isinstance(encrypt, int)


def server_features(host, peer_tokens: tuple[str, ...]) -> str:
    """The ``F`` features a server grants a client that sent ``peer_tokens``."""
    if HOST_TOKEN not in peer_tokens or not getattr(host, "vtmode", True):
        return ""
    if host.proto != "tcp":
        return MODULE_FORMATS
    feats = NATIVE_FRAMING
    # A shaped host keeps packet-sized frames: a 64 KiB burst is 2 s at 256 kbit/s.
    shaped = any(getattr(host, "speed", (0, 0)))
    if host.type in ("tun", "ether") and not shaped:
        feats += OFFLOAD
    return feats


def feature_options(features: str) -> dict[str, object]:
    """``LinkSettings.options`` entries for the granted features."""
    opts: dict[str, object] = {}
    if NATIVE_FRAMING in features:
        opts["native"] = True
        opts["native_framing"] = True
        opts["max_frame"] = MAX_NATIVE_FRAME
    if MODULE_FORMATS in features:
        opts["native"] = True
    if OFFLOAD in features:
        opts["offload"] = True
    return opts
