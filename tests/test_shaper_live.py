"""vt-shaper for real: iperf3 through a shaped vt tunnel stays near the setting.

vtund's ``speed IN:OUT`` is in kbit/s and limits what each side *sends*: the server
sends to the client at IN, the client (told ``S<OUT>``) sends at OUT -- measured against
the real vtund (docs/vtund-facts.md) and asserted here for vt in both roles.  The measured TCP goodput must stay within
10% of the setting from 256 kbit/s to 50 Mbit/s, in both directions, and the tunnel
itself must drop nothing (the shaper pauses the device instead).
"""

from __future__ import annotations

import re

import pytest
from netns import iperf3, two_hosts, wait_ping
from peers import SERVERS, VtClient, VtServer, requires_vtund, vtund_conf

pytestmark = [pytest.mark.netns]


def _seconds(kbps: int) -> int:
    """Long enough to move about 200 KB or more: what is still queued at either end when
    iperf3 stops (socket buffers, the tun queue, the shaper's burst) is a few KB, which
    is +-10% of a 3-second run at 256 kbit/s but +-4% of a 6-second one."""
    return 6 if kbps < 1000 else 3


def _received_rate(result: dict) -> float:
    """What the receiver got over the whole run (the sender's interval figures count
    bytes put into socket buffers, not bytes through the shaper)."""
    return result["bits_per_second"]


def _measure(pair, ta: str, reverse: bool, kbps: int) -> float:
    """Ratio of measured goodput to the setting; one re-measure if the first is off (a
    loaded machine can starve the daemons for a moment)."""
    ratio = 0.0
    for _ in range(2):
        ratio = _received_rate(iperf3(pair.a, pair.b, ta, seconds=_seconds(kbps), reverse=reverse))
        ratio /= kbps * 1000
        if 0.9 <= ratio <= 1.1:
            break
    return ratio


def _conf(speed: str, device: str) -> str:
    return (
        "options { timeout 10; }\n"
        f"sh {{\n  passwd Shaper-pw1;\n  type tun;\n  proto tcp;\n  device {device};\n"
        f"  speed {speed};\n}}\n"
    )


@pytest.mark.parametrize("kbps", [256, 2048, 10000, 50000])
def test_shaped_rate_within_ten_percent(kbps: int) -> None:
    with two_hosts() as pair:
        ta, tb = pair.add_tunnel_devices("shs", "shc", mtu=1400)
        cli_conf = "options { timeout 10; }\nsh {\n  passwd Shaper-pw1;\n  device shc;\n}\n"
        with VtServer(pair.a, _conf(str(kbps), "shs")) as srv, \
                VtClient(pair.b, cli_conf, "sh", pair.a_addr) as cli:
            wait_ping(pair.b, ta, timeout=20)
            up = _measure(pair, ta, False, kbps)
            down = _measure(pair, ta, True, kbps)
            for name, ratio in (("client->server", up), ("server->client", down)):
                assert 0.9 <= ratio <= 1.1, f"{name}: {ratio:.2f} x the setting ({kbps} kbit/s)"
            cli.stop()
            srv.stop()
            for peer in (srv, cli):
                closed = [ln for ln in peer.log().splitlines() if "session closed" in ln]
                assert closed, peer.log()[-2000:]
                drops = {k: int(v) for k, v in re.findall(r"(dropped_\w+)=(\d+)", closed[-1])}
                assert drops and not any(drops.values()), closed[-1]


@pytest.mark.parametrize("server", ["vt", pytest.param("vtund", marks=pytest.mark.vtund)])
def test_speed_in_out_direction_as_vtund(server: str) -> None:
    """``speed 256:2048`` on the server: 256 kbit/s from the server to the client, 2048
    from the client to the server, as a vtund server measured (vtund-facts.md); the vt
    client paces its side from the server's ``S`` flag whichever server it is."""
    if server == "vtund":
        requires_vtund()
    with two_hosts() as pair:
        ta, _ = pair.add_tunnel_devices("sds", "sdc", mtu=1400)
        srv_conf = vtund_conf("sd", type="tun", proto="tcp", device="sds", speed="256:2048")
        cli_conf = vtund_conf("sd", type="tun", proto="tcp", device="sdc")
        with SERVERS[server](pair.a, srv_conf), VtClient(pair.b, cli_conf, "sd", pair.a_addr):
            wait_ping(pair.b, ta, timeout=20)
            up = _measure(pair, ta, False, 2048)
            down = _measure(pair, ta, True, 256)
    assert 0.85 <= up <= 1.15, f"client->server: {up:.2f} x 2048 kbit/s"
    assert 0.85 <= down <= 1.15, f"server->client: {down:.2f} x 256 kbit/s"
