"""The handshake machines against the reference vtund, over loopback only.

vtund is started by PID and stopped by PID; profiles use ``type tty`` so that no network
device is created.  Every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from vtcore.protocol.events import (
    Accept,
    Accepted,
    Answer,
    Challenge,
    ChallengeAnswered,
    Challenged,
    Denied,
    HostAnnounced,
    Reject,
)
from vtcore.protocol.flags import Flags
from vtcore.protocol.frames import CONN_CLOSE, ECHO_REQ, StreamDecoder
from vtcore.protocol.handshake import ClientHandshake, ServerHandshake
from vtcore.transports.base import VTUN_FRAMING

VTUND = os.environ.get("VT_VTUND", "/usr/sbin/vtund")
PASSWORD = b"secret123"

pytestmark = pytest.mark.vtund


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def vtund(config: str, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    for d in ("/var/lock/vtund", "/var/log/vtund", "/var/run"):
        os.makedirs(d, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".conf") as cfg:
        cfg.write(config)
        cfg.flush()
        proc = subprocess.Popen(
            [VTUND, "-n", "-f", cfg.name, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            assert proc.stderr is not None
            proc.stderr.close()


def connect_with_retry(port: int) -> socket.socket:
    deadline = time.monotonic() + 5
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=5)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def run_client(port: int, hs: ClientHandshake) -> Accepted | Denied:
    with connect_with_retry(port) as sock:
        for _ in range(10):
            data = sock.recv(hs.bytes_needed)
            assert data, "vtund closed the connection"
            hs.receive_data(data)
            out = hs.data_to_send()
            if out:
                sock.sendall(out)
            event = hs.next_event()
            if isinstance(event, Challenged):
                sock.sendall(hs.send(Answer()))
            elif event is not None:
                assert isinstance(event, Accepted | Denied)
                return event
    raise AssertionError("no decision from vtund")


SERVER_CONFIG = """
options {{ port {port}; bindaddr {{ addr 127.0.0.1; }}; timeout 5; }}
t1 {{ passwd secret123; type tty; proto tcp; compress zlib:9; encrypt aes128cbc;
      keepalive yes; }}
"""


def test_our_client_against_vtund_server() -> None:
    port = free_port()
    with vtund(SERVER_CONFIG.format(port=port), "-s"):
        ok = run_client(port, ClientHandshake("t1", PASSWORD))
        assert ok == Accepted(Flags(type="tty", zlib=9, keepalive=True, encrypt=10), "<TtC9KE10>")
        # the extra HOST token reserved for native mode is ignored by vtund
        ok = run_client(port, ClientHandshake("t1", PASSWORD, host_extra=("vt1",)))
        assert isinstance(ok, Accepted)
        assert run_client(port, ClientHandshake("t1", b"wrong")) == Denied()
        assert run_client(port, ClientHandshake("nosuch", PASSWORD)) == Denied()


CLIENT_CONFIG = """
options {{ port {port}; timeout 5; }}
t1 {{ passwd {password}; type tty; persist no; }}
"""


def serve_one(listener: socket.socket, password: bytes) -> tuple[bool, list[tuple[int, bytes]]]:
    """Run our server handshake against one vtund client; return (accepted, frames)."""
    conn, _ = listener.accept()
    with conn:
        conn.settimeout(5)
        hs = ServerHandshake()
        conn.sendall(hs.data_to_send())
        for _ in range(4):
            data = conn.recv(hs.bytes_needed)
            assert data
            hs.receive_data(data)
            event = hs.next_event()
            if isinstance(event, HostAnnounced):
                assert event == HostAnnounced("t1")
                conn.sendall(hs.send(Challenge(os.urandom(16))))
            elif isinstance(event, ChallengeAnswered):
                if not hs.check(password):
                    conn.sendall(hs.send(Reject()))
                    return False, []
                conn.sendall(hs.send(Accept(Flags(type="tty", keepalive=True))))
                break
        # vtund enters the tunnel and sends an ECHO_REQ at once (spec 2.2)
        decoder = StreamDecoder()
        frames: list[tuple[int, bytes]] = []
        deadline = time.monotonic() + 5
        while not frames and time.monotonic() < deadline:
            frames += decoder.feed(conn.recv(4096))
        conn.sendall(VTUN_FRAMING.control(CONN_CLOSE))
        return True, frames


@pytest.mark.parametrize(("client_pw", "accepted"), [("secret123", True), ("wrong1", False)])
def test_vtund_client_against_our_server(client_pw: str, accepted: bool) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(10)
        port = listener.getsockname()[1]
        config = CLIENT_CONFIG.format(port=port, password=client_pw)
        with vtund(config, "t1", "127.0.0.1") as proc:
            ok, frames = serve_one(listener, PASSWORD)
            assert ok is accepted
            if accepted:
                assert frames[0] == (ECHO_REQ, b"")
            proc.wait(10)  # no persist: it exits after CONN_CLOSE or ERR
