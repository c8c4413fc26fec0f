"""``vt status``: what a user sees of the running daemons, read from their Unix sockets.

A vt server and client in two namespaces share one ``$VT_RUN_DIR``; ``vt status`` runs as a
user would, from outside both namespaces.
"""

from __future__ import annotations

import json

import pytest
from behaviour import HOST, PASSWD, conf, status_docs, vt_status, wait_for
from netns import ping, two_hosts, wait_ping
from peers import VtClient, VtServer


@pytest.mark.netns
def test_status_shows_each_daemon_its_sessions_and_counters(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("VT_RUN_DIR", str(tmp_path / "run"))
    with two_hosts() as p:
        ta, tb = p.add_tunnel_devices()
        scfg = conf(HOST, type="tun", proto="tcp", device="tsrv", compress="lzo:1")
        ccfg = conf(HOST, device="tcli")
        with VtServer(p.a, scfg) as s, VtClient(p.b, ccfg, HOST, p.a_addr) as c:
            wait_ping(p.b, ta, timeout=15)
            assert ping(p.b, ta, count=5, interval=0.05).received == 5
            docs = status_docs()
            srv, cli = docs[s.proc.pid], docs[c.proc.pid]
            assert srv["role"] == "server" and cli["role"] == "client"
            (ss,), (cs,) = srv["sessions"], cli["sessions"]
            for sess, dev in ((ss, "tsrv"), (cs, "tcli")):
                assert (sess["host"], sess["device"], sess["proto"], sess["type"]) == (
                    HOST, dev, "tcp", "tun")
                assert sess["native"] and sess["offload"] and not sess["secure"]
                assert sess["udp_peer"] is None
                counters = sess["counters"]
                assert counters["frames_in"] >= 5 and counters["byte_in"] >= 5 * 84
                assert counters["dropped_decode"] == counters["dropped_device"] == 0
            assert ss["peer"].startswith(f"{p.b_addr}:")
            # The human view of one daemon: its line and its session's.
            text = vt_status(s.proc.pid)
            assert text.startswith(f"pid {s.proc.pid}: server on ") and "1 session(s)" in text
            assert f"{HOST} {p.b_addr}:" in text and "tcp/tun tsrv [native+offload]" in text
            assert f"pid {c.proc.pid}" not in text
            assert PASSWD not in json.dumps(docs) + text
            # The client leaves: the server's document loses the session.
            c.stop()
            wait_for(lambda: not status_docs()[s.proc.pid]["sessions"], 10, "session gone")
        # Both stopped: their sockets are gone with them.
        assert vt_status().startswith("no vt running")
