"""Bad clients get ``ERR`` or a closed socket within the timeout; a good one is served meanwhile.

Wrong password and unknown host must look the same on the wire (vtund: both ``ERR`` after the
``CHAL`` step); the server's log may tell them apart, but never shows the password.
"""

from __future__ import annotations

import json

import pytest
from behaviour import ERR_BLOCK, HOST, PASSWD, assert_no_secret, conf, probe, probe_bg
from netns import two_hosts, wait_ping
from peers import VtClient, VtServer, VtundServer

TIMEOUT = 3


@pytest.mark.netns
def test_bad_clients_denied_while_good_client_served() -> None:
    with two_hosts() as p:
        ta, tb = p.add_tunnel_devices()
        scfg = conf(HOST, options={"timeout": TIMEOUT}, type="tun", proto="tcp", device="tsrv")
        ccfg = conf(HOST, device="tcli")
        with VtServer(p.a, scfg) as s:
            # Slow attackers first: they hold connections open while the good client arrives.
            silent = probe_bg(p.b, p.a_addr, 5000, "silent")
            truncated = probe_bg(p.b, p.a_addr, 5000, "truncated")
            trunc_chal = probe_bg(p.b, p.a_addr, 5000, "truncated_chal")
            dribble = probe_bg(p.b, p.a_addr, 5000, "dribble")
            with VtClient(p.b, ccfg, HOST, p.a_addr) as c:
                wait_ping(p.b, ta, timeout=10)
                badpw = probe(p.b, p.a_addr, 5000, "badpw", pw="not-the-password")
                unknown = probe(p.b, p.a_addr, 5000, "unknown", host="nosuchhost", pw=PASSWD)
                garbage = probe(p.b, p.a_addr, 5000, "garbage")
                slow = {}
                for name, proc in (("silent", silent), ("truncated", truncated),
                                   ("truncated_chal", trunc_chal), ("dribble", dribble)):
                    out, err = proc.communicate(timeout=30)
                    assert proc.returncode == 0, err
                    slow[name] = json.loads(out)
                # The tunnel still carries traffic after all that.
                wait_ping(p.b, ta, timeout=5)
                assert c.alive()

            assert badpw["data"] == ERR_BLOCK and badpw["end"] == "closed"
            # Identical on the wire: no way to probe for host names.
            assert unknown["data"] == badpw["data"] and unknown["end"] == badpw["end"]
            assert garbage["data"] in (b"", ERR_BLOCK) and garbage["end"] in ("closed", "reset")
            for name, out in slow.items():
                # vtund answers a timed-out handshake with ERR as well.
                assert bytes.fromhex(out["data"]) == ERR_BLOCK, (name, out)
                assert out["end"] in ("closed", "reset"), (name, out)
                # Closed by the server's handshake timeout, not before and not much after.
                assert TIMEOUT - 0.5 <= out["elapsed"] <= TIMEOUT + 3, (name, out)
            log = s.log()
            assert "authentication failed" in log or "denied" in log
            assert_no_secret(s, c)


@pytest.mark.netns
@pytest.mark.vtund
def test_denials_match_vtund_on_the_wire() -> None:
    """vt's answers to a wrong password and an unknown host are vtund's, byte for byte."""
    with two_hosts() as p:
        scfg = conf(HOST, options={"timeout": TIMEOUT}, type="tun", proto="tcp")
        answers = {}
        for kind, server in (("vt", VtServer), ("vtund", VtundServer)):
            with server(p.a, scfg) as s:
                answers[kind] = (
                    probe(p.b, p.a_addr, 5000, "badpw", pw="not-the-password"),
                    probe(p.b, p.a_addr, 5000, "unknown", host="nosuchhost", pw=PASSWD),
                )
                assert_no_secret(s)
        for kind in ("vt", "vtund"):
            for out in answers[kind]:
                assert (out["data"], out["end"]) == (ERR_BLOCK, "closed"), (kind, out)


@pytest.mark.netns
def test_cli_timeout_overrides_config() -> None:
    """``-t`` beats ``options { timeout }``: a silent client is dropped after -t seconds."""
    with two_hosts() as p:
        scfg = conf(HOST, options={"timeout": 30}, type="tun")

        class Server(VtServer):
            def argv(self):
                return [*super().argv(), "-t", "2"]

        with Server(p.a, scfg):
            out = probe(p.b, p.a_addr, 5000, "silent", limit=10)
        assert out["end"] in ("closed", "reset")
        assert 1.5 <= out["elapsed"] <= 5, out
