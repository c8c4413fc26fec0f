"""Build the codec for a negotiated vtund cipher code."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from vt_crypto.chained import ChainedCodec
from vt_crypto.ciphers import MAX_FRAME, spec_for
from vt_crypto.ecb import EcbCodec
from vt_crypto.legacy import LegacyCodec

Codec = EcbCodec | ChainedCodec | LegacyCodec


def make_codec(
    code: int,
    password: bytes,
    *,
    rng: Callable[[int], bytes] = os.urandom,
    clock: Callable[[], float] = time.monotonic,
    max_frame: int = MAX_FRAME,
) -> Codec:
    """The frame module for cipher ``code`` (unknown codes: Blowfish-128-ECB, as vtund).

    ``rng`` and ``clock`` are injectable for deterministic tests.  ``max_frame`` is the
    longest ciphertext accepted: vtund's 4095, or more between two vt ends that negotiated
    native framing (whole GSO super-packets per frame).
    """
    spec = spec_for(code)
    if spec.mode == "legacy":
        return LegacyCodec(spec, password, max_frame=max_frame)
    if spec.chained:
        return ChainedCodec(spec, password, rng=rng, clock=clock, max_frame=max_frame)
    return EcbCodec(spec, password, rng=rng, max_frame=max_frame)
