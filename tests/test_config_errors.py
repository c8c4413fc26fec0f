"""Broken configs: every error at the right file:line:col, all of them in one run, and
never anything but ConfigErrors (property-tested)."""

from __future__ import annotations

import os
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vtcore.api import FrameModuleType, Registry, Stage
from vtcore.config import ConfigError, ConfigErrors, check_config, load_config, parse_config


def errors_of(text: str, path: str = "t.conf") -> list[tuple[int, int, str]]:
    with pytest.raises(ConfigErrors) as exc:
        parse_config(text, path)
    return [(e.line, e.col, e.message) for e in exc.value.errors]


def test_error_str_format() -> None:
    e = ConfigError("a.conf", 3, 7, "boom")
    assert str(e) == "a.conf:3:7: boom"
    many = ConfigErrors([e, ConfigError("a.conf", 4, 1, "bang")])
    assert str(many) == "a.conf:3:7: boom\na.conf:4:1: bang"
    assert isinstance(many, Exception)


def test_unknown_keyword_position() -> None:
    text = "options {\n  port 5000;\n  prot 6000;\n}\n"
    assert errors_of(text) == [(3, 3, "'proto' is not valid in the options section")]
    # In a session an unknown keyword may belong to a plugin: the parser keeps it and
    # check_config reports it at its position when no installed plugin answers it.
    text = "h {\n\tpasswd x;\n\tbogus yes;\n}\n"
    config = parse_config(text, "t.conf")
    assert config.hosts["h"].extras == {"bogus": "yes"}
    (err,) = check_config(config, Registry())
    assert (err.line, err.col) == (3, 2) and "unknown keyword 'bogus'" in err.message
    text = "h {\n\tpasswd x;\n\tbogus { x; };\n}\n"
    assert errors_of(text) == [(3, 2, "unknown keyword 'bogus' in a session section")]


def test_bad_value_position_is_the_value() -> None:
    assert errors_of("h { passwd x;\n  type    t.ap; }")[0][:2] == (2, 11)


def test_missing_semicolon_points_after_the_value() -> None:
    (err,) = errors_of("options {\n  port 5000\n}\n")
    assert err == (2, 12, "missing ';' after 'port' statement")
    (err,) = errors_of('h { passwd x; up { ip "a b" } }')
    assert err[:2] == (1, 28)


def test_unterminated_string_and_unclosed_brace() -> None:
    errs = errors_of('h { passwd x;\n up { ip "abc;\n };\n}')
    assert errs[0] == (2, 10, "unterminated string")
    assert errors_of("h {\n passwd x;\n")[0] == (1, 3, "'{' is never closed")


def test_invalid_character() -> None:
    assert errors_of("h { passwd x\x01y; }") == [(1, 13, "invalid character '\\x01'")]
    assert errors_of('h { passwd x; up { ip "a\x00b"; }; }')[0][:2] == (1, 25)


def test_top_level_errors() -> None:
    assert errors_of("options port 5000;")[0] == (
        1, 9, "expected '{' after section name 'options', got 'port'",
    )  # fmt: skip
    assert errors_of('"x" { }')[0] == (1, 1, 'expected a section name, got string "x"')
    assert errors_of("}")[0] == (1, 1, "expected a section name, got '}'")


def test_all_errors_reported_with_recovery() -> None:
    text = """options {
  port nope;
  syslog local9;
}
a {
  passwd x;
  compress bzip:x;
  bogus { nested; stuff; }
  type tun;
}
b {
  passwd y;
  speed fast;
  up { ifconfig bare; ip "ok"; };
}
"""
    errs = errors_of(text)
    assert [(line, col) for line, col, _ in errs] == [
        (2, 8),
        (3, 10),
        (7, 12),
        (8, 3),
        (13, 9),
        (14, 17),
    ]


def test_recovery_keeps_later_statements() -> None:
    # after an unknown block keyword the next statement still counts: only one error
    text = "h { passwd x; bogus { a; }\n type tun; proto 5ctp; }"
    assert [e[:2] for e in errors_of(text)] == [(1, 15), (2, 18)]


def test_comments() -> None:
    text = "# top comment\noptions { # after brace\n  port 5001; # trailing\n}\n# end"
    assert parse_config(text).options.port == 5001
    # inside a value '#' is an ordinary character, as in vtund
    assert parse_config("h { passwd a#b; }").hosts["h"].passwd == "a#b"
    cfg = parse_config('h # comment here\n{ passwd x; up { # c\n ip "1"; # c2\n }; }')
    assert [c.args for c in cfg.hosts["h"].up] == ["1"]


def test_crlf_and_tabs() -> None:
    cfg = parse_config("h {\r\n\tpasswd x;\r\n\tdevice tun1;\r\n}\r\n")
    assert cfg.hosts["h"].device == "tun1"


def test_stray_semicolons_tolerated() -> None:
    cfg = parse_config("options { ;; port 5001;; };\nh { passwd x; ; };")
    assert cfg.options.port == 5001


def test_load_config_unreadable(tmp_path) -> None:
    missing = str(tmp_path / "nope.conf")
    with pytest.raises(ConfigErrors) as exc:
        load_config(missing)
    (err,) = exc.value.errors
    assert str(err) == f"{missing}:1:1: cannot read file: No such file or directory"
    with pytest.raises(ConfigErrors):
        load_config(str(tmp_path))  # a directory


def test_load_config_reports_path_and_keeps_raw_bytes(tmp_path) -> None:
    p = tmp_path / "x.conf"
    p.write_bytes(b"h {\n passwd caf\xe9;\n bogus 1;\n}\n")
    (err,) = check_config(load_config(str(p)), Registry())
    assert str(err).startswith(f"{p}:3:2: unknown keyword 'bogus'")
    p.write_bytes(b"h { passwd caf\xe9\xff; }\n")
    assert load_config(str(p)).hosts["h"].password_bytes() == b"caf\xe9\xff"


def test_messages_are_printable_for_undecodable_input() -> None:
    with pytest.raises(ConfigErrors) as exc:
        parse_config(b"h { passwd x; b\xffd 1; }".decode("utf-8", "surrogateescape"))
    str(exc.value).encode("utf-8")  # no lone surrogates leak into messages
    assert "b\\xffd" in str(exc.value)


def test_too_deep_nesting_is_an_error_not_a_crash() -> None:
    text = "h " + "{ a " * 5000 + "}" * 5000
    with pytest.raises(ConfigErrors):
        parse_config(text)


# ----------------------------------------------------------------- property tests

VALID = """options {
  port 5000; bindaddr { iface lo; }; syslog daemon; timeout 60;
  ppp /usr/sbin/pppd; ifconfig /sbin/ifconfig; route /sbin/route; ip /sbin/ip;
}
default { compress no; speed 0; keepalive yes; }
cobra {
  passwd Ma&^TU; type tun; proto udp; compress lzo:9; encrypt aes128cbc;
  srcaddr { addr 10.0.0.1; port 4000; };
  up { ifconfig "%% 10.3.0.1 pointopoint 10.3.0.2 mtu 1450"; program /bin/sh "-c 'x'" wait; };
  down { ip "link set %d down"; };
}
"""

ALPHABET = st.sampled_from(list('{};"#:/ \t\n\r\x00abcdefgpstuy0123456789') + ["\udcff", "é"])


def _check_outcome(text: str) -> None:
    try:
        cfg = parse_config(text, "p.conf")
    except ConfigErrors as exc:
        assert exc.errors
        lines = text.count("\n") + 1
        for e in exc.errors:
            assert isinstance(e, ConfigError)
            assert 1 <= e.line <= lines and e.col >= 1
            str(e).encode("utf-8")
        return
    for w in cfg.warnings:
        str(w).encode("utf-8")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=ALPHABET, max_size=300))
def test_random_text_never_tracebacks(text: str) -> None:
    _check_outcome(text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_random_unicode_never_tracebacks(text: str) -> None:
    _check_outcome(text)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["insert", "delete", "replace"]),
            st.integers(0, len(VALID)),
            st.text(alphabet=ALPHABET, min_size=1, max_size=3),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_mutated_valid_config_never_tracebacks(edits: list[tuple[str, int, str]]) -> None:
    text = VALID
    for op, pos, chunk in edits:
        pos = min(pos, len(text))
        if op == "insert":
            text = text[:pos] + chunk + text[pos:]
        elif op == "delete":
            text = text[:pos] + text[pos + len(chunk) :]
        else:
            text = text[:pos] + chunk + text[pos + len(chunk) :]
    _check_outcome(text)


def test_valid_base_config_parses() -> None:
    cfg = parse_config(VALID)
    assert cfg.hosts["cobra"].compress == ("lzo", 9)


# ----------------------------------------------------------------- performance


def test_thousand_hosts_parse_and_check_fast() -> None:
    body = "".join(
        f"h{i} {{\n  passwd pw{i}; type tun; proto udp; compress zlib:9; encrypt aes128cbc;\n"
        f'  keepalive 10:3; speed 64:128;\n  up {{ ip "link set %d up"; ifconfig "%% 10.0.{i % 250}.1"; }};\n}}\n'
        for i in range(1000)
    )
    text = "options { port 5000; }\ndefault { stat yes; }\n" + body
    reg = Registry()
    for name, kw, words in (
        ("zlib", "compress", {"zlib": 1}),
        ("crypto", "encrypt", {"aes128cbc": 10}),
        ("shaper", "speed", {}),
    ):
        reg.add_frame_module(FrameModuleType(name, Stage.COMPRESS, kw, words, lambda s: None))
    # CPU time, not wall time: a loaded CI machine must not make this flaky.
    limit = 1.0 * float(os.environ.get("VT_TIME_FACTOR", "1"))
    t0 = time.process_time()
    cfg = parse_config(text)
    errs = check_config(cfg, reg)
    elapsed = time.process_time() - t0
    assert len(cfg.hosts) == 1000 and cfg.hosts["h999"].encrypt == 10
    assert [e for e in errs if "type" not in e.message and "proto" not in e.message] == []
    assert elapsed < limit, f"1000 hosts took {elapsed:.3f}s"
