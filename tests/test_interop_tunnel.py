"""The tunnel, for real: vt and Debian's vtund against each other in network namespaces.

Every (server, client) pairing of vt and vtund, over tcp and udp, for ``type tun`` and
``type ether``: pings with no loss, iperf3 both ways, a 2 MB file byte-identical both ways,
with and without keep-alive -- two profiles of one server, up at the same time.  Where a vt
side takes part, a third profile has vt create its own device and address it in ``up {}``,
which shows the up commands run before traffic reaches the device.  See tests/INTEROP.md.
"""

from __future__ import annotations

import re
import time

import pytest
from interop_lib import PORT, Plan, Profile, report, run_checks, tunnels
from netns import HarnessError, ping, two_hosts, wait_ping

PAIRS = [("vt", "vtund"), ("vtund", "vt"), ("vt", "vt")]
KEEPALIVE = "2:3"
FILE_2MB = 2 << 20


def _cases() -> list:
    cases = []
    for server, client in PAIRS:
        marks = [pytest.mark.netns]
        if "vtund" in (server, client):
            marks.append(pytest.mark.vtund)
        for transport in ("tcp", "udp"):
            for ttype in ("tun", "ether"):
                cases.append(pytest.param(
                    server, client, transport, ttype, marks=marks,
                    id=f"{server}-srv-{client}-cli-{transport}-{ttype}",
                ))  # fmt: skip
    return cases


@pytest.mark.parametrize("server, client, transport, ttype", _cases())
def test_tunnel(server: str, client: str, transport: str, ttype: str) -> None:
    profiles = [
        Profile("plain", label="no keepalive"),
        Profile("kalive", {"keepalive": KEEPALIVE}, label=f"keepalive {KEEPALIVE}"),
    ]
    if "vt" in (server, client):
        profiles.append(Profile("vtdev", label="vt-made device + up{}", vt_makes_device=True))
    with two_hosts() as pair, tunnels(pair, server, client, transport, ttype, profiles) as srv:
        plan = Plan(file_bytes=FILE_2MB, iperf=True, iperf_workers=len(profiles))
        failures = run_checks(pair, profiles, plan)
        case = f"{server} server <- {client} client, {transport}, {ttype}"
        assert not failures, report(case, failures, srv, profiles)
        made = next(p for p in profiles if p.vt_makes_device)
        _check_up_ran_first(made, srv if server == "vt" else made.client)


def _check_up_ran_first(profile: Profile, vt_peer: object) -> None:
    """Stopped, the vt side's session counters show no packet hit the device before up{}.

    The up list starts with a one-second sleep while the peer already pings: vtund would
    write those packets to a device that is still down (EIO); vt holds the tunnel until
    its up commands are done, so nothing is dropped at the device.
    """
    vt_peer.stop()  # type: ignore[attr-defined]
    log = vt_peer.log()  # type: ignore[attr-defined]
    lines = [ln for ln in log.splitlines()
             if "session closed" in ln and re.search(rf"\bhost={profile.name}\b", ln)]
    assert lines, f"no 'session closed' for {profile.name}:\n{log[-2000:]}"
    dropped = re.search(r"\bdropped_device=(\d+)", lines[-1])
    byte_in = re.search(r"\bbyte_in=(\d+)", lines[-1])
    assert dropped and byte_in, lines[-1]
    assert int(byte_in.group(1)) > 0, lines[-1]
    assert int(dropped.group(1)) == 0, f"packets reached the device before up{{}}: {lines[-1]}"


KEEPALIVE_IDLE = "1:1"
"""Dead after ~(1 + 2) * (1 + 1) = 6 s of silence: an unanswered peer would not survive."""
IDLE_SECONDS = 9


@pytest.mark.netns
@pytest.mark.vtund
def test_keepalive_survives_silence() -> None:
    """vt and vtund answer each other's keep-alive probes through 9 silent seconds.

    vt server <- vtund client and vtund server <- vt client, tcp and udp, all at once.  IPv6
    is off on the tunnel devices so nothing but ECHO frames crosses while the test is idle.
    """
    with two_hosts() as pair:
        for ns in (pair.a, pair.b):
            ns.run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
            ns.run("sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")
        sides = {}
        for server, client, tag in (("vt", "vtund", "a"), ("vtund", "vt", "b")):
            sides[server] = [
                Profile(f"ka{tag}{proto}", {"keepalive": KEEPALIVE_IDLE, "proto": proto},
                        label=f"{server} server <- {client} client {proto}")
                for proto in ("tcp", "udp")
            ]
        with (
            tunnels(pair, "vt", "vtund", "tcp", "tun", sides["vt"], PORT, "a") as vt_srv,
            tunnels(pair, "vtund", "vt", "tcp", "tun", sides["vtund"], PORT + 1, "b") as vd_srv,
        ):
            profiles = sides["vt"] + sides["vtund"]
            for p in profiles:
                wait_ping(pair.b, p.srv_ip, 20)
            time.sleep(IDLE_SECONDS)
            failures = []
            for p in profiles:
                try:
                    r = ping(pair.b, p.srv_ip, count=3)
                    if r.received != r.sent:
                        failures.append(f"{p.label}: {r.received}/{r.sent} after idle")
                except HarnessError as e:
                    failures.append(f"{p.label}: {e}")
                if not p.client.alive():  # type: ignore[attr-defined]
                    failures.append(f"{p.label}: client exited during the idle time")
            for srv in (vt_srv, vd_srv):
                if not srv.alive():  # type: ignore[attr-defined]
                    failures.append(f"{srv.kind} exited")  # type: ignore[attr-defined]
            logs = vt_srv.log() + "".join(p.client.log() for p in sides["vtund"])  # type: ignore[attr-defined]
            if "keep-alive" in logs or "network timeout" in logs:
                failures.append("a vt side timed out:\n" + logs[-2000:])
            assert not failures, report("keep-alive idle", failures, vt_srv, profiles)
