"""Server signals: SIGHUP reloads without touching live sessions, SIGUSR1 resets counters,
SIGTERM ends every session cleanly (``down`` once per session) and exits 0."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time

import pytest
from behaviour import (
    ERR_BLOCK,
    HOST,
    PASSWD,
    assert_no_secret,
    conf,
    count_lines,
    probe,
    probe_bg,
    tmpdir,
    wait_for,
)
from netns import ping, two_hosts, wait_ping
from peers import VtClient, VtServer

NEW_PW = "Changed-pw-7"


@pytest.mark.netns
def test_sighup_keeps_sessions_and_applies_new_config_sigusr1_resets() -> None:
    with two_hosts() as p:
        ta, tb = p.add_tunnel_devices()
        scfg = conf(HOST, type="tun", proto="tcp", device="tsrv")
        ccfg = conf(HOST, device="tcli")
        with VtServer(p.a, scfg) as s, VtClient(p.b, ccfg, HOST, p.a_addr) as c:
            wait_ping(p.b, ta, timeout=10)
            # Before the reload: bt2 is unknown, bt1 takes the old password.
            assert probe(p.b, p.a_addr, 5000, "auth", host="bt2", pw=NEW_PW)["data"] == ERR_BLOCK
            # New config: bt1's password changes, a host bt2 appears.
            new = conf(HOST, type="tun", proto="tcp", device="tsrv", passwd=NEW_PW,
                       extra_hosts=f"bt2 {{\n  passwd {NEW_PW};\n  type tty;\n}}\n")
            s.cfg.write_text(new)
            os.kill(s.proc.pid, signal.SIGHUP)
            s.wait_log(r"config reloaded", timeout=5)
            # The live session is untouched.
            r = ping(p.b, ta, count=10, interval=0.1)
            assert r.received == r.sent == 10
            assert "session closed" not in s.log()
            # New sessions get the new config.
            old_pw = probe(p.b, p.a_addr, 5000, "auth", host=HOST, pw=PASSWD)
            assert old_pw["data"] == ERR_BLOCK
            served = probe(p.b, p.a_addr, 5000, "auth", host="bt2", pw=NEW_PW, limit=3)
            assert served["data"].startswith(b"OK FLAGS: <")
            # A broken config on SIGHUP keeps the old one.
            s.cfg.write_text("bt3 { passwd x; type nonsense; }\n")
            os.kill(s.proc.pid, signal.SIGHUP)
            s.wait_log(r"config reload failed", timeout=5)
            served = probe(p.b, p.a_addr, 5000, "auth", host="bt2", pw=NEW_PW, limit=3)
            assert served["data"].startswith(b"OK FLAGS: <")

            # SIGUSR1: counters start again from zero.
            ping(p.b, ta, count=10, interval=0.05)
            os.kill(s.proc.pid, signal.SIGUSR1)
            s.wait_log(r"counters reset", timeout=5)
            wait_ping(p.b, ta, timeout=5)
            assert c.alive() and s.alive()
            s.stop()
            m = s.wait_log(r"session closed.*host=bt1.*", timeout=5)
            byte_in = int(re.search(r"byte_in=(\d+)", m.group(0)).group(1))
            # 20+ pings of 84 bytes went in before the reset; only the last one (and
            # perhaps some IPv6 chatter) after it.
            assert byte_in < 10 * 84, m.group(0)
            assert_no_secret(s, c)
            assert NEW_PW not in s.log()


@pytest.mark.netns
@pytest.mark.parametrize("broken", ["", "options { port 5000; }\n", "bt1 { passwd x;"])
def test_sighup_with_a_truncated_or_hostless_config_keeps_every_host(broken) -> None:
    """Issue 16.3: a config truncated to nothing (or to its options, or mid-section) on
    SIGHUP is refused in one line; the old hosts are still served."""
    with two_hosts() as p:
        with VtServer(p.a, conf(HOST, type="tun", proto="tcp", device="tsrv")) as s:
            s.cfg.write_text(broken)
            os.kill(s.proc.pid, signal.SIGHUP)
            line = s.wait_log(r".*config reload.*", timeout=5).group(0)
            assert "config reload failed, keeping the old one" in line, line
            assert "config reloaded" not in s.log()
            if not broken.startswith("bt1"):
                assert "no hosts defined" in line, line
            served = probe(p.b, p.a_addr, 5000, "auth", host=HOST, pw=PASSWD, limit=3)
            assert served["data"].startswith(b"OK FLAGS: <"), served
            assert s.alive() and "Traceback" not in s.log()


@pytest.mark.netns
def test_sigterm_ends_every_session_and_runs_down_once() -> None:
    d = tmpdir()
    marks = d / "server-updown"
    try:
        scfg = conf(
            HOST, type="tty", proto="tcp",
            up=[f"program /bin/sh \"-c 'echo up >> {marks}'\" wait",
                "program /bin/sh \"-c 'exec sleep 60'\""],
            down=[f"program /bin/sh \"-c 'echo down >> {marks}'\" wait"],
        )  # fmt: skip
        ccfg = conf(HOST, up=["program /bin/sh \"-c 'exec sleep 60'\""])
        with two_hosts() as p, VtServer(p.a, scfg) as s:
            with VtClient(p.b, ccfg, HOST, p.a_addr) as c1, \
                    VtClient(p.b, ccfg, HOST, p.a_addr) as c2:
                wait_for(lambda: count_lines(marks, "up") == 2, 10, "two sessions up")
                c1.wait_log("session up")
                c2.wait_log("session up")
                # A client stuck in the handshake must not hold the shutdown up.
                silent = probe_bg(p.b, p.a_addr, 5000, "silent", limit=20)
                time.sleep(0.5)
                t0 = time.monotonic()
                os.kill(s.proc.pid, signal.SIGTERM)
                assert s.proc.wait(timeout=20) == 0
                assert time.monotonic() - t0 < 5, "SIGTERM took too long"
                out, _ = silent.communicate(timeout=25)
                assert json.loads(out)["end"] in ("closed", "reset")
                assert count_lines(marks, "down") == 2
                assert count_lines(marks, "up") == 2
                assert len(re.findall(r"session closed.*server shutting down", s.log())) == 2
                # The clients learn of it and, not being persistent, exit.
                for c in (c1, c2):
                    wait_for(lambda c=c: not c.alive(), 10, "client exit")
                    assert re.search(r"session closed.*reason=", c.log())
                assert_no_secret(s, c1, c2)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.netns
def test_client_sighup_reconnects_at_once_sigusr1_resets() -> None:
    """vtund's client reconnects on SIGHUP even without persist; SIGUSR1 must not kill it."""
    with two_hosts() as p:
        ta, tb = p.add_tunnel_devices()
        scfg = conf(HOST, type="tun", proto="tcp", device="tsrv")
        ccfg = conf(HOST, device="tcli")
        with VtServer(p.a, scfg) as s, VtClient(p.b, ccfg, HOST, p.a_addr) as c:
            wait_ping(p.b, ta, timeout=10)
            os.kill(c.proc.pid, signal.SIGHUP)
            wait_for(lambda: len(re.findall("session opened", s.log())) == 2, 5, "reconnect")
            wait_ping(p.b, ta, timeout=5)
            assert c.alive()
            os.kill(c.proc.pid, signal.SIGUSR1)
            c.wait_log("counters reset", timeout=5)
            wait_ping(p.b, ta, timeout=5)
            assert c.alive()
            assert len(re.findall("session closed", s.log())) == 1
            assert_no_secret(s, c)
