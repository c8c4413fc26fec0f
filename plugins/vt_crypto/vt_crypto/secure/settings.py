"""The server's settings blob, sent encrypted inside msg2.

Compact JSON (sorted keys), padded to a fixed size so that its length says nothing
(neither which host nor whether the host exists).  Unknown keys are ignored so that
later versions can add options; wrong types are an error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from vt_crypto.secure.errors import SecureHandshakeError
from vt_crypto.secure.suites import SUITES

SETTINGS_SIZE = 256
"""Plaintext size in msg2: 2-byte big-endian JSON length, JSON, zero padding."""
DEFAULT_MAX_FRAME = 2048 + 100
"""vtund's VTUN_FRAME_SIZE + VTUN_FRAME_OVERHEAD: the largest plaintext frame."""
_MALFORMED = "malformed secure settings"
_OPTION_TYPES = (str, int, bool)


@dataclass(frozen=True)
class SecureSettings:
    """What the server decided for the session.

    ``flags`` is the legacy ``OK FLAGS`` text (e.g. ``<TuC9K>``): the core builds the
    session from it exactly as on the legacy path.  ``options`` carries vt-native extras
    (string keys; str, int or bool values).
    """

    flags: str
    suite: str
    max_frame: int = DEFAULT_MAX_FRAME
    options: Mapping[str, str | int | bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (self.flags.startswith("<") and self.flags.endswith(">")) or len(self.flags) > 40:
            raise ValueError(f"flags {self.flags!r} must look like '<TuC9K>'")
        if not self.flags.isascii() or not self.flags.isprintable():
            raise ValueError("flags must be printable ASCII")
        if self.suite not in SUITES:
            raise ValueError(f"unknown suite {self.suite!r}")
        if isinstance(self.max_frame, bool) or not 64 <= self.max_frame <= 65535:
            raise ValueError("max_frame must be 64..65535")
        for k, v in self.options.items():
            if not isinstance(k, str) or not isinstance(v, _OPTION_TYPES):
                raise ValueError("options map strings to str, int or bool")

    def encode(self) -> bytes:
        """The padded plaintext (``SETTINGS_SIZE`` bytes); ValueError if it does not fit."""
        doc = {"flags": self.flags, "suite": self.suite, "max_frame": self.max_frame}
        if self.options:
            doc["options"] = dict(self.options)
        raw = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")
        if len(raw) > SETTINGS_SIZE - 2:
            raise ValueError(f"settings do not fit in {SETTINGS_SIZE - 2} bytes")
        return len(raw).to_bytes(2, "big") + raw + bytes(SETTINGS_SIZE - 2 - len(raw))

    @classmethod
    def decode(cls, blob: bytes) -> SecureSettings:
        """Parse a padded plaintext; SecureHandshakeError on anything malformed."""
        if len(blob) != SETTINGS_SIZE:
            raise SecureHandshakeError(_MALFORMED)
        n = int.from_bytes(blob[:2], "big")
        if n > SETTINGS_SIZE - 2 or any(blob[2 + n :]):
            raise SecureHandshakeError(_MALFORMED)
        try:
            doc = json.loads(blob[2 : 2 + n].decode("utf-8"))
            if not isinstance(doc, dict):
                raise TypeError
            flags, suite = doc["flags"], doc["suite"]
            max_frame = doc.get("max_frame", DEFAULT_MAX_FRAME)
            options = doc.get("options", {})
            if not (isinstance(flags, str) and isinstance(suite, str)):
                raise TypeError
            if not isinstance(max_frame, int) or not isinstance(options, dict):
                raise TypeError
            return cls(flags=flags, suite=suite, max_frame=max_frame, options=options)
        except (ValueError, TypeError, KeyError, UnicodeDecodeError):
            raise SecureHandshakeError(_MALFORMED) from None
