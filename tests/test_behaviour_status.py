"""``vt status``: what a user sees of the running daemons, read from their Unix sockets.

A vt server and client in two namespaces share one ``$VT_RUN_DIR``; ``vt status`` runs as a
user would, from outside both namespaces.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

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


RAWPEER = Path(__file__).parent / "faults" / "rawpeer.py"


def rawpeer(ns, server: str, src: str, dst: str, *args: object, hold: float = 30):
    """tests/faults/rawpeer.py in ``ns``: logs in, sends the faults asked for, holds the
    session until a stdin line.  Returns the process and its JSON report."""
    proc = ns.popen(sys.executable, RAWPEER, "--server", server, "--host", HOST,
                    "--password", PASSWD, "--src", src, "--dst", dst, "--hold", hold,
                    *args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    ready = select.select([proc.stdout], [], [], 40)[0]
    line = proc.stdout.readline() if ready else ""
    assert line, "rawpeer gave no report"
    return proc, json.loads(line)


@pytest.mark.netns
@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_status_counts_bad_and_unknown_frames_while_the_session_runs(
        proto, tmp_path, monkeypatch) -> None:
    """Issue 16.2: ``bad_frames`` (and ``unknown_frames``, flags vtun does not define)
    are live in ``vt status``, not copied at the session's end; the close line has both."""
    monkeypatch.setenv("VT_RUN_DIR", str(tmp_path / "run"))
    with two_hosts() as p:
        ta, tb = p.add_tunnel_devices(b_dev="tunused")
        with VtServer(p.a, conf(HOST, type="tun", proto=proto, device="tsrv")) as s:
            proc, rep = rawpeer(p.b, p.a_addr, tb, ta, "--bad", 7, "--unknown", 5)
            try:
                assert rep["echo_before"] and rep["echo_after"], rep
                (sess,) = status_docs()[s.proc.pid]["sessions"]
                counters = sess["counters"]
                # Over udp a datagram with undefined flags is one more bad datagram.
                want_unknown = 5 if proto == "tcp" else 0
                want_bad = 12 - want_unknown
                assert counters["bad_frames"] == want_bad, counters
                assert counters["unknown_frames"] == want_unknown, counters
                assert f"bad {want_bad}  unknown {want_unknown}  dropped" in vt_status(s.proc.pid)
            finally:
                proc.communicate("\n", timeout=10)
            line = s.wait_log(r"session closed.*").group(0)
            assert f"bad_frames={want_bad}" in line, line
            assert f"unknown_frames={want_unknown}" in line, line


def test_a_starting_daemon_removes_the_sockets_of_killed_ones(tmp_path, monkeypatch) -> None:
    """Issue 16: the status sockets of daemons killed with -9 go when the next daemon
    starts, not only when ``vt status`` runs; a live daemon's socket stays."""
    import asyncio
    import socket

    from vtcore.runtime.status import StatusServer

    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.setenv("VT_RUN_DIR", str(run))
    stale = []
    for i in range(100):  # bound, then closed: what a killed daemon leaves behind
        path = run / f"run-bt{i}-{900000 + i}.sock"
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(path))
        s.close()
        stale.append(path)
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(str(run / "serve-other-1.sock"))
    live.listen(4)
    other = run / "notes.txt"
    other.write_text("not a socket of ours")

    async def start_and_stop() -> list[str]:
        server = StatusServer("serve", "x", dict)
        await server.start()
        names = sorted(p.name for p in run.iterdir())
        await server.close()
        return names

    try:
        names = asyncio.run(start_and_stop())
    finally:
        live.close()
    assert names == ["notes.txt", "serve-other-1.sock", f"serve-x-{os.getpid()}.sock"]


def test_live_link_counters_survive_a_counter_reset() -> None:
    """``vt status`` pulls the link's counts as they grow (not once at the end), and a
    SIGUSR1 reset holds: only frames after it are counted again."""
    import socket
    from types import SimpleNamespace

    from vtcore.protocol.frames import BAD_FRAME, ECHO_REP, ECHO_REQ
    from vtcore.runtime.tunnel import Tunnel
    from vtcore.transports.tcp import TcpLink

    with socket.create_server(("127.0.0.1", 0)) as srv:
        peer = socket.create_connection(srv.getsockname(), timeout=3)
        ours, _ = srv.accept()
    link = TcpLink(ours)
    tunnel = Tunnel(link, SimpleNamespace(fileno=lambda: -1, joined=0), [])

    def send(data: bytes) -> None:
        peer.sendall(data)
        deadline = time.monotonic() + 3
        got = len(data)
        while got and time.monotonic() < deadline:
            link.read_frames(64)
            got = len(data) - 2 * (link.bad_frames + link.unknown_frames - seen[0])
        seen[0] = link.bad_frames + link.unknown_frames

    seen = [0]
    try:
        send((ECHO_REQ | ECHO_REP).to_bytes(2, "big") * 3 + BAD_FRAME.to_bytes(2, "big") * 2)
        tunnel.pull_counters()
        c = tunnel.counters
        assert (c.unknown_frames, c.bad_frames) == (3, 2)
        c.reset()
        tunnel.pull_counters()
        assert (c.unknown_frames, c.bad_frames) == (0, 0)
        send(BAD_FRAME.to_bytes(2, "big"))
        tunnel.pull_counters()
        tunnel.pull_counters()
        assert (c.unknown_frames, c.bad_frames) == (0, 1)
    finally:
        link.close()
        peer.close()
