"""``stat yes``: vtund-format counter lines in ``statdir/<host>``, the first after
min(keepalive interval, 300) s -- 2 s with ``keepalive 2:3``."""

from __future__ import annotations

import re
import shutil
import time

import pytest
from behaviour import HOST, assert_no_secret, conf, tmpdir, wait_for
from netns import ping, two_hosts, wait_ping
from peers import VtClient, VtServer

LINE = re.compile(r"^[A-Z][a-z]{2} \d{2} \d{2}:\d{2}:\d{2} (\d+) (\d+) (\d+) (\d+)$")


def _lines(path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


@pytest.mark.netns
def test_stat_file_written_after_keepalive_interval() -> None:
    d = tmpdir()
    try:
        with two_hosts() as p:
            ta, tb = p.add_tunnel_devices()
            sdir, cdir = d / "srv", d / "cli"
            scfg = conf(HOST, vt_options={"statdir": sdir}, type="tun", proto="tcp",
                        device="tsrv", keepalive="2:3", stat=True)
            ccfg = conf(HOST, vt_options={"statdir": cdir}, device="tcli", keepalive="2:3",
                        stat=True)
            with VtServer(p.a, scfg) as s, VtClient(p.b, ccfg, HOST, p.a_addr) as c:
                c.wait_log("session up", timeout=10)
                up_at = time.monotonic()
                wait_ping(p.b, ta, timeout=5)
                r = ping(p.b, ta, count=5, interval=0.1)
                assert r.received == 5
                wait_for(lambda: _lines(sdir / HOST) and _lines(cdir / HOST), 5, "stat lines")
                first_after = time.monotonic() - up_at
                assert first_after <= 4, first_after
                for path in (sdir / HOST, cdir / HOST):
                    lines = _lines(path)
                    assert len(lines) == 1, lines  # the next one is 300 s away
                    m = LINE.match(lines[0])
                    assert m, lines[0]
                    byte_in, byte_out, comp_in, comp_out = map(int, m.groups())
                    # 5+ pings of 84 bytes each way, no compression: comp == bytes.
                    assert byte_in >= 5 * 84 and byte_out >= 5 * 84, lines[0]
                    assert (comp_in, comp_out) == (byte_in, byte_out), lines[0]
                assert_no_secret(s, c)
    finally:
        shutil.rmtree(d, ignore_errors=True)
