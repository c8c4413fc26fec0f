"""Persistent clients come back after the server dies; keep-alive ends silent sessions.

* ``persist yes`` / ``-p``: SIGKILL the server, restart it, the session is back within
  seconds (the dead server's ``multi no`` lock is stale, not a refusal); the client's
  ``up`` and ``down`` lists ran equally often.
* ``persist keep``: the client's device (made by vt, not pre-made) keeps its ifindex across
  reconnects; with ``persist yes`` it is a new device each time.
* ``keepalive 2:2``: a server that goes silent (SIGSTOP) is given up after about
  (2+2)*(2+1) = 12 s; the client logs a network timeout and reconnects once it is back.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import time

import pytest
from behaviour import (
    HOST,
    assert_no_secret,
    conf,
    count_lines,
    frozen,
    ifindex,
    tmpdir,
    wait_for,
)
from netns import two_hosts, wait_ping
from peers import VtClient, VtServer, VtundClient


class PersistClient(VtClient):
    """``vt run ... -p``."""

    def argv(self):
        return [*super().argv(), "-p"]


def _updown(path) -> dict[str, list[str]]:
    return {
        "up": [f"program /bin/sh \"-c 'echo up >> {path}'\" wait"],
        "down": [f"program /bin/sh \"-c 'echo down >> {path}'\" wait"],
    }


@pytest.mark.netns
@pytest.mark.parametrize("persist", ["yes", "keep", "-p"])
def test_client_reconnects_after_server_killed(persist: str) -> None:
    d = tmpdir()
    marks = d / "client-updown"
    try:
        with two_hosts() as p:
            ta, tb = p.tunnel_addrs()
            p.a.add_tun("tsrv", addr=ta, peer=tb)
            # multi no: the killed server's lock (dead PID) is stale and must not block.
            scfg = conf(HOST, vt_options={"lockdir": d / "locks"}, type="tun", proto="tcp",
                        device="tsrv", multi="no")
            # The client's device is made by vt (so it can vanish); up commands address it.
            ud = _updown(marks)
            up = [f'ip "addr add {tb} peer {ta} dev %d"', 'ip "link set %d up"', *ud["up"]]
            settings = {"persist": persist} if persist != "-p" else {}
            ccfg = conf(HOST, device="tcli", up=up, down=ud["down"], **settings)
            client_cls = PersistClient if persist == "-p" else VtClient
            s = VtServer(p.a, scfg).start()
            try:
                with client_cls(p.b, ccfg, HOST, p.a_addr) as c:
                    wait_ping(p.b, ta, timeout=10)
                    first = ifindex(p.b, "tcli")
                    assert first is not None
                    os.kill(s.proc.pid, signal.SIGKILL)
                    s.proc.wait(timeout=5)
                    killed_at = time.monotonic()
                    c.wait_log(r"session closed.*reason=", timeout=5)
                    s.stop()
                    s = VtServer(p.a, scfg).start()
                    wait_ping(p.b, ta, timeout=15)
                    back_after = time.monotonic() - killed_at
                    assert back_after < 10, back_after
                    second = ifindex(p.b, "tcli")
                    if persist == "keep":
                        assert second == first, "persist keep must keep the device"
                    else:
                        assert second != first, "without keep the device is made anew"
                    assert c.alive()
                    wait_for(lambda: count_lines(marks, "up") == 2, 5, "second up")
                # SIGTERM to the client ends the second session: down runs once per up.
                assert c.proc.returncode is not None
                wait_for(lambda: count_lines(marks, "down") == 2, 5, "two downs")
                assert count_lines(marks, "up") == 2
                assert ifindex(p.b, "tcli") is None, "the device must go with the client"
                assert_no_secret(s, c)
            finally:
                s.stop()
                s._dir.cleanup()
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.netns
def test_keepalive_ends_silent_session_and_client_reconnects() -> None:
    with two_hosts() as p:
        ta, tb = p.add_tunnel_devices()
        scfg = conf(HOST, options={"timeout": 3}, type="tun", proto="udp", device="tsrv",
                    keepalive="2:2")
        ccfg = conf(HOST, options={"timeout": 3}, device="tcli", keepalive="2:2", persist="yes")
        with VtServer(p.a, scfg) as s, VtClient(p.b, ccfg, HOST, p.a_addr) as c:
            wait_ping(p.b, ta, timeout=10)
            with frozen(s.proc.pid) as silent:
                c.wait_log(r"session closed.*network timeout|network timeout", timeout=25)
                silent_for = silent()
            # vtund's algorithm: ECHO_REQ at ticks 2..count+1, dead at tick count+2.
            assert 7 <= silent_for <= 18, silent_for
            wait_ping(p.b, ta, timeout=20)
            assert len(re.findall(r"session up", c.log())) >= 2
            assert s.alive() and c.alive()
            assert_no_secret(s, c)


@pytest.mark.netns
@pytest.mark.vtund
def test_keepalive_server_gives_up_on_silent_vtund_client() -> None:
    """vt's server side of keep-alive, against the reference client going silent."""
    with two_hosts() as p:
        ta, tb = p.add_tunnel_devices()
        # 1:1 keeps it short: (1+2)*(1+1) = 6 s of silence.
        scfg = conf(HOST, type="tun", proto="udp", device="tsrv", keepalive="1:1")
        ccfg = conf(HOST, device="tcli", keepalive="1:1")
        with VtServer(p.a, scfg) as s, VtundClient(p.b, ccfg, HOST, p.a_addr) as c:
            wait_ping(p.b, ta, timeout=10)
            with frozen(c.proc.pid) as silent:
                s.wait_log(r"session closed.*network timeout", timeout=25)
                silent_for = silent()
            assert 3 <= silent_for <= 12, silent_for
            assert s.alive()
            assert_no_secret(s, c)
