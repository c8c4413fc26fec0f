"""``vt status``: what a user sees of the running daemons, read from their Unix sockets.

A vt server and client in two namespaces share one ``$VT_RUN_DIR``; ``vt status`` runs as a
user would, from outside both namespaces.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from behaviour import HOST, PASSWD, conf, status_docs, vt_status, wait_for
from netns import two_hosts, wait_ping
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
            # Traffic through the daemons' first rate samples (one a second).
            pinger = p.b.popen("ping", "-n", "-q", "-c", 40, "-i", 0.1, "-s", 1000, ta,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            docs = wait_for(lambda: _with_rates(s.proc.pid, c.proc.pid), 10, "rates")
            srv, cli = docs[s.proc.pid], docs[c.proc.pid]
            assert srv["role"] == "server" and cli["role"] == "client"
            (ss,), (cs,) = srv["sessions"], cli["sessions"]
            for sess, dev in ((ss, "tsrv"), (cs, "tcli")):
                assert (sess["host"], sess["device"], sess["proto"], sess["type"]) == (
                    HOST, dev, "tcp", "tun")
                assert sess["native"] and sess["offload"] and not sess["secure"]
                assert (sess["compress"], sess["cipher"]) == ("lzo:1", None)
                assert sess["udp_peer"] is None
                counters = sess["counters"]
                assert counters["frames_in"] >= 5 and counters["byte_in"] >= 5 * 84
                assert counters["dropped_decode"] == counters["dropped_device"] == 0
                # ~1028-byte echoes 10 times a second, each way: some kB/s, not MB/s.
                for way in ("byte_in", "byte_out"):
                    assert 1000 < sess["rates"][way] < 200_000, sess["rates"]
                assert sess["rates"]["frames_in"] > 1
                assert sess["last_frame_age"] < 2 and sess["last_frame_out_age"] < 2, sess
            assert ss["peer"].startswith(f"{p.b_addr}:")
            # The human view of one daemon: its line and its session's.
            text = vt_status(s.proc.pid)
            assert text.startswith(f"pid {s.proc.pid}: server on ") and "1 session(s)" in text
            assert f"  session {HOST}\n    peer: {p.b_addr}:" in text, text
            assert "transport: tcp/tun tsrv [native+offload]" in text, text
            assert "compression: lzo:1\n    cipher: none\n" in text, text
            assert re.search(r"last frame: in \d+\.\d seconds ago, out \d+\.\d seconds ago",
                             text), text
            assert re.search(r"transfer: [\d.]+ KiB received, [\d.]+ KiB sent", text), text
            assert re.search(r"rate: [\d.]+ kbit/s in, [\d.]+ kbit/s out\n", text), text
            assert f"pid {c.proc.pid}" not in text
            assert PASSWD not in json.dumps(docs) + text
            # --watch, bounded: one refresh per interval, the sparkline one mark longer each.
            watched = vt_status("--watch", "--count", 3, "--interval", 0.3, s.proc.pid)
            assert watched.count("vt status, every 0.3s: ") == 3, watched
            sparks = re.findall(r"rate: .* out  ([▁▂▃▄▅▆▇█]+)\n", watched)
            assert [len(x) for x in sparks] == [1, 2, 3], watched
            pinger.wait(timeout=10)
            # The log lines name modules and flags (not Python class reprs).
            assert "modules=['lzo']" in s.wait_log(r"session up.*").group(0)
            assert re.search(r"connected +flags=<TuL1K?F", c.wait_log(r"connected.*").group(0))
            # The client leaves: the server's document loses the session.
            c.stop()
            wait_for(lambda: not status_docs()[s.proc.pid]["sessions"], 10, "session gone")
        # Both stopped: their sockets are gone with them.
        assert vt_status().startswith("no vt running")


def _with_rates(*pids: int) -> dict[int, dict] | None:
    """``vt status --json`` once every daemon's session has non-zero rates."""
    docs = status_docs()
    ok = all(d["sessions"] and (d["sessions"][0]["rates"] or {}).get("byte_in")
             for pid, d in docs.items() if pid in pids)
    return docs if ok and set(pids) <= set(docs) else None


@pytest.mark.netns
@pytest.mark.parametrize("word", ["aes128cbc", "aead"])
def test_status_names_the_cipher_and_secure_mode_as_such(word, tmp_path, monkeypatch) -> None:
    """Issue 17.4: a vtund cipher by its name; secure mode as secure mode with its suite,
    never as a vtund cipher (nor "encrypt None")."""
    from secure_tools import add_devices, client_conf, server_conf

    monkeypatch.setenv("VT_RUN_DIR", str(tmp_path / "run"))
    with two_hosts() as p:
        ta, _ = add_devices(p, "tun")
        with VtServer(p.a, server_conf(encrypt=word)) as s, \
                VtClient(p.b, client_conf(encrypt=word), "t1", p.a_addr) as c:
            wait_ping(p.b, ta, timeout=15)
            docs = status_docs()
            names = {docs[pid]["sessions"][0]["cipher"] for pid in (s.proc.pid, c.proc.pid)}
            (name,) = names
            if word == "aead":
                assert re.fullmatch(r"secure aead (aes256gcm|chacha20poly1305)", name), name
            else:
                assert name == "aes128cbc"
            assert f"    cipher: {name}\n" in vt_status(s.proc.pid)
            line = s.wait_log(r"session up.*").group(0)
            want = f"modules=['{name}']"
            assert want in line, line


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
                drops = f"drops: bad {want_bad}  unknown {want_unknown}  dropped"
                assert drops in vt_status(s.proc.pid)
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


def test_human_units_of_the_status_text() -> None:
    from vtcore.statusview import duration, rate, size, sparkline

    assert [size(n) for n in (512, 1536, 3 << 30)] == ["512 B", "1.50 KiB", "3.00 GiB"]
    assert [rate(n) for n in (None, 100, 1500, 125e6)] == [
        "-", "800 bit/s", "12.0 kbit/s", "1.0 Gbit/s"]
    assert [duration(s) for s in (2.25, 60, 3723, 90061)] == [
        "2.2 seconds", "1 minute", "1 hour, 2 minutes, 3 seconds",
        "1 day, 1 hour, 1 minute, 1 second"]
    assert sparkline([0, 1, 2, 4]) == "▁▃▅█" and sparkline([0, 0]) == "▁▁"
