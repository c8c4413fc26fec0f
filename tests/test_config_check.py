"""check_config: features resolved against the plugin registry, missing plugins named."""

from __future__ import annotations

import pytest

from vtcore.api import DeviceBackendType, FrameModuleType, Registry, Stage, TransportType
from vtcore.config import ConfigError, check_config, parse_config
from vtcore.config.check import VTUND_CIPHERS

VTUND_LETTERS = {"tun": "u", "ether": "e", "tty": "t", "pipe": "p", "tcp": "T", "udp": "U"}


def _none(_settings: object) -> None:
    return None


def registry(*, zlib=True, lzo=True, crypto=True, shaper=True, devices=("tun", "tty"),
             transports=("tcp", "udp")) -> Registry:  # fmt: skip
    """A hand-built registry of fake records (no real plugin involved)."""
    reg = Registry()
    if zlib:
        reg.add_frame_module(
            FrameModuleType("zlib", Stage.COMPRESS, "compress", {"zlib": 1}, _none, levels=(1, 9))
        )
    if lzo:
        reg.add_frame_module(
            FrameModuleType("lzo", Stage.COMPRESS + 1, "compress", {"lzo": 2}, _none, levels=(1, 9))
        )
    if crypto:
        words = {w: c for w, c in VTUND_CIPHERS.items() if w.startswith("aes")}
        words["blowfish128ecb"] = 1
        reg.add_frame_module(FrameModuleType("crypto", Stage.ENCRYPT, "encrypt", words, _none))
    if shaper:
        reg.add_frame_module(FrameModuleType("shaper", Stage.SHAPE, "speed", {}, _none))
    for t in devices:
        reg.add_device(DeviceBackendType(t, t, VTUND_LETTERS[t], lambda req: None))
    for t in transports:
        reg.add_transport(TransportType(t, VTUND_LETTERS[t], lambda *a: None))
    return reg


CLI = """options { port 5000; }
conn {
  passwd tan5;
  type tun;
  proto udp;
  keepalive yes;
    compress lzo:9;
  encrypt aes256cbc;
  speed 64:128;
}
"""


def test_everything_present_no_errors_and_cipher_resolved() -> None:
    cfg = parse_config(CLI, "cli.conf")
    assert cfg.hosts["conn"].encrypt == "aes256cbc"
    assert check_config(cfg, registry()) == []
    assert cfg.hosts["conn"].encrypt == 14


def test_missing_lzo_names_extra_at_keyword_position() -> None:
    cfg = parse_config(CLI, "cli.conf")
    (err,) = check_config(cfg, registry(lzo=False))
    assert isinstance(err, ConfigError)
    assert (
        str(err)
        == "cli.conf:7:5: 'compress lzo:9' needs the vt-lzo plugin: pip install 'vtcore[lzo]'"
    )


@pytest.mark.parametrize(
    ("line", "missing", "expected"),
    [
        ("compress zlib:9;", "zlib", "'compress zlib:9' needs the vt-zlib plugin: pip install 'vtcore[zlib]'"),
        ("compress yes;", "zlib", "'compress yes' needs the vt-zlib plugin: pip install 'vtcore[zlib]'"),
        ("comp 5;", "zlib", "'compress 5' needs the vt-zlib plugin: pip install 'vtcore[zlib]'"),
        ("encrypt yes;", "crypto", "'encrypt yes' needs the vt-crypto plugin: pip install 'vtcore[crypto]'"),
        ("encrypt aes128cbc;", "crypto",
         "'encrypt aes128cbc' needs the vt-crypto plugin: pip install 'vtcore[crypto]'"),
        ("encrypt 12;", "crypto", "'encrypt 12' needs the vt-crypto plugin: pip install 'vtcore[crypto]'"),
        ("speed 64;", "shaper", "'speed 64' needs the vt-shaper plugin: pip install 'vtcore[shaper]'"),
        ("speed 0:128;", "shaper", "'speed 0:128' needs the vt-shaper plugin: pip install 'vtcore[shaper]'"),
    ],
)  # fmt: skip
def test_missing_plugin_messages(line: str, missing: str, expected: str) -> None:
    cfg = parse_config(f"h {{\n passwd x;\n {line}\n}}", "c.conf")
    (err,) = check_config(cfg, registry(**{missing: False}))
    assert (err.path, err.line, err.col, err.message) == ("c.conf", 3, 2, expected)


def test_compress_lzo_quirk_needs_zlib_with_hint() -> None:
    cfg = parse_config("h { passwd x; compress lzo; }")
    (err,) = check_config(cfg, registry(zlib=False))
    assert "vt-zlib" in err.message and "zlib level 2" in err.message
    assert check_config(parse_config("h { passwd x; compress lzo; }"), registry(lzo=False)) == []


def test_unknown_cipher_lists_valid_names() -> None:
    cfg = parse_config("h {\n passwd x;\n encrypt aes512xyz;\n}")
    (err,) = check_config(cfg, registry())
    assert (err.line, err.col) == (3, 2)
    assert "unknown cipher 'aes512xyz'" in err.message
    assert "aes128cbc, aes128cfb" in err.message and "blowfish128ecb" in err.message
    assert cfg.hosts["h"].encrypt == "aes512xyz"  # left unresolved


def test_unknown_cipher_code() -> None:
    cfg = parse_config("h { passwd x; encrypt 77; }")
    (err,) = check_config(cfg, registry())
    assert "unknown cipher code 77" in err.message and "10 (aes128cbc)" in err.message


def test_unknown_cipher_without_any_crypto_plugin() -> None:
    cfg = parse_config("h { passwd x; encrypt nonsense; }")
    (err,) = check_config(cfg, registry(crypto=False))
    assert "unknown cipher 'nonsense'" in err.message and "oldblowfish128ecb" in err.message
    assert "aead, aes128cbc" in err.message  # secure mode named even without its plugin
    cfg = parse_config("h { passwd x; encrypt aead; }")
    (err,) = check_config(cfg, registry(crypto=False))
    assert err.message == "'encrypt aead' needs the vt-crypto plugin: pip install 'vtcore[crypto]'"


def test_compress_level_out_of_range() -> None:
    cfg = parse_config("h { passwd x; compress zlib:12; }")
    (err,) = check_config(cfg, registry())
    assert err.message == "'compress zlib:12': zlib level must be 1-9"


def test_type_and_proto_need_backends() -> None:
    cfg = parse_config("h {\n passwd x;\n type pipe;\n proto udp;\n}")
    errs = check_config(cfg, registry(devices=("tun",), transports=("tcp",)))
    assert [(e.line, e.col) for e in errs] == [(3, 2), (4, 2)]
    assert errs[0].message == "'type pipe': no installed plugin answers 'pipe' (installed: tun)"
    assert errs[1].message == "'proto udp': no installed plugin answers 'udp' (installed: tcp)"


@pytest.mark.parametrize("line, message", [
    ("type tap;", "'type tap': no installed plugin answers 'tap' (installed: tty, tun)"),
    ("type tunn;", "'type tunn': no installed plugin answers 'tunn' (installed: tty, tun); "
                   "did you mean 'tun'?"),
    ("proto sctp;", "'proto sctp': no installed plugin answers 'sctp' (installed: tcp, udp)"),
    ("proto ud;", "'proto ud': no installed plugin answers 'ud' (installed: tcp, udp); "
                  "did you mean 'udp'?"),
    ("compress bzip2;", "'compress bzip2': no installed plugin answers 'bzip2' "
                        "(installed: lzo, zlib)"),
    ("compress zlb:3;", "'compress zlb:3': no installed plugin answers 'zlb' "
                        "(installed: lzo, zlib); did you mean 'zlib'?"),
    ("encrypt aes128cb;", "'encrypt aes128cb': unknown cipher 'aes128cb'; valid names: "
                          "aes128cbc, aes128cfb, aes128ecb, aes128ofb, aes256cbc, aes256cfb, "
                          "aes256ecb, aes256ofb, blowfish128ecb; did you mean 'aes128ecb'?"),
    ("sped 64;", "unknown keyword 'sped' (no installed plugin answers 'sped 64'); "
                 "did you mean 'speed'?"),
])
def test_words_no_plugin_answers_are_errors_at_their_position(line, message) -> None:
    cfg = parse_config(f"h {{\n passwd x;\n  {line}\n}}\n", "w.conf")
    (err,) = check_config(cfg, registry())
    assert str(err) == f"w.conf:3:3: {message}"


def test_implicit_defaults_are_not_checked_against_devices() -> None:
    # a client profile with just passwd: type/proto come from the server, no device check
    cfg = parse_config("h { passwd x; }")
    assert check_config(cfg, registry(devices=(), transports=())) == []


def test_error_inherited_from_default_reported_once_at_default() -> None:
    text = "default {\n compress lzo:9;\n}\na { passwd x; }\nb { passwd y; }\n"
    errs = check_config(parse_config(text, "d.conf"), registry(lzo=False))
    assert [str(e) for e in errs] == [
        "d.conf:2:2: 'compress lzo:9' needs the vt-lzo plugin: pip install 'vtcore[lzo]'"
    ]


def test_each_host_resolves_its_own_cipher() -> None:
    cfg = parse_config(
        "default { encrypt aes128cbc; }\na { passwd x; }\nb { passwd y; encrypt aes256ofb; }"
    )
    assert check_config(cfg, registry()) == []
    assert (cfg.default.encrypt, cfg.hosts["a"].encrypt, cfg.hosts["b"].encrypt) == (10, 10, 16)


def test_with_real_plugin_registry() -> None:
    """The one test using the real plugins: whatever is installed, check_config either
    accepts a feature or names the extra that provides it."""
    from vtcore.plugins import load_plugins

    reg = load_plugins().registry
    text = """h {
 passwd x; type tun; proto tcp; compress zlib:9; encrypt aes128cbc; speed 64;
}
l { passwd y; compress lzo:3; }
"""
    cfg = parse_config(text)
    errs = check_config(cfg, reg)
    for e in errs:
        assert isinstance(e, ConfigError)
        assert "needs the vt-" in e.message or "no installed" in e.message, str(e)
    if reg.answering("encrypt", "aes128cbc") is not None:
        assert cfg.hosts["h"].encrypt == 10


def test_a_host_name_the_host_line_cannot_carry_is_an_error() -> None:
    """The handshake's HOST line holds 48 characters: a longer name arrives cut (no peer
    finds its host), and a secure host's name must leave room for 'vt2' (else the client
    cannot ask for secure mode and the server refuses it as a downgrade)."""
    from vt_api import MESG_SIZE

    from vtcore.plugins import load_plugins
    from vtcore.protocol.handshake import ClientHandshake, ServerHandshake

    def arrives(name: str) -> tuple[bool, tuple[str, ...]]:
        client, server = ClientHandshake(name, b"pw", host_extra=("vt2",)), ServerHandshake()
        client.receive_data(server.data_to_send())
        block = client.data_to_send()
        assert len(block) == MESG_SIZE
        server.receive_data(block)
        event = server.next_event()
        return event.host == name, event.extra

    assert arrives("h" * 42)[0] and not arrives("h" * 43)[0]  # what the limits stand on
    assert arrives("h" * 38) == (True, ("vt2",)) and arrives("h" * 39)[1] != ("vt2",)
    real = load_plugins().registry
    cfg = parse_config(f"{'a' * 43} {{ passwd x; }}\n{'b' * 42} {{ passwd x; }}\n"
                       f"{'c' * 39} {{ passwd x; encrypt aead; }}\n"
                       f"{'d' * 38} {{ passwd x; encrypt aead; }}\n")
    errors = [(e.line, e.message) for e in check_config(cfg, real)]
    assert [line for line, _ in errors] == [1, 3], errors
    assert "43 characters" in errors[0][1] and "at most 42" in errors[0][1]
    assert "with secure mode at most 38" in errors[1][1]
