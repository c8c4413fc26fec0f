"""Secure mode against an active attacker, live: real ``vt serve`` in a namespace, attacks
from tools in the client's namespace (tests/secure_tools.py): handshake byte flips, frame
flips, replay, downgrade, wrong password, handshake flooding.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from netns import HarnessError, Pair, ping, two_hosts, wait_listening, wait_ping
from peers import VtClient, VtServer
from secure_tools import (
    PASSWD,
    TOOL,
    add_devices,
    client_conf,
    log_field,
    log_lines,
    no_crash,
    rx_packets,
    server_conf,
)

pytestmark = pytest.mark.netns

PORT = 5000
RELAY_PORT = 5000  # on 127.0.0.1 in the client's namespace (the UDP exchange needs the same)
# Stream layout of a secure handshake (docs/secure-mode.md): block sizes on the wire.
C2S_LEN = 50 + 67 + 35  # HOST, msg1, msg3
S2C_MSG4 = 50 + 50 + 371  # greeting, OK VT3, msg2; msg4 (35 bytes) starts here
S2C_LEN = S2C_MSG4 + 35


# ------------------------------------------------------------------------------ helpers


class Tool:
    """A secure_tools.py process in a namespace, output to a file (read any time)."""

    def __init__(self, ns, *args: object) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="vt-sectool-")
        self.out = Path(self._dir.name) / "out"
        with open(self.out, "wb") as fh:
            self.proc = ns.popen(sys.executable, TOOL, *args, stdout=fh, stderr=subprocess.STDOUT)

    def events(self) -> list[dict]:
        evs = []
        for ln in self.out.read_text(errors="replace").splitlines():
            try:
                evs.append(json.loads(ln))
            except json.JSONDecodeError:
                evs.append({"raw": ln})
        return evs

    def wait_event(self, name: str, timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for ev in self.events():
                if ev.get("event") == name:
                    return ev
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise HarnessError(f"tool: no {name!r} event; output:\n{self.out.read_text()}")

    def signal(self, timeout: float = 10) -> None:
        """SIGUSR1 arms a relay; returns once it says so.  Traffic sent before that would
        pass unharmed (the race that made the flip tests flaky on a loaded machine)."""
        armed = sum(ev.get("event") == "armed" for ev in self.events())
        os.killpg(self.proc.pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while sum(ev.get("event") == "armed" for ev in self.events()) <= armed:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise HarnessError(f"tool: not armed; output:\n{self.out.read_text()}")
            time.sleep(0.02)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=3)
        self._dir.cleanup()


@contextmanager
def relay(p: Pair, mode: str):
    """The man in the middle, in B on 127.0.0.1:5000, towards the server in A."""
    t = Tool(p.b, "relay", "--listen", "127.0.0.1", "--out-addr", p.b_addr,
             "--target", p.a_addr, "--tport", PORT, "--mode", mode, "--lifetime", 60)
    try:
        t.wait_event("listening")
        wait_listening(p.b, RELAY_PORT, proc=t.proc)
        yield t
    finally:
        t.close()


def add_sources(p: Pair, first: int, count: int) -> list[str]:
    """Extra addresses on B's veth (10.X.Y.first ...), one batch command."""
    base = p.b_addr.rsplit(".", 1)[0]
    addrs = [f"{base}.{first + i}" for i in range(count)]
    p.b.run("ip", "-batch", "-", input="".join(f"addr add {a}/24 dev veth0\n" for a in addrs))
    return addrs


def server_denials(text: str) -> list[str]:
    return log_lines(text, "denied:") + log_lines(text, "handshake aborted by peer")


# ------------------------------------------------------------------------------ handshake


def fuzz_offsets() -> tuple[list[int], list[int]]:
    """Every byte the client sends; every byte of the server's first 200, then a sample of
    the rest of msg2 and msg4 (all of it when VT_FUZZ_ALL=1)."""
    c2s = list(range(C2S_LEN))
    if os.environ.get("VT_FUZZ_ALL") == "1":
        return c2s, list(range(S2C_LEN))
    s2c = list(range(200)) + list(range(200, S2C_MSG4, 23)) + list(range(S2C_MSG4, S2C_LEN, 5))
    return c2s, s2c


def test_every_flipped_handshake_byte_is_rejected() -> None:
    """Flip byte i of the handshake stream (one bit, one run per offset): no run gets a
    session on the client; the server refuses each (or, for msg4 flipped on its way to the
    client, has nothing written to its device); afterwards a good client gets its tunnel."""
    c2s, s2c = fuzz_offsets()
    # Runs take turns over 100 host names (same password), so that no name reaches its
    # failure budget (10) and goes into back-off; t1 is kept for the good client.
    names = [f"f{i:02d}" for i in range(100)]
    conf = server_conf(timeout=5) + "".join(server_conf(n).split("\n", 1)[1] for n in names)
    with two_hosts() as p:
        ta, _ = add_devices(p, "tun")
        # Two pools of sources so the per-source flood limiter never kicks in.
        pools = add_sources(p, 10, 120)
        with VtServer(p.a, conf) as s:
            tools = [
                Tool(p.b, "fuzz", "--server", p.a_addr, "--host", ",".join(names),
                     "--password", PASSWD,
                     "--way", way, "--offsets", ",".join(map(str, offs)),
                     "--sources", ",".join(pool), "--settle-from", S2C_MSG4)
                for way, offs, pool in (("c2s", c2s, pools[:60]), ("s2c", s2c, pools[60:]))
            ]
            try:
                for t in tools:
                    t.wait(timeout=150)
                runs = {way: t.events() for way, t in zip(("c2s", "s2c"), tools, strict=True)}
            finally:
                for t in tools:
                    t.close()
            for way, offs in (("c2s", c2s), ("s2c", s2c)):
                got = runs[way]
                assert [r.get("offset") for r in got] == offs, got[-3:]
                bad = [r for r in got if r.get("result") == "established" or not r.get("flipped")]
                assert not bad, bad[:5]
            # The server saw each run end without a session (msg4 flips excepted: the
            # server had already accepted, the client then refused).
            msg4 = sum(1 for off in s2c if off >= S2C_MSG4)
            deadline = time.monotonic() + 10
            total = len(c2s) + len(s2c)
            while time.monotonic() < deadline:
                text = s.log()
                ended = len(server_denials(text)) + len(log_lines(text, "secure mode established"))
                if ended >= total:
                    break
                time.sleep(0.2)
            text = s.log()
            assert len(log_lines(text, "secure mode established")) == msg4, text[-3000:]
            assert len(server_denials(text)) == total - msg4, text[-3000:]
            assert not log_lines(text, "too many secure handshakes")
            assert not log_lines(text, "host in back-off")
            assert rx_packets(p.a, "tsrv") == 0
            summary: dict[str, int] = {}
            for r in runs["c2s"] + runs["s2c"]:
                key = f"{r['result']}: {r.get('error', '')}"
                summary[key] = summary.get(key, 0) + 1
            print("\nflip outcomes (client side):", json.dumps(summary, indent=1))
            # The server still serves: a good client gets its tunnel.
            with VtClient(p.b, client_conf(), "t1", p.a_addr) as c:
                wait_ping(p.b, ta, timeout=15)
                assert s.alive() and c.alive()
            no_crash(s)


# ------------------------------------------------------------------------------ frames


def test_flipped_tcp_frame_ends_session_cleanly() -> None:
    """Over TCP a modified sealed frame ends the session (both ends), is never written to
    the device, and the server goes on serving."""
    with two_hosts() as p:
        ta, _ = add_devices(p, "tun")
        with VtServer(p.a, server_conf(proto="tcp")) as s, relay(p, "flip-tcp") as r, \
                VtClient(p.b, client_conf(), "t1", "127.0.0.1") as c:
            wait_ping(p.b, ta, timeout=15)
            assert ping(p.b, ta, count=3, interval=0.1).received == 3
            before = rx_packets(p.a, "tsrv")
            r.signal()
            ping(p.b, ta, count=3, interval=0.2, timeout=3)
            r.wait_event("flipped")
            line = s.wait_log(r"session closed.*").group(0)
            assert "failed authentication" in log_field(line, "reason"), line
            assert int(log_field(line, "bad_frames")) == 1, line
            assert rx_packets(p.a, "tsrv") == before
            c.wait_log(r"session closed.*")
            c.proc.wait(timeout=5)
            assert s.alive()
            no_crash(s, c)


def test_flipped_udp_frame_is_dropped_and_counted() -> None:
    """Over UDP a modified sealed datagram is dropped and counted; the session lives."""
    with two_hosts() as p:
        ta, _ = add_devices(p, "tun")
        with VtServer(p.a, server_conf(proto="udp")) as s, relay(p, "flip-udp") as r, \
                VtClient(p.b, client_conf(), "t1", "127.0.0.1") as c:
            wait_ping(p.b, ta, timeout=15)
            before = rx_packets(p.a, "tsrv")
            r.signal()
            res = ping(p.b, ta, count=6, interval=0.2)
            r.wait_event("flipped")
            # ping -c -w keeps sending until it has its replies: exactly one is missing.
            assert res.sent - res.received == 1, res
            assert rx_packets(p.a, "tsrv") == before + res.received
            assert ping(p.b, ta, count=3, interval=0.1).received == 3
            c.stop()
            line = s.wait_log(r"session closed.*").group(0)
            assert "closed by other side" in log_field(line, "reason"), line
            assert int(log_field(line, "bad_frames")) == 1, line
            assert s.alive()
            no_crash(s, c)


def test_replayed_udp_datagrams_are_rejected() -> None:
    """Captured datagrams re-sent both ways: none reaches a device, all are counted."""
    with two_hosts() as p:
        ta, tb = add_devices(p, "tun")
        with VtServer(p.a, server_conf(proto="udp")) as s, relay(p, "replay") as r, \
                VtClient(p.b, client_conf(), "t1", "127.0.0.1") as c:
            wait_ping(p.b, ta, timeout=15)
            assert ping(p.b, ta, count=10, interval=0.05).received == 10
            time.sleep(0.2)
            before = rx_packets(p.a, "tsrv"), rx_packets(p.b, "tcli")
            r.signal()
            sent = r.wait_event("replayed")
            assert sent["c2s"] >= 10 and sent["s2c"] >= 10, sent
            time.sleep(0.5)
            assert (rx_packets(p.a, "tsrv"), rx_packets(p.b, "tcli")) == before
            # The tunnel still works after the replay.
            assert ping(p.b, ta, count=3, interval=0.1).received == 3
            c.stop()
            sline = s.wait_log(r"session closed.*").group(0)
            cline = c.wait_log(r"session closed.*").group(0)
            assert int(log_field(sline, "bad_frames")) == sent["c2s"], sline
            assert int(log_field(cline, "bad_frames")) == sent["s2c"], cline
            print(f"\nreplayed {sent}; server bad_frames={log_field(sline, 'bad_frames')}, "
                  f"client bad_frames={log_field(cline, 'bad_frames')}")
            no_crash(s, c)


# ------------------------------------------------------------------------------ negotiation


@pytest.mark.parametrize(
    ("mode", "client_says", "server_says"),
    [
        ("strip-vt2", "server refused host t1 before secure mode",
         "client did not ask for secure mode for host t1"),
        ("rewrite-offer", "server does not offer secure mode for host t1",
         "connection closed during secure handshake"),
    ],
    ids=["strip-vt2", "rewrite-offer"],
)
def test_downgrade_is_refused_by_both_ends(mode: str, client_says: str,
                                           server_says: str) -> None:
    """A man in the middle strips ``vt2`` or rewrites the ``OK VT3`` offer into ``OK CHAL``: both
    ends refuse with a clear message; no tunnel."""
    with two_hosts() as p:
        ta, _ = add_devices(p, "tun")
        with VtServer(p.a, server_conf()) as s, relay(p, mode) as r, \
                VtClient(p.b, client_conf(), "t1", "127.0.0.1", expect_exit=True) as c:
            r.wait_event("stripped" if mode == "strip-vt2" else "rewrote")
            cline = c.wait_log(r"session failed.*").group(0)
            assert client_says in cline and "refusing to fall back (downgrade?)" in cline
            sline = s.wait_log(r"denied: .*").group(0)
            assert server_says in sline, sline
            c.proc.wait(timeout=5)
            assert c.proc.returncode != 0
            assert not log_lines(s.log(), "session opened")
            assert ping(p.b, ta, count=1, timeout=2).received == 0
            no_crash(s, c)


def test_wrong_password_fails_like_unknown_host() -> None:
    """A wrong password and an unknown host give the same message on each end."""
    with two_hosts() as p:
        add_devices(p, "tun")
        with VtServer(p.a, server_conf()) as s:
            msgs = {}
            for case, cfg, host in (
                ("wrong password", client_conf(passwd="Not-the-pw9"), "t1"),
                ("unknown host", client_conf("t9"), "t9"),
            ):
                start = time.monotonic()
                with VtClient(p.b, cfg, host, p.a_addr, expect_exit=True) as c:
                    cline = c.wait_log(r"session failed.*", timeout=12).group(0)
                    c.proc.wait(timeout=5)
                    assert c.proc.returncode != 0
                    assert time.monotonic() - start < 10
                sline = s.wait_log(rf"denied: .*host={host}\b.*").group(0)
                # The client names its own host (issue 17.7); nothing else may differ.
                said = log_field(cline, "error").replace(f"host {host}:", "host HOST:")
                msgs[case] = (said, log_field(sline, "error"))
            print("\n", msgs)
            assert msgs["wrong password"] == msgs["unknown host"]
            assert msgs["wrong password"][1] == "authentication failed"
            assert msgs["wrong password"][0].startswith("authentication failed for host HOST")
            assert not log_lines(s.log(), "session opened")
            assert "Not-the-pw9" not in s.log() and PASSWD not in s.log()
            no_crash(s)


def test_handshake_flood_does_not_starve_a_good_client() -> None:
    """200 bogus secure handshakes (garbage msg1, then dribbling) from one address while a
    good client from another address connects: it is served within a few seconds."""
    with two_hosts() as p:
        ta, _ = add_devices(p, "tun")
        (bad_src,) = add_sources(p, 3, 1)
        with VtServer(p.a, server_conf(timeout=10)) as s:
            flood = Tool(p.b, "flood", "--server", p.a_addr, "--host", "t1",
                         "--source", bad_src, "--count", 200, "--duration", 8)
            try:
                stats = flood.wait_event("flooded", timeout=15)
                start = time.monotonic()
                with VtClient(p.b, client_conf(), "t1", p.a_addr) as c:
                    waited = wait_ping(p.b, ta, timeout=15)
                    took = time.monotonic() - start
                    print(f"\nflood {stats}; good client served after {took:.1f}s "
                          f"(first ping after {waited:.1f}s)")
                    assert took < 6
                    assert c.alive()
            finally:
                flood.close()
            # Refused by the secure limiter (ERR), or evicted by the source's cap on
            # handshake slots (closed: "failed").
            assert stats["offer"] <= 10 and stats["err"] + stats["failed"] >= 150, stats
            # Both mechanisms refused (the flood's own count above is the measure).  How
            # they share it depends on how fast connections reach the handshakes: in a
            # worker, handed on by the master in bursts, more are closed at the slot cap
            # (logged once) and fewer refused by the limiter (logged each time).
            limited = len(log_lines(s.log(), "too many secure handshakes"))
            assert limited >= 10, limited
            assert log_lines(s.log(), "handshake slots full")
            assert s.alive()
            no_crash(s)
