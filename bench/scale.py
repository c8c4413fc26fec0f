"""Scale: N concurrent client sessions against one server (vtund or vt).

The server host gets N pre-made tun devices ``bs<i>`` (local 172.20.0.1, peer
172.21.<i//250>.<i%250+1>) and a config with N profiles ``s<i>`` (tun over tcp, one device
each).  The clients are one Python process (``vtclients.py``) on the other host: it logs
all N sessions in at once, sends one ICMP echo through each tunnel and reports handshake
times and how many echoes came back.  While the sessions are held open the benchmark reads
the PSS of every server process; memory per session is its growth over the idle server,
divided by N.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from measure import percentile
from netns import HarnessError, Pair, free_port
from peers import DEFAULT_PASSWD, VtServer, VtundServer
from procstat import usage
from tunnels import BenchError, _pinned, pin

LOCAL = "172.20.0.1"
PEER_BASE = "172.21"
HERE = Path(__file__).resolve().parent


def peer_addr(i: int) -> str:
    return f"{PEER_BASE}.{i // 250}.{i % 250 + 1}"


def prepare_devices(pair: Pair, n: int) -> None:
    """N persistent tun devices on the server host, in one ``ip -batch`` (no IPv6 chatter)."""
    for key in ("all", "default"):
        pair.a.run("sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1")
    lines = []
    for i in range(n):
        lines += [
            f"tuntap add dev bs{i} mode tun",
            f"addr add {LOCAL} peer {peer_addr(i)} dev bs{i}",
            f"link set dev bs{i} up",
        ]
    with tempfile.NamedTemporaryFile("w", suffix=".ip", delete=False) as f:
        f.write("\n".join(lines) + "\n")
    try:
        pair.a.run("ip", "-batch", f.name, timeout=120)
    finally:
        os.unlink(f.name)


def server_conf(n: int, port: int) -> str:
    """vtund.conf with profiles s0..s<n-1>, each tun over tcp on its own device."""
    out = ["options {", f"  port {port};", "  timeout 30;", "}", ""]
    for i in range(n):
        out += [
            f"s{i} {{",
            f"  passwd {DEFAULT_PASSWD};",
            "  type tun;",
            "  proto tcp;",
            f"  device bs{i};",
            "}",
        ]
    return "\n".join(out) + "\n"


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    """One stdout line from ``proc`` within ``timeout`` seconds (bounded)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    buf = b""
    fd = proc.stdout.fileno()
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
            if b"\n" in buf:
                return buf.split(b"\n", 1)[0].decode()
        elif proc.poll() is not None:
            break
    raise BenchError(f"session client gave no report within {timeout}s")


def run_scale(
    impl: str,
    pair: Pair,
    n: int,
    cpus: tuple[int | None, int | None],
    rate: float = 100.0,
    timeout: float = 60,
) -> dict:
    """One scale measurement; devices ``bs0..`` must already exist for at least ``n``."""
    port = free_port()
    srv_cls = VtundServer if impl == "vtund" else VtServer
    server = _pinned(srv_cls, cpus[0])(pair.a, server_conf(n, port), port=port)
    client: subprocess.Popen | None = None
    try:
        try:
            server.start(timeout=20)
        except HarnessError as e:
            raise BenchError(f"{impl} server did not start: {str(e)[:300]}") from None
        assert server.proc is not None
        time.sleep(0.3)
        base = usage([server.proc.pid])
        env = dict(os.environ, VT_BENCH_PW=DEFAULT_PASSWD)
        client = pair.b.popen(
            *pin(cpus[1]), sys.executable, HERE / "vtclients.py", pair.a_addr, port, n,
            "--local", LOCAL, "--peer-base", PEER_BASE, "--timeout", 30, "--hold", timeout + 30,
            "--rate", rate,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        report = json.loads(_read_line(client, timeout + 30 + (n / rate if rate > 0 else 0)))
        loaded = usage([server.proc.pid])
        hs = report["handshake_s"]
        out = {
            "n": n,
            "logged_in": report["logged_in"],
            "passing": report["passing"],
            "handshake_p50_ms": _ms(percentile(hs, 50)),
            "handshake_p99_ms": _ms(percentile(hs, 99)),
            "login_wall_s": report["login_wall_s"],
            "server_pss_idle_kb": base.pss_kb,
            "server_pss_kb": loaded.pss_kb,
            "server_procs": loaded.nprocs,
            "server_hwm_kb": loaded.hwm_kb,
            "pss_per_session_kb": (loaded.pss_kb - base.pss_kb) / n,
            "server_anon_pss_idle_kb": base.anon_pss_kb,
            "server_anon_pss_kb": loaded.anon_pss_kb,
            "anon_pss_per_session_kb": (loaded.anon_pss_kb - base.anon_pss_kb) / n,
            "errors": report["errors"],
            "server_alive": server.alive(),
        }
        return out
    except (json.JSONDecodeError, KeyError) as e:
        raise BenchError(f"bad session client report: {e}") from None
    finally:
        if client is not None:
            try:
                assert client.stdin is not None
                client.stdin.write(b"\n")
                client.stdin.close()
                client.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                client.kill()
                client.wait(timeout=5)
        server.stop()
        server._dir.cleanup()


def _ms(s: float | None) -> float | None:
    return None if s is None else s * 1000
