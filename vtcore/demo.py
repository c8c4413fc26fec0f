"""``python -m vtcore.demo``: the main job, end to end, on one machine.

Two network namespaces joined by a veth pair; ``vt serve`` in one, ``vt run`` in the
other; pings and a 4 MB transfer through the tunnel; the counters of both ends shown;
everything torn down.  Needs root.  Traffic only crosses the namespaces made here.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STEP_TIMEOUT = 30


def sh(*argv: str, check: bool = True, text: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, capture_output=True, text=text,
                          timeout=STEP_TIMEOUT, **kw)


def in_ns(ns: str, *argv: str, **kw) -> subprocess.CompletedProcess:
    return sh("ip", "netns", "exec", ns, *argv, **kw)


SERVER_CONF = """\
options {{ port 5000; timeout 10; lockdir {tmp}/lock; statdir {tmp}/stat; }}
demo {{
  passwd "{password}";
  type tun; proto {proto};
  {features}
  keepalive 10:3;
  up {{
    ip "addr add 10.99.0.1/30 dev %d";
    ip "link set %d up";
  }};
}}
"""

CLIENT_CONF = """\
options {{ timeout 10; lockdir {tmp}/lock; statdir {tmp}/stat; }}
demo {{
  passwd "{password}";
  up {{
    ip "addr add 10.99.0.2/30 dev %d";
    ip "link set %d up";
  }};
}}
"""

TRANSFER_SERVER = r"""
import hashlib, socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.99.0.1", 7000)); s.listen(1); s.settimeout(20)
c, _ = s.accept(); c.settimeout(20); h = hashlib.sha256(); n = 0
while True:
    b = c.recv(65536)
    if not b: break
    h.update(b); n += len(b)
print(n, h.hexdigest())
"""

TRANSFER_CLIENT = r"""
import socket, sys
data = sys.stdin.buffer.read()
c = socket.create_connection(("10.99.0.1", 7000), timeout=20); c.sendall(data); c.close()
"""


def _features() -> str:
    from vtcore.plugins import load_plugins

    reg = load_plugins().registry
    parts = []
    if reg.answering("compress", "lzo"):
        parts.append("compress lzo:1;")
    elif reg.answering("compress", "zlib"):
        parts.append("compress zlib:1;")
    if reg.answering("encrypt", "aes128cbc"):
        parts.append("encrypt aes128cbc;")
    return " ".join(parts)


def _wait_ping(ns: str, addr: str, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if in_ns(ns, "ping", "-c1", "-W1", addr, check=False).returncode == 0:
            return True
        time.sleep(0.3)
    return False


def main(proto: str = "tcp") -> int:
    if os.geteuid() != 0:
        print("the demo needs root (network namespaces)", file=sys.stderr)
        return 2
    tag = f"{os.getpid() % 100000}"
    ns_a, ns_b = f"vtdemo-a{tag}", f"vtdemo-b{tag}"
    octet = random.randint(16, 250)
    addr_a, addr_b = f"10.{octet}.77.1", f"10.{octet}.77.2"
    procs: list[subprocess.Popen] = []
    tmp = Path(tempfile.mkdtemp(prefix="vtdemo-"))
    password = os.urandom(6).hex()
    vt = [sys.executable, "-m", "vtcore"]
    try:
        print(f"== namespaces {ns_a} ({addr_a}) <-veth-> {ns_b} ({addr_b})")
        sh("ip", "netns", "add", ns_a)
        sh("ip", "netns", "add", ns_b)
        sh("ip", "link", "add", f"vd{tag}a", "netns", ns_a, "type", "veth",
           "peer", "name", f"vd{tag}b", "netns", ns_b)
        for ns, dev, addr in ((ns_a, f"vd{tag}a", addr_a), (ns_b, f"vd{tag}b", addr_b)):
            in_ns(ns, "ip", "addr", "add", f"{addr}/24", "dev", dev)
            in_ns(ns, "ip", "link", "set", dev, "up")
            in_ns(ns, "ip", "link", "set", "lo", "up")
        features = _features()
        (tmp / "server.conf").write_text(SERVER_CONF.format(
            tmp=tmp, password=password, proto=proto, features=features))
        (tmp / "client.conf").write_text(CLIENT_CONF.format(tmp=tmp, password=password))
        print(f"== vt serve in {ns_a}: type tun, proto {proto}, {features or 'no modules'}")
        logs = {name: open(tmp / f"{name}.log", "w") for name in ("server", "client")}
        procs.append(subprocess.Popen(
            ["ip", "netns", "exec", ns_a, *vt, "--log-format", "console", "serve", "-n",
             "-f", str(tmp / "server.conf")], stdout=logs["server"], stderr=logs["server"]))
        time.sleep(1.0)
        print(f"== vt run demo {addr_a} in {ns_b}")
        procs.append(subprocess.Popen(
            ["ip", "netns", "exec", ns_b, *vt, "--log-format", "console", "run", "demo", addr_a,
             "-n", "-f", str(tmp / "client.conf")], stdout=logs["client"],
            stderr=logs["client"]))
        if not _wait_ping(ns_b, "10.99.0.1"):
            print("!! tunnel did not come up")
            return 1
        print("== ping through the tunnel")
        print(in_ns(ns_b, "ping", "-c", "5", "-i", "0.2", "10.99.0.1", check=False).stdout)
        payload = os.urandom(4 << 20)
        print("== 4 MiB over TCP through the tunnel")
        rx = subprocess.Popen(["ip", "netns", "exec", ns_a, sys.executable, "-c",
                               TRANSFER_SERVER], stdout=subprocess.PIPE, text=True)
        procs.append(rx)
        time.sleep(0.5)
        t0 = time.monotonic()
        in_ns(ns_b, sys.executable, "-c", TRANSFER_CLIENT, input=payload, text=False)
        out, _ = rx.communicate(timeout=STEP_TIMEOUT)
        took = time.monotonic() - t0
        n, digest = out.split()
        ok = int(n) == len(payload) and digest == hashlib.sha256(payload).hexdigest()
        print(f"   {n} bytes in {took:.2f} s, sha256 {'matches' if ok else 'DIFFERS'}")
        print("== vt status (both daemons answer on their status sockets)")
        print(sh(*vt, "status", *(str(p.pid) for p in procs[:2]), check=False).stdout)
        print("== interface counters")
        for ns in (ns_a, ns_b):
            link = in_ns(ns, "ip", "-s", "link", "show", "type", "tun", check=False).stdout
            print(f"-- {ns}\n{link}")
        for p in procs[:2]:
            p.send_signal(signal.SIGTERM)
        for p in procs[:2]:
            p.wait(timeout=STEP_TIMEOUT)
        for name, fh in logs.items():
            fh.close()
            print(f"== vt {name} log")
            print((tmp / f"{name}.log").read_text())
        return 0 if ok else 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=5)
        for ns in (ns_a, ns_b):
            sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(tmp, ignore_errors=True)  # the configs hold the password
        print("== torn down")


if __name__ == "__main__":
    sys.exit(main(*(sys.argv[1:2])))
