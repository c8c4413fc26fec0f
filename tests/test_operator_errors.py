"""Errors an operator can act on (issue 17 item 7): each says what failed, where, and
what to do, in vt's words rather than Python's; and a failure on one end never leaves
the other holding a session."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from behaviour import ERR_BLOCK, HOST, PASSWD, conf, probe, wait_for
from netns import busy_loopback_port, requires_netns, two_hosts
from peers import VtClient, VtServer

from vtcore.config import load_config
from vtcore.runtime import reconnect
from vtcore.runtime.client import Client, ConnectError

TIMEOUT = 3


# ------------------------------------------------------------------ refused connection


def test_refused_connection_names_the_address_and_port(tmp_path: Path) -> None:
    """Not Python's "[Errno 111] Connect call failed": who refused, at which port."""
    with socket.socket() as holder:  # a port nothing listens on (bound, never listening)
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        path = tmp_path / "vt.conf"
        path.write_text("options { timeout 5; }\nconn { passwd secret; }\n")
        client = Client(load_config(str(path)), "conn", "127.0.0.1", plugins=None)
        client.o.port = port
        with pytest.raises(ConnectError) as exc:
            asyncio.run(client._open_socket())
    assert str(exc.value).startswith(f"connection refused by 127.0.0.1:{port}"), exc.value
    assert "Errno" not in str(exc.value)


# ------------------------------------------------------------------ port in use


def test_port_in_use_names_the_address_and_port(tmp_path: Path) -> None:
    with busy_loopback_port() as port:
        cfg = tmp_path / "vt.conf"
        cfg.write_text(f"options {{ lockdir {tmp_path}/lock; statdir {tmp_path}/stat; }}\n"
                       "conn { passwd secret; }\n")
        cfg.chmod(0o600)
        res = subprocess.run(
            [sys.executable, "-m", "vtcore", "serve", "-n", "-q", "-f", cfg, "-L", "127.0.0.1",
             "-P", str(port)], capture_output=True, text=True, timeout=30)
    assert res.returncode == 1, res.stderr
    assert (f"vt: cannot listen on 127.0.0.1:{port}: Address already in use "
            "(another program listens there") in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


# ------------------------------------------------------------------ tun: capability, module

_OPEN_TUN = """
from vt_devices.tun import open_tun
try:
    open_tun("vtopen0")
except OSError as exc:
    print(exc)
"""


def _open_tun(*wrapper: str) -> str:
    res = subprocess.run([*wrapper, sys.executable, "-c", _OPEN_TUN], capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def test_tun_without_cap_net_admin_names_the_capability() -> None:
    requires_netns()  # root, so there is a capability to take away
    out = _open_tun("setpriv", "--bounding-set", "-net_admin", "--inh-caps", "-net_admin")
    assert out.startswith("cannot open tun device vtopen0: Operation not permitted "
                          "(needs the CAP_NET_ADMIN capability"), out


@pytest.mark.parametrize("node, hint", [
    ("", "(no /dev/net/tun: load the tun module, 'modprobe tun'"),
    # a node for a minor no driver has: what a kernel without the tun module answers
    ("mknod /dev/net/tun c 10 201 && ", "(the kernel has no tun driver: load the tun module"),
])
def test_tun_without_the_device_names_the_module(node: str, hint: str) -> None:
    requires_netns()  # root: a private mount namespace hides the real /dev/net
    out = _open_tun("unshare", "-m", "sh", "-c",
                    f'mount -t tmpfs none /dev/net && {node}exec "$0" "$@"')
    assert out.startswith("cannot open /dev/net/tun: ") and hint in out, out


# ------------------------------------------------------------------ wrong password, persist


def test_reconnect_delay_doubles_to_its_ceiling() -> None:
    delays = [reconnect.FIRST]
    for _ in range(12):
        delays.append(reconnect.grown(delays[-1], reconnect.AUTH_MAX))
    assert delays[:4] == [1.0, 2.0, 4.0, 8.0]
    assert max(delays) == reconnect.AUTH_MAX == delays[-1]
    assert reconnect.grown(20.0, reconnect.MAX) == reconnect.MAX


@pytest.mark.parametrize("unit", [0.0, 0.25, 0.999999, 1.0, -3.0, 7.0])
def test_jitter_stays_in_the_upper_half_of_the_delay(unit: float) -> None:
    wait = reconnect.jittered(8.0, unit)
    assert 4.0 <= wait <= 8.0


def test_jitter_spreads_clients_that_fail_together() -> None:
    """Two clients with different random draws wait different times (vtund: both 1, 2,
    4 ... s in lock-step)."""
    assert reconnect.jittered(8.0, 0.1) != reconnect.jittered(8.0, 0.9)


@pytest.mark.netns
def test_wrong_password_says_authentication_failed_and_backs_off_with_jitter() -> None:
    with two_hosts() as p:
        p.add_tunnel_devices()
        scfg = conf(HOST, options={"timeout": TIMEOUT}, type="tun", proto="tcp", device="tsrv")
        ccfg = conf(HOST, passwd="not-the-password", persist="yes", device="tcli")
        with VtServer(p.a, scfg), VtClient(p.b, ccfg, HOST, p.a_addr) as c:
            c.wait_log(r"reconnecting.*\n(.*\n)*.*reconnecting", timeout=15)
            log = c.log()
    assert f"authentication failed for host {HOST}: {p.a_addr} refused it" in log, log
    delays = [float(d) for d in re.findall(r"reconnecting\s.*?delay=([0-9.]+)", log)]
    ceilings = set(re.findall(r"reconnecting\s.*?ceiling=([0-9.]+)", log))
    assert len(delays) >= 2, log
    assert 0.5 <= delays[0] <= 1.0 and 1.0 <= delays[1] <= 2.0, delays  # jittered, doubling
    assert ceilings == {str(reconnect.AUTH_MAX)}, log
    assert "not-the-password" not in log


# ------------------------------------------------------------------ unknown host


@pytest.mark.netns
def test_unknown_host_is_logged_as_such_but_answered_like_a_wrong_password() -> None:
    with two_hosts() as p:
        scfg = conf(HOST, options={"timeout": TIMEOUT}, type="tun", proto="tcp")
        with VtServer(p.a, scfg) as s:
            badpw = probe(p.b, p.a_addr, 5000, "badpw", pw="not-the-password")
            unknown = probe(p.b, p.a_addr, 5000, "unknown", host="nosuchhost", pw=PASSWD)
            s.wait_log(r"unknown host.*nosuchhost", timeout=5)
            log = s.log()
    assert badpw["data"] == unknown["data"] == ERR_BLOCK
    assert badpw["end"] == unknown["end"]
    assert re.search(rf"denied: authentication failed.*host={HOST}\b", log), log
    assert not re.search(rf"unknown host.*host={HOST}\b", log), log
    assert PASSWD not in log


# ------------------------------------------------------------------ devices that will not open


def _busy_tap(ns, name: str) -> None:
    """A tap device named ``name``: opening it as tun fails (EINVAL), as a device another
    program set up differently would."""
    ns.run("ip", "tuntap", "add", "dev", name, "mode", "tap")


@pytest.mark.netns
def test_server_that_cannot_open_its_device_refuses_before_accepting() -> None:
    with two_hosts() as p:
        _busy_tap(p.a, "tsrv")
        scfg = conf(HOST, options={"timeout": TIMEOUT}, type="tun", proto="tcp", device="tsrv")
        ccfg = conf(HOST, device="tcli")
        with VtServer(p.a, scfg) as s:
            good = probe(p.b, p.a_addr, 5000, "auth", pw=PASSWD)
            s.wait_log(r"denied: cannot set up the host", timeout=5)
            with VtClient(p.b, ccfg, HOST, p.a_addr, expect_exit=True) as c:
                wait_for(lambda: not c.alive(), 15, "client exit")
                client_log = c.log()
            log = s.log()
    assert good["data"] == ERR_BLOCK, good  # ERR where vtund would say OK and then fail
    assert "cannot open tun device tsrv" in log, log
    assert "session opened" not in log, log
    assert f"authentication failed for host {HOST}" in client_log, client_log


@pytest.mark.netns
def test_client_that_cannot_open_its_device_tells_the_server() -> None:
    """Over udp nothing else would: the server's session would hold the host (and its
    addresses) until its keep-alive gave up, (4+2)*31 s with ``keepalive yes``."""
    with two_hosts() as p:
        p.add_tunnel_devices()
        _busy_tap(p.b, "tbusy")
        scfg = conf(HOST, options={"timeout": TIMEOUT}, type="tun", proto="udp",
                    device="tsrv", keepalive="yes")
        ccfg = conf(HOST, device="tbusy")
        with VtServer(p.a, scfg) as s:
            with VtClient(p.b, ccfg, HOST, p.a_addr, expect_exit=True) as c:
                wait_for(lambda: not c.alive(), 15, "client exit")
                client_log = c.log()
            closed = s.wait_log(r"session closed.*", timeout=5).group(0)
    assert "cannot open tun device tbusy" in client_log, client_log
    assert "connection closed by other side" in closed, closed



# ------------------------------------------------------------------ workers' user


@pytest.mark.parametrize("role", ["serve", "run"])
def test_a_missing_workers_user_is_one_line_before_anything_starts(tmp_path: Path,
                                                                   role: str) -> None:
    """``options { workers 2; user NAME; }`` with no such user: refused at start, on the
    terminal, with what to do (issue 18); as root only (else the workers run as the
    caller and there is no user to look up)."""
    requires_netns()  # root: a skip on a laptop, a failure under CI
    cfg = tmp_path / "vt.conf"
    cfg.write_text(f"options {{ workers 2; user no-such-vt-user; lockdir {tmp_path}/lock; "
                   f"statdir {tmp_path}/stat; }}\nconn {{ passwd secret; type pipe; }}\n")
    cfg.chmod(0o600)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
    argv = (["serve", "-L", "127.0.0.1", "-P", str(port)] if role == "serve"
            else ["run", "conn", "127.0.0.1", "-P", str(port)])
    res = subprocess.run([sys.executable, "-m", "vtcore", argv[0], "-n", "-q", "-f", cfg,
                          *argv[1:]], capture_output=True, text=True, timeout=30)
    assert res.returncode == 1, res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        "vt: user no-such-vt-user does not exist (see the README: useradd --system "
        "--no-create-home --shell /usr/sbin/nologin vt)"), res.stderr
    assert "Traceback" not in res.stderr
