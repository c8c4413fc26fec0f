"""Every vtund.conf keyword and value, parsed into the typed model."""

from __future__ import annotations

import pytest

from vtcore.config import Addr, Command, ConfigErrors, parse_config
from vtcore.config.keywords import (
    FULL_ONLY,
    MIN_ABBREV,
    SPELLINGS,
    KeywordError,
    resolve_keyword,
)


def host(body: str, name: str = "h"):
    """Parse one session with a password plus ``body`` and return it."""
    return parse_config(f"{name} {{ passwd pw; {body} }}").hosts[name]


def options(body: str):
    return parse_config(f"options {{ {body} }}").options


def error_messages(text: str) -> list[str]:
    with pytest.raises(ConfigErrors) as exc:
        parse_config(text)
    return [e.message for e in exc.value.errors]


# ----------------------------------------------------------------- options section


def test_options_defaults() -> None:
    o = parse_config("").options
    assert (o.port, o.bindaddr, o.iface, o.type, o.timeout) == (5000, None, None, "stand", 30)
    assert (o.ppp, o.ifconfig, o.route) == ("/usr/sbin/pppd", "/sbin/ifconfig", "/sbin/route")
    assert (o.firewall, o.ip, o.syslog, o.family) == (
        "/sbin/ipchains",
        "/sbin/ip",
        "daemon",
        "ipv4",
    )
    assert (o.lockdir, o.statdir, o.persist) == ("/var/lock/vtund", "/var/log/vtund", None)


@pytest.mark.parametrize(
    ("body", "attr", "value"),
    [
        ("port 5001;", "port", 5001),
        ("type inetd;", "type", "inetd"),
        ("type stand;", "type", "stand"),
        ("timeout 60;", "timeout", 60),
        ('iface "eth0";', "iface", "eth0"),
        ("iface eth1;", "iface", "eth1"),
        ("ppp /usr/local/sbin/pppd;", "ppp", "/usr/local/sbin/pppd"),
        ("ifconfig /bin/ifconfig;", "ifconfig", "/bin/ifconfig"),
        ("ifcfg /bin/ifcfg;", "ifconfig", "/bin/ifcfg"),
        ("route /bin/route;", "route", "/bin/route"),
        ("firewall /sbin/iptables;", "firewall", "/sbin/iptables"),
        ("ip /usr/sbin/ip;", "ip", "/usr/sbin/ip"),
        ("syslog local3;", "syslog", "local3"),
        ("syslog user;", "syslog", "user"),
        ("syslog 24;", "syslog", "daemon"),
        ("syslog 8;", "syslog", "user"),
        ("syslog 152;", "syslog", "local3"),
        ("ipv6;", "family", "ipv6"),
        ("ipv6; ipv4;", "family", "ipv4"),
        ("lockdir /run/vt/lock;", "lockdir", "/run/vt/lock"),
        ("statdir /run/vt/stat;", "statdir", "/run/vt/stat"),
        ("bindaddr { iface lo; };", "bindaddr", Addr(iface="lo")),
        ("bindaddr { addr 127.0.0.1; }", "bindaddr", Addr(addr="127.0.0.1")),
        ('bindaddr { iface "lo"; };', "bindaddr", Addr(iface="lo")),
        ("bindaddr { addr 1.2.3.4; iface lo; };", "bindaddr", Addr(iface="lo")),
    ],
)
def test_option_keyword(body: str, attr: str, value: object) -> None:
    assert getattr(options(body), attr) == value


def test_options_first_value_wins_like_vtund() -> None:
    # vtund keeps the first port/type/timeout/iface (the command line sets them first)
    cfg = parse_config("options { port 6000; timeout 5; }\noptions { port 7000; timeout 9; }")
    assert (cfg.options.port, cfg.options.timeout) == (6000, 5)
    assert [(w.line, w.col) for w in cfg.warnings] == [(2, 11), (2, 22)]
    # paths are simply replaced
    assert options("ip /a; ip /b;").ip == "/b"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("port 0;", "between 1 and 65535"),
        ("port 70000;", "between 1 and 65535"),
        ("port abc;", "needs a number"),
        ("type daemon;", "takes one of inetd, stand"),
        ("syslog 3;", "unknown syslog facility number 3"),
        ("syslog nosuch;", "unknown syslog facility"),
        ("ppp pppd;", "absolute path"),
        ("ipv4 yes;", "takes no value"),
        ("persist yes;", "'persist' is not valid in the options section"),
        ("passwd x;", "'passwd' is not valid in the options section"),
        ("sslauth no;", "'sslauth' is not valid in the options section"),
        ("bindaddr { port 3; };", "'port' is not valid in a bindaddr block"),
        ("bindaddr lo;", "takes a { } block"),
        ("port;", "'port' needs a value"),
        ("port 1 2;", "takes one value"),
        ('port "5000";', "not a quoted string"),
        ("bogus 1;", "unknown keyword 'bogus' in the options section"),
    ],
)
def test_option_errors(body: str, fragment: str) -> None:
    (msg,) = error_messages(f"options {{ {body} }}")
    assert fragment in msg


# ----------------------------------------------------------------- session keywords


def test_host_defaults() -> None:
    h = host("")
    assert (h.name, h.passwd, h.device, h.type, h.proto) == ("h", "pw", None, "tty", "tcp")
    assert (h.compress, h.encrypt, h.keepalive, h.speed) == (None, None, None, (0, 0))
    assert (h.timeout, h.persist, h.multi, h.stat, h.nat_hack) == (30, "no", "yes", False, "no")
    assert (h.srcaddr, h.sslauth, h.up, h.down, h.vtmode) == (None, True, [], [], True)
    assert h.line == 1


@pytest.mark.parametrize(
    ("body", "attr", "value"),
    [
        ("passwd s3cr3t;", "passwd", "s3cr3t"),
        ("password other;", "passwd", "other"),
        ("passwd 1234;", "passwd", "1234"),
        ("passwd Ma&^TU;", "passwd", "Ma&^TU"),
        ("passwd ab#cd;", "passwd", "ab#cd"),
        ('passwd "two words";', "passwd", "two words"),
        ("device tun7;", "device", "tun7"),
        ("type tun;", "type", "tun"),
        ("type ether;", "type", "ether"),
        ("type pipe;", "type", "pipe"),
        ("type tty;", "type", "tty"),
        ("proto udp;", "proto", "udp"),
        ("proto tcp;", "proto", "tcp"),
        ("compress no;", "compress", None),
        ("compress 0;", "compress", None),
        ("compress yes;", "compress", ("zlib", 1)),
        ("compress 9;", "compress", ("zlib", 9)),
        ("compress zlib;", "compress", ("zlib", 1)),
        ("compress lzo;", "compress", ("zlib", 2)),  # vtund quirk: lzo == the number 2
        ("compress zlib:9;", "compress", ("zlib", 9)),
        ("compress lzo:1;", "compress", ("lzo", 1)),
        ("compress lzo:9; compress no;", "compress", None),
        ("encrypt no;", "encrypt", None),
        ("encrypt 0;", "encrypt", None),
        ("encrypt yes;", "encrypt", 1),
        ("encrypt 14;", "encrypt", 14),
        ("encrypt 999;", "encrypt", 999),
        ("encrypt aes128cbc;", "encrypt", "aes128cbc"),
        ("encrypt oldblowfish128ecb;", "encrypt", "oldblowfish128ecb"),
        ("encrypt aead;", "encrypt", "aead"),
        ("keepalive yes;", "keepalive", (30, 4)),
        ("keepalive no;", "keepalive", None),
        ("keepalive 10:3;", "keepalive", (10, 3)),
        ("keepalive 0:3;", "keepalive", None),
        ("keepalive 10:3; keepalive yes;", "keepalive", (10, 3)),
        ("speed 64;", "speed", (64, 64)),
        ("speed 256:128;", "speed", (256, 128)),
        ("speed 0;", "speed", (0, 0)),
        ("timeout 5;", "timeout", 5),
        ("persist yes;", "persist", "yes"),
        ("persist no;", "persist", "no"),
        ("persist keep;", "persist", "keep"),
        ("multi no;", "multi", "no"),
        ("multi deny;", "multi", "no"),
        ("multi allow;", "multi", "yes"),
        ("multi killold;", "multi", "killold"),
        ("stat yes;", "stat", True),
        ("stat no;", "stat", False),
        ("nat_hack client;", "nat_hack", "client"),
        ("nat_hack server;", "nat_hack", "server"),
        ("nat_hack no;", "nat_hack", "no"),
        ("delay_udp server;", "nat_hack", "server"),
        ("sslauth no;", "sslauth", False),
        ("sslauth yes;", "sslauth", True),
        ("vtmode no;", "vtmode", False),
        ("vtmode yes;", "vtmode", True),
        ("srcaddr { addr 10.0.0.1; port 4000; };", "srcaddr", Addr("10.0.0.1", None, 4000)),
        ("srcaddr { iface eth0; }", "srcaddr", Addr(None, "eth0", 0)),
        ('srcaddr { iface "eth0"; addr 1.2.3.4; };', "srcaddr", Addr("1.2.3.4", None, 0)),
    ],
)
def test_host_keyword(body: str, attr: str, value: object) -> None:
    assert getattr(host(body), attr) == value


def test_password_not_in_repr() -> None:
    h = host("passwd topsecret;")
    assert "topsecret" not in repr(h)
    assert "topsecret" not in repr(parse_config("h { passwd topsecret; }"))
    assert h.password_bytes() == b"topsecret"


def test_keyword_positions_recorded() -> None:
    h = parse_config("h {\n  passwd x;\n  compress lzo:9;\n}").hosts["h"]
    assert h.positions["compress"] == (3, 3)
    assert h.positions["passwd"] == (2, 3)
    assert h.raw["compress"] == "lzo:9"
    assert "passwd" not in h.raw


def test_persist_sets_global_once() -> None:
    cfg = parse_config("a { passwd x; persist keep; } b { passwd y; persist no; }")
    assert cfg.options.persist == "keep"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("compress zlib:x;", "unknown compression"),
        ("compress 3:zlib;", "unknown compression"),
        ("type tu.n;", "'type' takes a name"),
        ('proto "tcp";', "'proto' takes a plain value"),
        ("encrypt aes:5;", "'encrypt' takes yes, no"),
        ("keepalive maybe;", "'keepalive' takes yes, no or interval:count"),
        ("speed fast;", "'speed' takes kbit/s"),
        ("speed 1:2:3;", "'speed' takes kbit/s"),
        ("timeout -1;", "'timeout' needs a number"),
        ("timeout 99999999999999999999;", "'timeout' needs a number"),
        ("persist always;", "'persist' takes one of"),
        ("multi maybe;", "'multi' takes one of"),
        ("stat sometimes;", "'stat' takes yes or no"),
        ("nat_hack yes;", "'nat_hack' takes one of"),
        ("device;", "'device' needs a value"),
        ('device "";', "empty device name"),
        ("srcaddr { port 70000; };", "between 0 and 65535"),
        ("srcaddr { bogus 1; };", "unknown keyword 'bogus' in a srcaddr block"),
        ("up ifconfig;", "'up' takes a { } block"),
        ("up;", "'up' needs a { } block"),
        ("ppp /usr/sbin/pppd;", "'ppp' is not valid in a session section"),
        ("port 5000;", "'port' is not valid in a session section"),
        ("ipv6;", "'ipv6' is not valid in a session section"),
        ("compress { zlib; };", "'compress' does not take a { } block"),
    ],
)
def test_host_errors(body: str, fragment: str) -> None:
    (msg,) = error_messages(f"h {{ passwd pw; {body} }}")
    assert fragment in msg


# ----------------------------------------------------------------- up / down


def test_up_down_commands() -> None:
    text = """
options { ifconfig /opt/ifconfig; ppp /opt/pppd; }
h {
  passwd x;
  up {
    ifconfig "%% 10.0.0.1 pointopoint 10.0.0.2"; route "add -net 10.1.0.0"; ip "link set %d up";
    firewall "-A forward -j MASQ";
    ppp "noipdefault";
    program /bin/sh "-c 'tar cf - /etc/*'" wait;
    program "echo hi; echo there";
    program /usr/bin/logger;
  };
  down { ifcfg "%% down"; };
}
"""
    h = parse_config(text).hosts["h"]
    assert h.up == [
        Command("ifconfig", "/opt/ifconfig", "%% 10.0.0.1 pointopoint 10.0.0.2", True, 6),
        Command("route", "/sbin/route", "add -net 10.1.0.0", True, 6),
        Command("ip", "/sbin/ip", "link set %d up", True, 6),
        Command("firewall", "/sbin/ipchains", "-A forward -j MASQ", True, 7),
        Command("ppp", "/opt/pppd", "noipdefault", False, 8),
        Command("program", "/bin/sh", "-c 'tar cf - /etc/*'", True, 9),
        Command("program", None, "echo hi; echo there", False, 10),
        Command("program", "/usr/bin/logger", "", False, 11),
    ]
    assert h.down == [Command("ifconfig", "/opt/ifconfig", "%% down", True, 13)]


def test_command_path_is_taken_when_parsed_like_vtund() -> None:
    text = (
        'a { passwd x; up { ip "1"; }; }\noptions { ip /new/ip; }\nb { passwd x; up { ip "2"; }; }'
    )
    cfg = parse_config(text)
    assert cfg.hosts["a"].up[0].path == "/sbin/ip"
    assert cfg.hosts["b"].up[0].path == "/new/ip"


def test_quoted_strings_end_at_next_quote() -> None:
    h = host('up { ifconfig "a;b{c}#d"; route "x"; };')
    assert [c.args for c in h.up] == ["a;b{c}#d", "x"]


def test_up_again_replaces_list() -> None:
    h = host('up { ip "1"; ip "2"; }; up { ip "3"; };')
    assert [c.args for c in h.up] == ["3"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("up { ifconfig noquotes; };", "needs its arguments in double quotes"),
        ("up { program; };", "'program' needs a /path"),
        ('up { program /a /b "x"; };', "takes one path"),
        ('up { program "a" "b"; };', "one quoted argument string"),
        ('up { program /bin/x "a" later; };', "unexpected 'later' in 'program'"),
        ('up { passwd "x"; };', "'passwd' is not valid in an up/down block"),
        ('up { ifconfig "a" "b"; };', "takes one value"),
    ],
)
def test_command_errors(body: str, fragment: str) -> None:
    (msg,) = error_messages(f"h {{ passwd pw; {body} }}")
    assert fragment in msg


# ----------------------------------------------------------------- default section


def test_default_is_inherited_by_later_hosts_only() -> None:
    text = """
early { passwd e; }
default {
  passwd notinherited; type tun; proto udp; compress zlib:9; keepalive 10:2;
  srcaddr { addr 10.9.9.9; port 7; };
  up { ip "up %d"; };
}
late { passwd l; srcaddr { port 8; }; }
"""
    cfg = parse_config(text)
    early, late = cfg.hosts["early"], cfg.hosts["late"]
    assert (early.type, early.proto, early.compress, early.up) == ("tty", "tcp", None, [])
    assert (late.type, late.proto, late.compress, late.keepalive) == (
        "tun",
        "udp",
        ("zlib", 9),
        (10, 2),
    )
    assert late.passwd == "l"
    assert late.srcaddr == Addr("10.9.9.9", None, 8)
    assert cfg.default.srcaddr == Addr("10.9.9.9", None, 7)  # the copy is independent
    assert [c.args for c in late.up] == ["up %d"]
    assert late.positions["compress"] == (4, 45)  # inherited: points into default


def test_default_password_not_inherited() -> None:
    cfg = parse_config("default { passwd common; } h { type tun; }")
    assert cfg.hosts == {}
    assert "incomplete session definition 'h'" in cfg.warnings[0].message


def test_host_without_password_is_skipped_with_warning() -> None:
    cfg = parse_config("a { type tun; }\nb { passwd x; }")
    assert list(cfg.hosts) == ["b"]
    (w,) = cfg.warnings
    assert (w.line, w.col) == (1, 1)
    assert str(w).startswith("<string>:1:1: ignored incomplete session definition 'a'")


def test_redefined_session_last_wins_like_vtund() -> None:
    cfg = parse_config("h { passwd one; device tun1; }\nh { passwd two; device tun2; }")
    assert cfg.hosts["h"].device == "tun2"
    assert "redefined (previous definition at line 1)" in cfg.warnings[0].message


def test_session_named_like_a_keyword() -> None:
    assert parse_config("port { passwd x; }").hosts["port"].passwd == "x"


def test_invalid_session_name() -> None:
    (msg,) = error_messages("bad/name { passwd x; }")
    assert "invalid session name 'bad/name'" in msg


# ----------------------------------------------------------------- abbreviations


@pytest.mark.parametrize(
    ("body", "attr", "value"),
    [
        ("pass abc;", "passwd", "abc"),
        ("passw abc;", "passwd", "abc"),
        ("comp zlib:3;", "compress", ("zlib", 3)),
        ("encr yes;", "encrypt", 1),
        ("keep yes;", "keepalive", (30, 4)),
        ("keepal 5:5;", "keepalive", (5, 5)),
        ("pers keep;", "persist", "keep"),  # 'keep' here is the value
        ("mult killold;", "multi", "killold"),
        ("spee 8;", "speed", (8, 8)),
        ("devi tun9;", "device", "tun9"),
        ("prot udp;", "proto", "udp"),
        ("time 9;", "timeout", 9),
        ("nat_ client;", "nat_hack", "client"),
        ("dela server;", "nat_hack", "server"),
        ("ssla no;", "sslauth", False),
        ("vtmo no;", "vtmode", False),
        ("srca { addr 1.1.1.1; };", "srcaddr", Addr("1.1.1.1", None, 0)),
    ],
)
def test_abbreviated_host_keywords(body: str, attr: str, value: object) -> None:
    assert getattr(host(body), attr) == value


def test_abbreviated_everywhere() -> None:
    cfg = parse_config(
        "options { sysl user; time 7; bind { ifac lo; }; fire /x/fw; ifco /x/ifc; lock /l; }\n"
        'h { pass x; up { prog /bin/true; rout "r"; ifcf "i"; fire "f"; }; }'
    )
    o = cfg.options
    assert (o.syslog, o.timeout, o.bindaddr, o.firewall, o.ifconfig, o.lockdir) == (
        "user", 7, Addr(iface="lo"), "/x/fw", "/x/ifc", "/l",
    )  # fmt: skip
    assert [c.kind for c in cfg.hosts["h"].up] == ["program", "route", "ifconfig", "firewall"]


def test_exact_keyword_beats_longer_one() -> None:
    # 'stat' is a keyword and a prefix of 'statdir'
    assert host("stat yes;").stat is True
    assert options("statd /s;").statdir == "/s"


@pytest.mark.parametrize("word", ["pas", "com", "ke", "p"])
def test_too_short_abbreviation_is_unknown(word: str) -> None:
    (msg,) = error_messages(f"h {{ passwd x; {word} 1; }}")
    assert f"unknown keyword '{word}'" in msg


def test_values_and_section_names_are_not_abbreviated() -> None:
    assert "'persist' takes one of" in error_messages("h { passwd x; persist kee; }")[0]
    cfg = parse_config("opti { passwd x; }")  # a session called 'opti', not options
    assert list(cfg.hosts) == ["opti"]


def test_ambiguous_abbreviation_lists_candidates() -> None:
    table = {
        "keepalive": "keepalive",
        "keepout": "keepout",
        "passwd": "passwd",
        "password": "passwd",
    }
    with pytest.raises(
        KeywordError, match="ambiguous keyword 'keep': could be 'keepalive', 'keepout'"
    ):
        resolve_keyword("keep", table)
    assert resolve_keyword("pass", table) == "passwd"  # two spellings of one keyword
    assert resolve_keyword("keepa", table) == "keepalive"


def test_no_prefix_of_a_real_keyword_is_ambiguous() -> None:
    for spelling in SPELLINGS:
        shortest = len(spelling) if spelling in FULL_ONLY else MIN_ABBREV
        for n in range(shortest, len(spelling) + 1):
            resolve_keyword(spelling[:n])  # raises KeywordError if ambiguous
