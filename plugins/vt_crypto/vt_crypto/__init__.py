"""vt plugin: vtund's ciphers (Blowfish and AES in ECB/CBC/CFB/OFB, legacy Blowfish)."""

from vt_crypto.chained import ChainedCodec
from vt_crypto.ciphers import CIPHERS, WORDS, CipherSpec, derive_key, spec_for
from vt_crypto.ecb import EcbCodec
from vt_crypto.factory import make_codec
from vt_crypto.legacy import LegacyCodec

__all__ = [
    "CIPHERS",
    "WORDS",
    "ChainedCodec",
    "CipherSpec",
    "EcbCodec",
    "LegacyCodec",
    "derive_key",
    "make_codec",
    "spec_for",
]
