"""Real-world configs parse: Debian's vtun examples and vt's founding example."""

from __future__ import annotations

import glob
import gzip
import os

import pytest

from vtcore.config import Addr, Config, load_config, parse_config

DEBIAN = "/usr/share/doc/vtun/examples"
SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "examples")
if not os.path.isdir(SHARED):
    SHARED = "/work/shared/examples"


def _need(path: str) -> None:
    if not os.path.exists(path):
        if os.environ.get("VT_REQUIRE_NETNS"):
            pytest.fail(f"{path} is missing (install the 'vtun' Debian package)")
        pytest.skip(f"{path} not present (Debian package 'vtun' not installed)")


def _load(path: str) -> Config:
    _need(path)
    if path.endswith(".gz"):
        with gzip.open(path) as f:
            return parse_config(f.read().decode("utf-8", "surrogateescape"), path)
    return load_config(path)


DEBIAN_FILES = [
    "vtund-server.conf",
    "vtund-client.conf",
    "vtund-ipv6-server.conf",
    "vtund-ipv6-client.conf",
    "vtund.conf.gz",
]


@pytest.mark.parametrize("name", DEBIAN_FILES)
def test_debian_example_parses(name: str) -> None:
    cfg = _load(os.path.join(DEBIAN, name))
    assert cfg.hosts
    for h in cfg.hosts.values():
        assert h.passwd
    # the only warnings: deliberate redefinitions ("same as above, but with ip") and, in
    # the combined file, the client's 'port' after the server's (vtund keeps the first)
    for w in cfg.warnings:
        assert "redefined" in w.message or "'port' was already set" in w.message, w


def test_every_debian_conf_file_is_covered() -> None:
    _need(DEBIAN)
    present = {os.path.basename(p) for p in glob.glob(os.path.join(DEBIAN, "*.conf*"))}
    assert present <= set(DEBIAN_FILES)


def test_debian_server_values() -> None:
    cfg = _load(os.path.join(DEBIAN, "vtund-server.conf"))
    o = cfg.options
    assert (o.port, o.bindaddr, o.syslog, o.firewall) == (
        5000,
        Addr(iface="lo"),
        "daemon",
        "/sbin/ipchains",
    )
    assert list(cfg.hosts) == ["cobra", "lion", "viper", "backup", "sz"]
    cobra = cfg.hosts["cobra"]
    assert cobra.passwd == "Ma&^TU"
    assert (cobra.type, cobra.proto, cobra.compress, cobra.encrypt) == ("tun", "udp", ("lzo", 9), 1)
    assert cobra.keepalive == (30, 4)
    # the second 'cobra' (iproute2 variant) is the one vtund uses
    assert [(c.kind, c.path) for c in cobra.up] == [("ip", "/sbin/ip"), ("ip", "/sbin/ip")]
    lion = cfg.hosts["lion"]
    assert (lion.device, lion.stat, lion.compress) == ("tap0", True, ("lzo", 1))
    assert [c.kind for c in lion.up] == ["ifconfig", "route", "firewall"]
    assert [c.kind for c in lion.down] == ["ifconfig", "firewall"]
    assert cfg.hosts["viper"].compress == ("zlib", 1)
    assert cfg.hosts["viper"].up[0].kind == "ppp"
    assert cfg.hosts["backup"].speed == (256, 128)
    assert cfg.hosts["backup"].up[0].args == "-c 'tar cf - /etc/*'"
    assert cfg.hosts["sz"].speed == (64, 64)


def test_debian_client_values() -> None:
    cfg = _load(os.path.join(DEBIAN, "vtund-client.conf"))
    assert cfg.options.timeout == 60
    cobra = cfg.hosts["cobra"]
    assert (cobra.device, cobra.persist) == ("tun1", "yes")
    assert cfg.options.persist == "yes"
    assert cfg.hosts["backup"].up[0].args == "-c 'cd /tmp; tar xf -"


def test_debian_ipv6_values() -> None:
    cfg = _load(os.path.join(DEBIAN, "vtund-ipv6-server.conf"))
    h = cfg.hosts["big-buck-bunny-ipv6"]
    assert cfg.options.syslog == "user"
    assert (h.compress, h.encrypt, h.keepalive, h.stat, h.speed) == (
        ("zlib", 1),
        1,
        (30, 4),
        True,
        (0, 0),
    )
    assert h.up[1].args == "-6 addr add fc00:170:0:6a::1/112 dev %d"


def test_shared_serv_conf() -> None:
    path = os.path.join(SHARED, "serv.conf")
    _need(path)
    cfg = load_config(path)
    conn = cfg.hosts["conn"]
    assert (conn.passwd, conn.type, conn.proto, conn.keepalive) == ("tan5", "tun", "udp", (30, 4))
    assert [c.kind for c in conn.up] == ["ifconfig", "route"]
    assert conn.up[0].args == "%% 192.168.0.2 pointtopoint 192.168.0.1"
    assert cfg.warnings == []


def test_shared_cli_conf() -> None:
    path = os.path.join(SHARED, "cli.conf")
    _need(path)
    cfg = load_config(path)
    conn = cfg.hosts["conn"]
    assert conn.passwd == "tan5"  # written 'pass tan5;'
    assert conn.positions["passwd"] == (3, 2)
    assert [c.path for c in conn.up] == ["/sbin/ifconfig", "/sbin/route"]
    assert cfg.warnings == []
