"""docs/examples/vt-zstd as a third party ships it, and the negotiation that lets a plugin
compressor run between two vt ends only (issue 14 items 3 and 6).

zstd has no letter in vtund's ``OK FLAGS``: a vt client offers it by name in its HOST line,
the server confirms it by name in its features; every other peer is refused before the
session, with a line in both logs (vtund/runtime/native.py).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from plugin_dist import (
    carries_both_ways,
    install_example,
    run_example_tests,
    vt,
    with_site,
)
from test_plugins_words import handshake

from vtcore.config import parse_config
from vtcore.protocol.events import Accepted, Denied, Reject
from vtcore.protocol.handshake import MAX_TEXT, ClientHandshake, ServerHandshake
from vtcore.runtime.native import (
    HOST_TOKEN,
    compressor_offer,
    confirmation_error,
    refusal,
    server_features,
)
from vtcore.runtime.session import client_settings, server_flags, server_settings

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "vt-zstd"
HOST = parse_config("zt { passwd x; type tun; proto tcp; compress zstd:7; }").hosts["zt"]
OFFER = compressor_offer(["lzo", "zlib", "zstd"], None, 40)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The example's wheel and zstandard (its own dependency), installed alone."""
    target = install_example(EXAMPLE, tmp_path_factory.mktemp("vtzstd"))
    assert (target / "vt_zstd" / "plugin.py").is_file() and (target / "zstandard").is_dir()
    return target


# ------------------------------------------------------------------ negotiation, sans I/O


def test_the_client_offers_its_plugin_compressors_and_the_server_confirms_by_name() -> None:
    assert OFFER == ("c=zstd",)  # zlib and lzo travel as C/L, never offered
    tokens = (HOST_TOKEN, *OFFER)
    assert refusal(HOST, tokens) is None
    features = server_features(HOST, tokens)
    assert features == "no+zstd:7"
    assert server_flags(HOST, features) == "<TuFno+zstd:7>"  # no C/L letter
    flags = handshake(ClientHandshake("zt", b"x", host_extra=tokens), server_flags(HOST, features))
    assert isinstance(flags, Accepted)
    client = client_settings(HOST, flags.flags)
    assert client.compress == server_settings(HOST, features).compress == ("zstd", 7)
    assert client.native and client.offload  # letters still read
    assert confirmation_error("zstd", tokens, features, "srv") is None
    assert confirmation_error(None, tokens, features, "srv") is None  # the server dictates


@pytest.mark.parametrize("tokens", [(), (HOST_TOKEN,), ("c=zstd",), (HOST_TOKEN, "c=lz4")])
def test_a_peer_that_did_not_offer_it_is_refused(tokens) -> None:
    assert refusal(HOST, tokens) == (
        "host zt needs compress zstd, which the peer does not offer",
        "needs compress zstd, not offered")
    vtund_host = parse_config("zt { passwd x; type tun; compress zlib:9; }").hosts["zt"]
    assert refusal(vtund_host, tokens) is None


def test_a_client_stops_when_its_compressor_is_not_confirmed() -> None:
    vtund = "host needs compress zstd, which srv did not confirm (vtund, or vt without the " \
            "plugin that provides it)"
    assert confirmation_error("zstd", (HOST_TOKEN, *OFFER), "", "srv") == vtund
    assert confirmation_error("zstd", (HOST_TOKEN, *OFFER), "no", "srv") == vtund
    assert confirmation_error(None, (HOST_TOKEN,), "no+zstd:3", "srv") == (
        "srv needs compress zstd, which this client does not offer (no plugin here provides it)")


def test_the_offer_fits_the_host_line() -> None:
    assert compressor_offer(["br", "zstd"], "zstd", 20) == ("c=zstd,br",)
    assert compressor_offer(["br", "zstd"], "zstd", 8) == ("c=zstd",)
    assert compressor_offer(["br", "zstd"], None, 3) == ()
    long_host = "h" * 30
    room = MAX_TEXT - len(f"HOST: {long_host} {HOST_TOKEN} \n")
    words = f"HOST: {' '.join((long_host, HOST_TOKEN, *compressor_offer(['zstd'], 'zstd', room)))}\n"
    assert len(words) <= MAX_TEXT


def test_the_reason_after_err_goes_to_a_vt_client_only() -> None:
    for extra, told in [((HOST_TOKEN,), "needs compress zstd, not offered"), ((), "")]:
        server = ServerHandshake()
        client = ClientHandshake("zt", b"x", host_extra=extra)
        client.receive_data(server.data_to_send())
        server.receive_data(client.data_to_send())
        server.next_event()
        block = server.send(Reject("needs compress zstd, not offered"))
        assert block.rstrip(b"\0") == (f"ERR {told}\n" if told else "ERR\n").encode()
        client.receive_data(block)
        assert client.next_event() == Denied(told)


# ------------------------------------------------------------------ the distribution


def test_installed_listed_and_its_own_tests_pass(site: Path, tmp_path: Path) -> None:
    listed = {p["name"]: p for p in json.loads(vt(["plugins", "list", "--json"], site).stdout)}
    z = listed["zstd"]
    assert (z["distribution"], z["status"], z["builtin"]) == ("vt-zstd", "loaded", False)
    assert "zstd" not in {p["name"] for p in json.loads(
        vt(["plugins", "list", "--json"], None).stdout)}
    summary = run_example_tests(EXAMPLE, site, "vt_zstd", tmp_path)
    assert int(summary.split()[0]) >= 10, summary


# ------------------------------------------------------------------ live, in namespaces


def config(device: str, **settings: object) -> str:
    from peers import vtund_conf

    return vtund_conf("zt", type="tun", device=device, **settings)


def compressible(nbytes: int) -> bytes:
    """Log-like text: zstd shrinks it several times, unlike random bytes."""
    rnd = random.Random(14)
    words = [b"session", b"frames", b"zstd", b"tunnel", b"bytes", b"host", b"up", b"down"]
    out = bytearray()
    while len(out) < nbytes:
        out += b" ".join(rnd.choice(words) for _ in range(12)) + b" %d\n" % rnd.randrange(10**6)
    return bytes(out[:nbytes])


def tx_bytes(ns, dev: str) -> int:
    return int(ns.run("cat", f"/sys/class/net/{dev}/statistics/tx_bytes").stdout)


@pytest.mark.netns
@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_vt_to_vt_tunnel_compresses_with_zstd(site: Path, proto: str) -> None:
    """A file byte-identical and iperf3 both ways; the compressible file takes a fraction
    of its size on the wire; both logs name zstd.  Over udp the client's host says no
    ``compress``: the server dictates, the client's installed plugin answers."""
    from netns import transfer_file, two_hosts, wait_ping
    from peers import VtClient, VtServer

    with two_hosts() as p:
        ta, tb = p.add_tunnel_devices("zsrv", "zcli")
        scfg = config("zsrv", proto=proto, compress="zstd:3")
        ccfg = config("zcli", **({"compress": "zstd:3"} if proto == "tcp" else {}))
        with with_site(VtServer, site)(p.a, scfg) as server, \
                with_site(VtClient, site)(p.b, ccfg, "zt", p.a_addr) as client:
            wait_ping(p.b, ta, timeout=15)
            for peer in (server, client):
                peer.wait_log(r"session up.*compress=zstd:3.*modules=\['zstd'", timeout=10)
            text = compressible(1 << 20)
            before = tx_bytes(p.b, p.dev)
            assert transfer_file(p.b, p.a, ta, data=text)
            assert tx_bytes(p.b, p.dev) - before < len(text) // 2  # udp: per packet
            carries_both_ways(p, ta, tb, server, client)
        for peer in (server, client):
            assert "Traceback" not in peer.log()


@pytest.mark.netns
@pytest.mark.vtund
def test_vtund_and_vt_without_the_plugin_are_refused_on_both_sides(site: Path) -> None:
    """vt server wanting zstd: a vtund client and a vt client lacking vt-zstd get ERR, the
    server says why; a vt client wanting zstd: a vtund server never confirms it."""
    from netns import two_hosts
    from peers import VtClient, VtServer, VtundClient, VtundServer, requires_vtund

    requires_vtund()
    refused = (r"denied: feature not offered.*host zt needs compress zstd, which the peer "
               r"does not offer")
    with two_hosts() as p:
        p.add_tunnel_devices("zsrv", "zcli")
        with with_site(VtServer, site)(p.a, config("zsrv", compress="zstd:3")) as server:
            with VtundClient(p.b, config("zcli"), "zt", p.a_addr, expect_exit=True) as vtund:
                server.wait_log(refused, timeout=10)
                vtund.wait_log(r"Connection denied by", timeout=10)
            with VtClient(p.b, config("zcli"), "zt", p.a_addr, expect_exit=True) as bare:
                bare.wait_log(r"connection denied by .*: needs compress zstd, not offered",
                              timeout=10)
            assert server.log().count("needs compress zstd") >= 2
            assert server.alive()
        with VtundServer(p.a, config("zsrv")) as vtund, \
                with_site(VtClient, site)(p.b, config("zcli", compress="zstd:3"), "zt",
                                          p.a_addr, expect_exit=True) as client:
            client.wait_log(r"host needs compress zstd, which \S+ did not confirm \(vtund",
                            timeout=10)
            vtund.wait_log(r"Session zt closed", timeout=10)  # vtund logs no reasons
            assert "session up" not in client.log()


@pytest.mark.netns
def test_secure_mode_carries_the_agreement_too(site: Path) -> None:
    """With ``encrypt aead`` the features travel inside the secure handshake: zstd runs
    between two vt-zstd ends; a client without the plugin learns it only after the
    handshake (no refusal before authentication), and both ends say why."""
    from netns import two_hosts, wait_ping
    from peers import VtClient, VtServer

    with two_hosts() as p:
        ta, _ = p.add_tunnel_devices("zsrv", "zcli")
        scfg = config("zsrv", compress="zstd:3", encrypt="aead")
        ccfg = config("zcli", encrypt="aead")
        with with_site(VtServer, site)(p.a, scfg) as server:
            with with_site(VtClient, site)(p.b, ccfg, "zt", p.a_addr) as client:
                wait_ping(p.b, ta, timeout=15)
                for peer in (server, client):
                    peer.wait_log(r"session up.*compress=zstd:3.*modules=\['zstd'", timeout=10)
            with VtClient(p.b, ccfg, "zt", p.a_addr, expect_exit=True) as bare:
                bare.wait_log(r"secure mode established", timeout=10)
                bare.wait_log(r"\S+ needs compress zstd, which this client does not offer",
                              timeout=10)
                server.wait_log(r"denied: feature not offered.*host zt needs compress zstd, "
                                r"which the peer does not offer", timeout=10)
                assert "session up" not in bare.log()
