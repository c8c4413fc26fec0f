"""The negotiated session settings are a frozen, typed record of plain values (issue 14
item 1): the vt-native features are typed fields, a secure mode is a label (the live
handshake objects stay with the session), so the settings can be logged, compared and
sent to another process as they are."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import pytest
from vt_api import LinkSettings

from vtcore.config import parse_config
from vtcore.protocol.flags import parse_flags
from vtcore.protocol.native import MAX_NATIVE_FRAME
from vtcore.runtime.session import client_settings, secure_label, server_settings
from vtcore.runtime.status import cipher_name

HOST = parse_config("h { passwd pw; type tun; proto tcp; compress lzo:1; }").hosts["h"]
MODE = SimpleNamespace(name="aead")
ESTABLISHED = SimpleNamespace(log_fields=lambda: {"host": "h", "role": "server",
                                                  "suite": "aes256gcm", "session": "ab12"})


def plain(settings: LinkSettings) -> str:
    """The settings as JSON (minus the password): fails on any live object."""
    fields = dataclasses.asdict(settings)
    fields.pop("password")
    return json.dumps(fields, sort_keys=True)


def test_vt_native_features_are_typed_fields() -> None:
    s = server_settings(HOST, "no")
    assert (s.native, s.native_framing, s.offload, s.max_frame) == (
        True, True, True, MAX_NATIVE_FRAME)
    m = server_settings(HOST, "m")
    assert (m.native, m.native_framing, m.offload, m.max_frame) == (True, False, False, None)
    vtund = server_settings(HOST)
    assert (vtund.native, vtund.native_framing, vtund.offload, vtund.max_frame) == (
        False, False, False, None)
    # The client reads the same from the server's flags.
    c = client_settings(HOST, parse_flags("<TuL1KFno>", allow_extra=True))
    assert (c.native, c.native_framing, c.offload, c.max_frame) == (
        True, True, True, MAX_NATIVE_FRAME)


def test_contract_1_0_plugins_still_find_their_options() -> None:
    s = server_settings(HOST, "no")
    assert s.options == {"native": True, "native_framing": True, "offload": True,
                         "max_frame": MAX_NATIVE_FRAME}
    assert server_settings(HOST).options == {}


def test_a_secure_session_settings_hold_a_label_not_the_handshake() -> None:
    label = secure_label(MODE, ESTABLISHED)  # type: ignore[arg-type]
    assert label == "aead aes256gcm"
    s = server_settings(HOST, "no", label)
    assert s.secure == "aead aes256gcm"
    assert json.loads(plain(s))["secure"] == "aead aes256gcm"
    assert cipher_name(s) == "secure aead aes256gcm"
    assert "pw" not in repr(s)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.secure = None  # type: ignore[misc]


def test_every_settings_value_is_plain_data() -> None:
    for s in (server_settings(HOST, "no", "aead chacha20poly1305"), server_settings(HOST),
              client_settings(HOST, parse_flags("<TuL1K>"), None)):
        assert json.loads(plain(s))["host"] == "h"
