"""Proves the netns harness and the vtund driver with reference vtund <-> vtund tunnels."""

from __future__ import annotations

import os
import subprocess

import pytest
from netns import (
    HarnessError,
    Pair,
    iperf3,
    list_netns,
    loss,
    netns_usable,
    ping,
    transfer_file,
    two_hosts,
    wait_ping,
)
from peers import ConfigBuildError, VtundClient, VtundServer, vtund_conf

HOST = "hvt1"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _assert_gone(names: list[str], pids: list[int]) -> None:
    left = set(list_netns())
    assert not [n for n in names if n in left], f"namespaces left behind: {names}"
    assert not [p for p in pids if _pid_alive(p)], f"processes left behind: {pids}"


def _tunnel(pair: Pair, proto: str, **server_settings: object):
    """Pre-made tun devices on both sides; vtund server in A, vtund client in B."""
    ia, ib = pair.add_tunnel_devices("tvA", "tvB")
    scfg = vtund_conf(HOST, type="tun", proto=proto, device="tvA", **server_settings)
    ccfg = vtund_conf(HOST, device="tvB")
    return ia, ib, VtundServer(pair.a, scfg), ccfg


# --------------------------------------------------------------------------------------------
# No root needed


def test_vtund_conf_builds_full_keywords() -> None:
    text = vtund_conf(
        HOST, options={"port": 5123}, type="tun", proto="udp", device="tvA",
        compress="lzo:9", keepalive=True, up=['ip "link set %d up"', 'ip "addr show"'],
    )  # fmt: skip
    assert "  port 5123;" in text
    assert "  compress lzo:9;" in text and "  keepalive yes;" in text
    assert '    ip "link set %d up";\n    ip "addr show";\n  };' in text
    assert "passwd " in text


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"comp": "zlib:9"}, "unknown profile keyword"),
        ({"passwd": "12345"}, "numeric"),
        ({"device": "tv A"}, "single vtund word"),
    ],
)
def test_vtund_conf_rejects_what_vtund_misreads(kw: dict, msg: str) -> None:
    with pytest.raises(ConfigBuildError, match=msg):
        vtund_conf(HOST, **kw)


def test_require_env_turns_skip_into_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    import netns

    monkeypatch.setattr(netns, "_netns_ok", False)
    monkeypatch.setenv("VT_REQUIRE_NETNS", "1")
    with pytest.raises(pytest.fail.Exception, match="VT_REQUIRE_NETNS=1"):
        netns.requires_netns()
    monkeypatch.setenv("VT_REQUIRE_NETNS", "0")
    with pytest.raises(pytest.skip.Exception):
        netns.requires_netns()


# --------------------------------------------------------------------------------------------
# Namespaces


@pytest.mark.netns
@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
def test_two_hosts_ping_and_teardown(ipv6: bool) -> None:
    assert netns_usable()
    with two_hosts(ipv6=ipv6) as pair:
        names = [pair.a.name, pair.b.name]
        assert all(len(n) <= 15 for n in names)
        sleeper = pair.a.popen("sleep", "60")
        r = ping(pair.a, pair.b_addr, count=3)
        assert (r.sent, r.received) == (3, 3) and len(r.rtts) == 3
        # Nothing of ours appears in the root namespace.
        root_links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True)
        assert "veth0" not in root_links.stdout
    _assert_gone(names, [sleeper.pid])


@pytest.mark.netns
def test_nft_loss_drops_and_clears() -> None:
    with two_hosts() as pair:
        loss(pair.a, "veth0", 100)
        r = ping(pair.a, pair.b_addr, count=3, interval=0.2, timeout=1)
        assert r.received == 0
        loss(pair.a, "veth0", 5)
        rules = pair.a.run("nft", "list", "table", "inet", "vtloss_veth0").stdout
        assert "numgen random mod 100 < 5" in rules
        loss(pair.a, "veth0", 0)
        assert ping(pair.a, pair.b_addr, count=2).received == 2


@pytest.mark.netns
def test_wait_ping_is_bounded() -> None:
    with two_hosts() as pair:
        with pytest.raises(HarnessError, match=r"no ping reply .*\(last: (no answer|From .*)\)"):
            unused = pair.b_addr.rsplit(".", 1)[0] + ".9"  # in the veth subnet, nobody has it
            wait_ping(pair.a, unused, timeout=1.5)


# --------------------------------------------------------------------------------------------
# vtund <-> vtund


@pytest.mark.netns
@pytest.mark.vtund
@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_vtund_to_vtund_tun(proto: str) -> None:
    with two_hosts() as pair:
        names = [pair.a.name, pair.b.name]
        ia, ib, server, ccfg = _tunnel(pair, proto)
        with server, VtundClient(pair.b, ccfg, HOST, pair.a_addr) as client:
            wait_ping(pair.b, ia)
            r = ping(pair.b, ia, count=5)
            assert (r.sent, r.received) == (5, 5)
            assert ping(pair.a, ib, count=3).received == 3
            assert transfer_file(pair.b, pair.a, ia, nbytes=1 << 20)
            assert transfer_file(pair.a, pair.b, ib, nbytes=1 << 20)
            if proto == "tcp":
                res = iperf3(pair.a, pair.b, ia, seconds=2)
                assert res["bits_per_second"] > 1e6, res
            server.wait_log(rf"Session {HOST}\[{pair.b_addr}:\d+\] opened")
            pids = [server.proc.pid, client.proc.pid]
        assert not server.alive() and not client.alive()
    _assert_gone(names, pids)


@pytest.mark.netns
@pytest.mark.vtund
@pytest.mark.parametrize(
    "settings, flags, logline",
    [
        ({"encrypt": "aes128cbc"}, "<TuE10>", r"AES-128-CBC encryption initialized"),
        ({"compress": "lzo:9"}, "<TuL9>", r"LZO compression\[level 9\] initialized"),
    ],
    ids=["aes128cbc", "lzo9"],
)
def test_vtund_to_vtund_frame_modules(settings: dict, flags: str, logline: str) -> None:
    with two_hosts() as pair:
        ia, ib, server, ccfg = _tunnel(pair, "tcp", **settings)
        with server, VtundClient(pair.b, ccfg, HOST, pair.a_addr) as client:
            wait_ping(pair.b, ia)
            assert ping(pair.b, ia, count=3).received == 3
            assert transfer_file(pair.b, pair.a, ia, nbytes=256 << 10)
            server.wait_log(logline)
            client.wait_log(logline)
            client.wait_log(f"Remote Server sends {flags}")


def test_interop_report_shows_the_failed_settings_logs() -> None:
    """Labels carry colons (``lzo:4``): the report must still find that setting's client."""
    from interop_lib import Profile, report

    class Peer:
        def __init__(self, text: str) -> None:
            self.text = text

        def log(self) -> str:
            return self.text

    profiles = [Profile("m09", label="lzo:1"), Profile("m12", label="lzo:4"),
                Profile("m13", label="lzo:4+aes")]
    for p in profiles:
        p.client = Peer(f"client {p.name} said hello\n")
    server = Peer("x host=m09 up\ny host=m12 failed\nz host=m13 up\n")
    text = report("case", ["lzo:4: no tunnel: [b] no ping reply"], server, profiles)
    assert "client m12 said hello" in text
    assert "client m13" not in text and "client m09" not in text
    assert "lines of m12 ---\ny host=m12 failed\n" in text
