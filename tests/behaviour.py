"""Helpers shared by the ``test_behaviour_*`` files: configs, stream scripts, log checks.

Everything runs inside namespaces made by :mod:`netns`; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from netns import HarnessError, Netns
from peers import DEFAULT_PASSWD, VtClient, VtServer, vtund_conf

PASSWD = DEFAULT_PASSWD
HOST = "bt1"


def conf(host: str = HOST, options: dict | None = None, vt_options: dict | None = None,
         extra_hosts: str = "", **settings: object) -> str:
    """A config for vt or vtund (``vtund_conf``), plus vt-only ``options`` (lockdir, statdir)."""
    text = vtund_conf(host, options, **settings)
    if vt_options:
        lines = "".join(f"  {k} {v};\n" for k, v in vt_options.items())
        text = text.replace("options {\n", "options {\n" + lines, 1)
    return text + extra_hosts


def wait_for(pred: Callable[[], object], timeout: float, what: str, step: float = 0.1):
    """Poll ``pred`` until truthy (bounded); returns its value or raises HarnessError."""
    deadline = time.monotonic() + timeout
    while True:
        val = pred()
        if val:
            return val
        if time.monotonic() >= deadline:
            raise HarnessError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


@contextlib.contextmanager
def frozen(pid: int) -> Iterator[Callable[[], float]]:
    """A daemon this test started goes silent (SIGSTOP) for the block, and resumes even if
    the block fails; yields a clock of the seconds since it stopped."""
    tree = [pid, *_descendants(pid)]  # with workers (issue 18) the data path is there
    for each in tree:
        os.kill(each, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        yield lambda: time.monotonic() - stopped
    finally:
        for each in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(each, signal.SIGCONT)


def children(pid: int) -> list[int]:
    """The children of ``pid`` (/proc/PID/task/*/children); none once it is gone."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    out: list[int] = []
    for task in tasks:
        try:
            out += map(int, Path(f"/proc/{pid}/task/{task}/children").read_text().split())
        except OSError:
            continue
    return out


def _descendants(pid: int) -> list[int]:
    """Children, grandchildren ... of ``pid``."""
    out: list[int] = []
    todo = [pid]
    while todo and len(out) < 1000:
        kids = children(todo.pop())
        out += kids
        todo += kids
    return out


def vt_status(*args: object) -> str:
    """``vt status ARGS`` run as a user would (outside every namespace); its output."""
    res = subprocess.run([sys.executable, "-m", "vtcore", "status", *map(str, args)],
                         capture_output=True, text=True, timeout=30)  # fmt: skip
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    return res.stdout


def status_docs() -> dict[int, dict]:
    """``vt status --json``, by daemon PID."""
    return {d["pid"]: d for d in json.loads(vt_status("--json"))}


def count_lines(path: Path, word: str) -> int:
    try:
        return sum(1 for line in path.read_text().splitlines() if line.strip() == word)
    except FileNotFoundError:
        return 0


def ifindex(ns: Netns, dev: str) -> int | None:
    res = ns.run("cat", f"/sys/class/net/{dev}/ifindex", check=False)
    return int(res.stdout) if res.returncode == 0 else None


def link_counters(ns: Netns, dev: str) -> tuple[int, int]:
    """(rx_packets, tx_packets) of ``dev`` in ``ns``."""
    rx = ns.run("cat", f"/sys/class/net/{dev}/statistics/rx_packets").stdout
    tx = ns.run("cat", f"/sys/class/net/{dev}/statistics/tx_packets").stdout
    return int(rx), int(tx)


_SESSION_LINES = {
    # vt's log lines for session start and end, and the context each must carry.
    "server": {"session opened": ("host=", "peer="), "session up": ("host=", "peer="),
               "session closed": ("host=", "peer=", "reason="),
               "session failed": ("host=", "peer=", "error="),
               "denied": ("host=", "peer=")},
    "client": {"connected": ("host=", "server="), "session up": ("host=", "peer="),
               "session closed": ("host=", "server=", "reason="),
               "session failed": ("host=", "server=", "error=")},
}


def assert_no_secret(*peers, secret: str = PASSWD) -> None:
    """No log shows the password (nor a challenge), and every vt session start/end line
    names the host, the peer and (for an end) the reason."""
    for p in peers:
        text = p.log()
        assert secret not in text, f"{p.kind} logged the password"
        assert not re.search(r"CHAL: <[a-p]{32}>", text), f"{p.kind} logged a challenge"
        role = {"vt-server": "server", "vt-client": "client"}.get(p.kind)
        for line in text.splitlines() if role else ():
            for event, keys in _SESSION_LINES[role].items():
                if event in line:
                    missing = [k for k in keys if k not in line]
                    assert not missing, f"{p.kind} log line lacks {missing}: {line}"


def stream_script(send: Path, recv: Path) -> str:
    """An ``up`` program that writes what it receives to ``recv`` and sends ``send``.

    ``stty`` makes a vtund pty raw (vt's already is); a pipe is no tty, hence ``2>/dev/null``.
    The sleep lets the other side's program start before the stream arrives.
    """
    return (f"program /bin/sh \"-c 'stty raw -echo -iexten 2>/dev/null; "
            f"(sleep 1; cat {send}; sleep 60) & exec cat > {recv}'\"")


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1


# --------------------------------------------------------------------------------------------
# Raw handshake probes, run inside a namespace (the test process itself is not in it)

PROBE_SCRIPT = r"""
import json, socket, sys, time
from vtcore.protocol.handshake import ClientHandshake, pack_msg
from vtcore.protocol.events import Accepted, Answer, Challenged, Denied
addr, port, kind, host, pw, limit = sys.argv[1:7]
port = int(port); limit = float(limit)
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.settimeout(limit)
s.connect((addr, port))
def read_all():
    # Everything the server sends until it closes (or the limit passes).
    out = b""
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < limit:
            d = s.recv(4096)
            if not d:
                return out, "closed"
            out += d
    except socket.timeout:
        return out, "timeout"
    except ConnectionResetError:
        return out, "reset"
    return out, "timeout"
t0 = time.monotonic()
if kind in ("auth", "badpw", "unknown"):
    hs = ClientHandshake(host, pw.encode())
    greeting = b""
    while len(greeting) < 50:
        greeting += s.recv(50 - len(greeting))
    hs.receive_data(greeting)
    hs.next_event()
    s.sendall(hs.data_to_send())
    chal = b""
    while len(chal) < 50:
        chal += s.recv(50 - len(chal))
    hs.receive_data(chal)
    s.sendall(hs.send(Answer()) if isinstance(hs.next_event(), Challenged) else b"")
    data, end = read_all()
elif kind == "garbage":
    s.recv(50)
    s.sendall(b"\xff\x00GET / HTTP/1.0\r\n" + bytes(range(256)) * 2)
    data, end = read_all()
elif kind == "truncated":
    s.recv(50)
    s.sendall(b"HOST: " + host.encode()[:2])
    data, end = read_all()
elif kind == "truncated_chal":
    s.recv(50)
    s.sendall(pack_msg("HOST: " + host + "\n"))
    s.recv(50)
    s.sendall(b"CHAL: <abc")
    data, end = read_all()
elif kind == "dribble":
    # One byte per second: never silent for long, never done.
    s.recv(50)
    msg = pack_msg("HOST: " + host + "\n")
    end = "timeout"
    data = b""
    for b in msg:
        try:
            s.sendall(bytes([b]))
        except OSError:
            end = "closed"
            break
        s.settimeout(1.0)
        try:
            d = s.recv(4096)
            if not d:
                end = "closed"
                break
            data += d
        except socket.timeout:
            pass
        except ConnectionResetError:
            end = "reset"
            break
        if time.monotonic() - t0 > limit:
            break
elif kind == "silent":
    data, end = read_all()
    if data.startswith(b"VTUN"):
        data = data[50:]
else:
    raise SystemExit("unknown kind")
print(json.dumps({"data": data.hex(), "end": end, "elapsed": time.monotonic() - t0}))
"""


def probe(ns: Netns, addr: str, port: int, kind: str, host: str = HOST, pw: str = "wrong-pw",
          limit: float = 15) -> dict:
    """Run one raw handshake probe in ``ns``; returns ``{"data": bytes, "end": ..., ...}``."""
    import json

    res = ns.run(sys.executable, "-c", PROBE_SCRIPT, addr, port, kind, host, pw, limit,
                 timeout=limit + 10, check=False)
    if res.returncode != 0:
        raise HarnessError(f"probe {kind} failed: {res.stderr.strip()}")
    out = json.loads(res.stdout)
    out["data"] = bytes.fromhex(out["data"])
    return out


def probe_bg(ns: Netns, addr: str, port: int, kind: str, host: str = HOST,
             pw: str = "wrong-pw", limit: float = 15) -> subprocess.Popen:
    """Start a probe in the background; read its JSON line from ``stdout`` later."""
    return ns.popen(sys.executable, "-c", PROBE_SCRIPT, addr, port, kind, host, pw, limit,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)


ERR_BLOCK = b"ERR\n" + b"\0" * 46


def tmpdir(prefix: str = "vt-beh-") -> Path:
    import tempfile

    d = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(d, 0o755)
    return d


__all__ = [
    "ERR_BLOCK", "HOST", "PASSWD", "VtClient", "VtServer", "assert_no_secret", "conf",
    "count_lines", "file_size", "ifindex", "link_counters", "probe", "probe_bg",
    "stream_script", "tmpdir", "wait_for",
]
