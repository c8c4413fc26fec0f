"""``options { workers N; }``: a root master, sessions in unprivileged workers (issue 18).

Live, in network namespaces: the workers run as ``nobody`` with no capabilities and carry
the sessions (their descriptors hold the tun devices), the master runs the up and down
commands as root; killing a worker ends only its sessions (their down commands run, the
persistent client comes back within seconds, the other session's transfer completes);
SIGHUP reloads every worker without dropping a session; a vtund client is served as
before.  The master's side of the channel is tested against a worker that misbehaves
(tests/rogue_worker.py): each kind of unauthorised request gets it killed and logged.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import peers
import pytest
from behaviour import HOST, children, conf, status_docs, tmpdir, wait_for
from netns import iperf3, ping, two_hosts, wait_ping
from peers import VtClient, VtServer, VtundClient, requires_vtund

HOST2 = "bt2"


@pytest.fixture
def d(monkeypatch) -> Iterator[Path]:
    """The test's directory (locks, stat, marks), its own ``vt status`` run dir; removed."""
    path = tmpdir()
    monkeypatch.setenv("VT_RUN_DIR", str(path / "run"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
ROGUE = Path(__file__).with_name("rogue_worker.py")


class PersistClient(VtClient):
    def argv(self):
        return [*super().argv(), "-p"]


def _proc_status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def _fd_targets(pid: int) -> list[str]:
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return out


def _children(pid: int) -> set[int]:
    return set(children(pid))


def _server_doc(pid: int) -> dict:
    return status_docs()[pid]


def _with_sessions(pid: int, count: int) -> dict | None:
    """The daemon's status document once it lists ``count`` sessions, else None."""
    doc = status_docs()[pid]
    return doc if len(doc["sessions"]) == count else None


def _updown(marks: Path, name: str) -> dict[str, list[str]]:
    return {
        "up": [f"program /bin/sh \"-c 'echo up-$(id -u) >> {marks}/{name}'\" wait"],
        "down": [f"program /bin/sh \"-c 'echo down-$(id -u) >> {marks}/{name}'\" wait"],
    }


def _two_host_server(d: Path, workers: int = 2, proto2: str = "tcp", **extra) -> str:
    """bt1 (tun, tcp, device tsrv) and bt2 (tun, ``proto2``, device tsrv2), each with up
    and down commands that record the user they ran as."""
    marks = d / "marks"
    marks.mkdir(exist_ok=True)
    second = conf(HOST2, type="tun", proto=proto2, device="tsrv2", **_updown(marks, HOST2))
    second = second[second.index(f"{HOST2} {{"):]
    return conf(HOST, vt_options={"workers": workers, "user": "nobody",
                                  "lockdir": d / "locks", "statdir": d / "stat", **extra},
                type="tun", proto="tcp", device="tsrv", multi="no",
                **_updown(marks, HOST)) + "\n" + second


def _marks(d: Path, name: str) -> list[str]:
    try:
        return (d / "marks" / name).read_text().split()
    except FileNotFoundError:
        return []


@pytest.mark.netns
def test_workers_carry_sessions_without_root_or_capabilities(d: Path) -> None:
    with two_hosts() as p:
        ta, tb = p.add_tunnel_devices()
        ta2, tb2 = p.add_tunnel_devices("tsrv2", "tcli2")
        scfg = _two_host_server(d, proto2="udp")
        with VtServer(p.a, scfg) as s, \
                VtClient(p.b, conf(HOST, device="tcli"), HOST, p.a_addr), \
                VtClient(p.b, conf(HOST2, device="tcli2"), HOST2, p.a_addr):
            wait_ping(p.b, ta, timeout=15)
            wait_ping(p.b, ta2, timeout=15)
            doc = wait_for(lambda: _with_sessions(s.proc.pid, 2), 10, "both sessions in vt status")
            workers = {w["pid"] for w in doc["workers"]}
            assert len(workers) == 2 and workers == _children(s.proc.pid)
            by_host = {x["host"]: x for x in doc["sessions"]}
            assert {by_host[HOST]["proto"], by_host[HOST2]["proto"]} == {"tcp", "udp"}
            # Spread: the second connection went to the idle worker.
            assert by_host[HOST]["worker"] != by_host[HOST2]["worker"]
            assert {by_host[HOST]["worker"], by_host[HOST2]["worker"]} == workers
            for pid in workers:
                st = _proc_status(pid)
                assert st["Uid"].split() == ["65534"] * 4, st["Uid"]
                assert st["Gid"].split() == ["65534"] * 4, st["Gid"]
                assert st["Groups"] == ""
                assert int(st["CapEff"], 16) == int(st["CapPrm"], 16) == 0
                assert int(st["CapAmb"], 16) == 0
                assert st["NoNewPrivs"] == "1"
                # The data path is here: the worker holds its session's tun device.
                assert "/dev/net/tun" in _fd_targets(pid)
            assert _proc_status(s.proc.pid)["Uid"].split()[0] == "0"
            # The master ran the up commands, as root.
            assert _marks(d, HOST) == ["up-0"] and _marks(d, HOST2) == ["up-0"]
            assert (d / "locks" / HOST).read_text() == f"{s.proc.pid}\n"
            text = subprocess.run([sys.executable, "-m", "vtcore", "status",
                                   str(s.proc.pid)], capture_output=True, text=True,
                                  timeout=20).stdout
            assert "2 workers as nobody, 2 session(s)" in text, text
            for pid in workers:
                assert f"worker: {pid}" in text, text
        # The clients left: each session's down ran once, as root, the lock is gone.
        assert _marks(d, HOST) == ["up-0", "down-0"]
        assert _marks(d, HOST2) == ["up-0", "down-0"]
        assert not (d / "locks" / HOST).exists()


@pytest.mark.netns
def test_killing_a_worker_ends_only_its_sessions(d: Path) -> None:
    with two_hosts() as p:
        ta, tb = p.add_tunnel_devices()
        ta2, tb2 = p.add_tunnel_devices("tsrv2", "tcli2")
        scfg = _two_host_server(d)
        with VtServer(p.a, scfg) as s, \
                PersistClient(p.b, conf(HOST, device="tcli"), HOST, p.a_addr) as c1, \
                PersistClient(p.b, conf(HOST2, device="tcli2"), HOST2, p.a_addr):
            wait_ping(p.b, ta, timeout=15)
            wait_ping(p.b, ta2, timeout=15)
            doc = wait_for(lambda: _with_sessions(s.proc.pid, 2), 10, "both sessions")
            by_host = {x["host"]: x for x in doc["sessions"]}
            victim, other = by_host[HOST]["worker"], by_host[HOST2]["worker"]
            assert victim != other
            since = by_host[HOST2]["since"]
            result: dict = {}

            def transfer(addr: str, key: str) -> None:
                try:
                    result[key] = iperf3(p.a, p.b, addr, seconds=6)
                except Exception as exc:  # reported below
                    result[f"{key}-error"] = exc

            # Bulk traffic through both; the killed worker's one may fail, not the other.
            bulks = [threading.Thread(target=transfer, args=(ta2, "iperf")),
                     threading.Thread(target=transfer, args=(ta, "victim"))]
            for bulk in bulks:
                bulk.start()
            time.sleep(2)
            os.kill(victim, signal.SIGKILL)
            killed = time.monotonic()
            s.wait_log(rf"worker ended .*worker={victim}", timeout=10)
            # Its session's down ran (by the master), and its client is back soon.
            wait_for(lambda: _marks(d, HOST) == ["up-0", "down-0", "up-0"], 10,
                     "down, then up again for the killed worker's session")
            wait_ping(p.b, ta, timeout=10)
            back = time.monotonic() - killed
            assert back < 5.0, f"reconnected after {back:.1f}s"
            assert c1.alive()
            for bulk in bulks:
                bulk.join(timeout=40)
            assert "iperf-error" not in result, result.get("iperf-error")
            assert result["iperf"]["bytes"] > 1_000_000, result["iperf"]["bits_per_second"]
            # The other session never noticed: same session, no down.
            doc = _server_doc(s.proc.pid)
            by_host = {x["host"]: x for x in doc["sessions"]}
            assert by_host[HOST2]["since"] == since and by_host[HOST2]["worker"] == other
            assert _marks(d, HOST2) == ["up-0"]
            # A new worker took the dead one's place.
            pids = {w["pid"] for w in doc["workers"]}
            assert len(pids) == 2 and victim not in pids and doc["restarts"] == 1


@pytest.mark.netns
def test_sighup_reloads_every_worker_without_dropping_sessions(d: Path) -> None:
    with two_hosts() as p:
        ta, tb = p.add_tunnel_devices()
        ta2, tb2 = p.add_tunnel_devices("tsrv2", "tcli2")
        full = _two_host_server(d)
        first = full[:full.index(f"{HOST2} {{")]  # bt2 comes with the reload
        with VtServer(p.a, first) as s, \
                VtClient(p.b, conf(HOST, device="tcli"), HOST, p.a_addr):
            wait_ping(p.b, ta, timeout=15)
            since = _server_doc(s.proc.pid)["sessions"][0]["since"]
            pinger = p.b.popen("ping", "-n", "-q", "-c", 30, "-i", 0.1, ta,
                               stdout=subprocess.PIPE, text=True)
            time.sleep(0.5)
            s.cfg.write_text(full)
            os.kill(s.proc.pid, signal.SIGHUP)
            s.wait_log(r"config reloaded", timeout=10)
            wait_for(lambda: len(re.findall(r"config reloaded .*worker=",
                                            s.log())) >= 2, 10, "both workers reloaded")
            with VtClient(p.b, conf(HOST2, device="tcli2"), HOST2, p.a_addr):
                wait_ping(p.b, ta2, timeout=15)
            out, _ = pinger.communicate(timeout=20)
            assert " 0% packet loss" in out, out
            sessions = {x["host"]: x for x in _server_doc(s.proc.pid)["sessions"]}
            assert sessions[HOST]["since"] == since


@pytest.mark.netns
def test_killold_replaces_a_session_held_by_another_worker(d: Path) -> None:
    with two_hosts() as p:
        ta, tb = p.add_tunnel_devices()
        scfg = conf(HOST, vt_options={"workers": 2, "user": "nobody",
                                      "lockdir": d / "locks"},
                    type="tun", proto="tcp", device="tsrv", multi="killold")
        ccfg = conf(HOST, device="tcli")
        with VtServer(p.a, scfg) as s, VtClient(p.b, ccfg, HOST, p.a_addr) as c1:
            wait_ping(p.b, ta, timeout=15)
            first = _server_doc(s.proc.pid)["sessions"][0]["worker"]
            # The old client stays up but its session goes; the new one (on the other,
            # idle worker) gets the host, the device and the lock.
            with VtClient(p.b, ccfg, HOST, p.a_addr) as c2:
                c1.wait_log(r"session closed", timeout=15)
                wait_for(lambda: not c1.alive(), 10, "old client to exit")
                wait_ping(p.b, ta, timeout=15)
                (new,) = _server_doc(s.proc.pid)["sessions"]
                assert new["worker"] != first
                assert c2.alive()
                assert (d / "locks" / HOST).read_text() == f"{s.proc.pid}\n"


@pytest.mark.netns
@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_a_vtund_client_is_served_by_a_worker(proto: str, d: Path) -> None:
    requires_vtund()
    with two_hosts() as p:
        ta, tb = p.add_tunnel_devices()
        scfg = conf(HOST, vt_options={"workers": 2, "user": "nobody",
                                      "lockdir": d / "locks"},
                    type="tun", proto=proto, device="tsrv", compress="lzo:1",
                    keepalive="yes")
        with VtServer(p.a, scfg) as s, VtundClient(p.b, conf(HOST, device="tcli"),
                                                  HOST, p.a_addr):
            wait_ping(p.b, ta, timeout=20)
            res = ping(p.b, ta, count=20, interval=0.05)
            assert res.loss == 0, res
            (sess,) = _server_doc(s.proc.pid)["sessions"]
            assert sess["worker"] in _children(s.proc.pid) and not sess["native"]
            assert sess["proto"] == proto


@pytest.mark.netns
@pytest.mark.parametrize("persist", ["yes", "keep"])
def test_the_client_runs_unprivileged_under_a_root_parent(persist: str, d: Path) -> None:
    marks = d / "marks"
    marks.mkdir()
    with two_hosts() as p:
        ta, tb = p.tunnel_addrs()
        p.a.add_tun("tsrv", addr=ta, peer=tb)
        scfg = conf(HOST, vt_options={"lockdir": d / "locks"}, type="tun", proto="tcp",
                    device="tsrv")
        # The client makes its device (persist keep keeps it across sessions).
        up = [f"program /bin/sh \"-c 'echo up-$(id -u) >> {marks}/c'\" wait",
              f"ip \"addr add {tb} peer {ta} dev %d\"", "ip \"link set %d up\""]
        ccfg = conf(HOST, vt_options={"workers": 1, "user": "nobody",
                                      "statdir": d / "stat"},
                    device="tcli", persist=persist, up=up,
                    down=[f"program /bin/sh \"-c 'echo down-$(id -u) >> {marks}/c'\" "
                          "wait"])
        with VtServer(p.a, scfg), VtClient(p.b, ccfg, HOST, p.a_addr) as c:
            wait_ping(p.b, ta, timeout=15)
            (child,) = _children(c.proc.pid)
            st = _proc_status(child)
            assert st["Uid"].split() == ["65534"] * 4
            assert int(st["CapEff"], 16) == int(st["CapPrm"], 16) == 0
            assert st["NoNewPrivs"] == "1"
            assert "/dev/net/tun" in _fd_targets(child)
            assert _marks(d, "c") == ["up-0"]
            doc = wait_for(lambda: _with_sessions(c.proc.pid, 1), 10, "the client's session in vt status")
            assert doc["sessions"][0]["worker"] == child
            index = p.b.run("cat", "/sys/class/net/tcli/ifindex").stdout.strip()
            # Killed, the child is replaced; the session is back within seconds.
            os.kill(child, signal.SIGKILL)
            killed = time.monotonic()
            c.wait_log(rf"worker ended .*worker={child}", timeout=10)
            wait_for(lambda: _marks(d, "c") == ["up-0", "down-0", "up-0"], 15,
                     "down, then up again")
            wait_ping(p.b, ta, timeout=10)
            assert time.monotonic() - killed < 5.0
            (again,) = _children(c.proc.pid)
            assert again != child
            now = p.b.run("cat", "/sys/class/net/tcli/ifindex").stdout.strip()
            # persist keep: the parent kept the device for the next session.
            assert (now == index) == (persist == "keep"), (index, now)
            c.stop()
            assert c.proc.returncode == 0, c.log()
        assert _marks(d, "c") == ["up-0", "down-0", "up-0", "down-0"]


# ---------------------------------------------------------------- the default


def test_the_default_is_one_worker_per_cpu_where_they_can_drop_privileges() -> None:
    from vtcore.runtime.master import CAP_SETGID, CAP_SETUID, default_workers

    both = 1 << CAP_SETUID | 1 << CAP_SETGID
    assert default_workers(0, both, 4) == (4, "")
    assert default_workers(0, (1 << 41) - 1, 1) == (1, "")
    assert default_workers(1000, both, 4)[0] == 0  # not root: nothing to drop
    count, why = default_workers(0, both & ~(1 << CAP_SETUID), 4)
    assert count == 0 and why == "no CAP_SETUID to start unprivileged workers"
    assert default_workers(0, 0, 4)[1] == "no CAP_SETUID and CAP_SETGID to start " \
        "unprivileged workers"


def _default_user() -> tuple[str, int]:
    import pwd

    for name in ("vt", "nobody"):
        try:
            return name, pwd.getpwnam(name).pw_uid
        except KeyError:
            continue
    raise AssertionError("neither vt nor nobody exists")


class PrefixedServer(VtServer):
    """vt's server started through ``prefix`` (taskset, setpriv)."""

    def __init__(self, *args, prefix: list[str], **kw) -> None:
        super().__init__(*args, **kw)
        self.prefix = prefix

    def argv(self):
        return [*self.prefix, *super().argv()]


@pytest.mark.netns
@pytest.mark.parametrize("start", ["plain", "one-cpu", "no-setuid"])
def test_a_root_server_and_client_split_by_default(start: str, d: Path, monkeypatch) -> None:
    """No ``workers`` in the config: one worker per CPU of the daemon's affinity, as the
    default user; one root process where it could not drop privileges (and it says so);
    the client splits too."""
    monkeypatch.setattr(peers, "TEST_WORKERS", "auto")  # the shipped default, untouched
    prefix = {"plain": [], "one-cpu": ["taskset", "-c", str(min(os.sched_getaffinity(0)))],
              "no-setuid": ["setpriv", "--bounding-set", "-setuid,-setgid", "--"]}[start]
    expected = {"plain": len(os.sched_getaffinity(0)), "one-cpu": 1, "no-setuid": 0}[start]
    user, uid = _default_user()
    with two_hosts() as p:
        ta, tb = p.add_tunnel_devices()
        scfg = conf(HOST, vt_options={"lockdir": d / "locks", "statdir": d / "stat"},
                    type="tun", proto="udp", device="tsrv")
        with PrefixedServer(p.a, scfg, prefix=prefix) as s, \
                VtClient(p.b, conf(HOST, vt_options={"statdir": d / "stat"}, proto="udp",
                                   device="tcli"), HOST, p.a_addr) as c:
            wait_ping(p.b, ta, timeout=15)
            doc = wait_for(lambda: _with_sessions(s.proc.pid, 1), 10, "the session in vt status")
            workers = {w["pid"] for w in doc.get("workers", [])}
            assert len(workers) == expected and workers == _children(s.proc.pid)
            for pid in workers:
                assert _proc_status(pid)["Uid"].split() == [str(uid)] * 4
                assert int(_proc_status(pid)["CapEff"], 16) == 0
            if expected:
                assert doc["sessions"][0]["worker"] in workers
                assert "workers off" not in s.log()
            else:
                s.wait_log(r"workers off: one process runs every session as root.*"
                           r"no CAP_SETUID and CAP_SETGID")
                assert "worker" not in doc["sessions"][0] or not doc["sessions"][0]["worker"]
            (child,) = _children(c.proc.pid)
            assert _proc_status(child)["Uid"].split() == [str(uid)] * 4, user


# ---------------------------------------------------------------- a rogue worker


CASES = {
    "good": None,  # the same script, behaving: nothing is killed (the test can fail)
    "wrong-proof": r"without the client's proof",
    "other-host": r"claim of host bt2 without the client's proof",
    "unknown-connection": r"claim for a connection it was not given",
    "second-claim": r"claim for a connection it was not given, or a second claim",
    "device-unclaimed": r"for a connection it holds no claim on",
    "second-device": r"a second device",
    "injected-up": r"up local: not an IP address",
    "up-twice": r"up without a device, or twice",
    "not-json": r"not JSON",
    "descriptor": r"sent descriptors",
    "unknown-op": r"unknown op",
    "other-type": r"device of type 'tun' for a pipe host",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_worker_asking_for_what_it_was_not_granted_is_killed(case: str, tmp_path,
                                                               monkeypatch) -> None:
    """The real master (in this process) with a worker that is the test's script: each
    unauthorised request gets it killed and logged; its session's down commands run and
    its device is closed all the same."""
    import asyncio

    import structlog

    from vtcore.config import load_config
    from vtcore.plugins import load_plugins
    from vtcore.runtime.master import Master
    from vtcore.runtime.server import ServerOptions

    monkeypatch.setenv("VT_RUN_DIR", str(tmp_path / "run"))
    marks = tmp_path / "marks"
    done = tmp_path / "done"
    pw = "Rogue-test-pw1"
    cfg = tmp_path / "vt.conf"
    cfg.write_text(
        "options {\n  workers 1;\n  user nobody;\n"
        f"  lockdir {tmp_path / 'locks'};\n}}\n"
        f"bt1 {{\n  passwd {pw};\n  type pipe;\n  multi no;\n"
        f"  up {{ program /bin/sh \"-c 'echo up >> {marks}'\" wait; }};\n"
        f"  down {{ program /bin/sh \"-c 'echo down >> {marks}'\" wait; }};\n}}\n"
        f"bt2 {{\n  passwd Other-test-pw2;\n  type pipe;\n}}\n")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    plugins = load_plugins()
    logged: list[str] = []

    def capture(_logger, _name, event):
        logged.append(json.dumps(event, default=str))
        raise structlog.DropEvent

    structlog.configure(processors=[structlog.processors.add_log_level, capture])

    class RogueMaster(Master):
        def _argv(self, fd: int) -> list[str]:
            return [sys.executable, str(ROGUE), str(fd), case, pw, str(done)]

    master = RogueMaster(str(cfg), load_config(str(cfg)), plugins, ServerOptions(),
                         listener, 1)
    port = listener.getsockname()[1]

    async def scenario() -> tuple[int | None, int]:
        serving = asyncio.get_running_loop().create_task(master.serve())
        try:
            await wait_until(lambda: master.workers[0] is not None, "worker started")
            rogue = master.workers[0]
            assert rogue is not None
            client = socket.create_connection(("127.0.0.1", port), timeout=5)
            try:
                await wait_until(lambda: rogue.proc.returncode is not None
                                 or done.exists(), "the rogue's end")
                await asyncio.sleep(0.3)
            finally:
                client.close()
            await wait_until(lambda: not master.grants, "grants closed")
            return rogue.proc.returncode, master.violations
        finally:
            master._stopping.set()
            await asyncio.wait_for(serving, 30)

    async def wait_until(pred, what: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {logged[-5:]}")
            await asyncio.sleep(0.05)

    try:
        rc, violations = asyncio.run(scenario())
    finally:
        listener.close()
        from vtcore import log

        log.configure("console", "warning")
    want = CASES[case]
    if want is None:
        assert violations == 0 and rc is None, (rc, logged)
        assert marks.read_text().split() == ["up", "down"]
        return
    assert rc == -signal.SIGKILL, (rc, logged)
    assert violations == 1, logged
    (line,) = [ln for ln in logged if "worker misbehaved" in ln]
    assert re.search(want, line), line
    assert pw not in "".join(logged)
    if case in ("second-device", "up-twice", "injected-up"):
        # What it was granted is taken back: the down commands ran if the up did.
        ran = marks.read_text().split() if marks.exists() else []
        assert ran in ([], ["up", "down"]), ran
    assert not (tmp_path / "locks" / "bt1").exists()

