"""In-session X25519 rekeying between two real vt processes, with short timers (the
test-only ``VT_TEST_SECURE_REKEY=2,3``: a new exchange every 2 s, keys refused after
3 s): traffic keeps flowing over several REJECT periods, so every exchange got through,
and both ends log the same epochs."""

from __future__ import annotations

import re
import time

import pytest
from netns import ping, two_hosts, wait_ping
from peers import VtClient, VtServer
from secure_tools import add_devices, client_conf, no_crash, server_conf

pytestmark = pytest.mark.netns


def epochs(text: str) -> list[int]:
    return [int(e) for e in re.findall(r"secure mode rekeyed.*?epoch=(\d+)", text)]


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_keys_renewed_while_traffic_flows(proto: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VT_TEST_SECURE_REKEY", "2,3")
    with two_hosts() as p:
        ta, _ = add_devices(p, "tun")
        with VtServer(p.a, server_conf(proto=proto)) as s, \
                VtClient(p.b, client_conf(), "t1", p.a_addr) as c:
            wait_ping(p.b, ta, timeout=15)
            start = time.monotonic()
            r = ping(p.b, ta, count=40, interval=0.2, timeout=15)  # 8 s: over 2 REJECTs
            assert time.monotonic() - start > 7.5
            assert r.received >= 38, r  # a refused key would lose everything after 3 s
            s.wait_log(r"secure mode rekeyed.*epoch=3", timeout=5)
            c.wait_log(r"secure mode rekeyed.*epoch=3", timeout=5)
            assert s.alive() and c.alive()
            assert ping(p.b, ta, count=3, interval=0.1).received == 3
            se, ce = epochs(s.log()), epochs(c.log())
            assert se == sorted(se) and ce == sorted(ce) and max(se) >= 3, (se, ce)
            assert "failed authentication" not in s.log() + c.log()
            no_crash(s, c)
