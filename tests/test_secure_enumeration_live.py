"""Host enumeration, live: a real ``vt serve`` answers a vt client identically for every
host name (known with any secure suite, or unknown) up to the key confirmation."""

from __future__ import annotations

import json
import sys

import pytest
from netns import two_hosts
from peers import VtServer
from secure_tools import PASSWD, no_crash

pytestmark = pytest.mark.netns

HOSTS = {"t1": "chacha20poly1305", "t2": "aes256gcm", "t3": "aead"}

PROBE = r"""
import json, socket, sys
from vt_crypto.secure import ClientSecureHandshake
from vtcore.protocol.handshake import pack_msg

def exactly(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf

server, host = sys.argv[1], sys.argv[2]
with socket.create_connection((server, 5000), timeout=5) as sock:
    greeting = exactly(sock, 50)
    host_block = pack_msg(f"HOST: {host} vt2\n")
    sock.sendall(host_block)
    offer = exactly(sock, 50)
    client = ClientSecureHandshake(host, b"a wrong guess", greeting + host_block + offer)
    sock.sendall(client.data_to_send())
    head = exactly(sock, 2)
    body = exactly(sock, int.from_bytes(head, "big"))
print(json.dumps({"offer": offer.hex(), "msg2": (head + body).hex()}))
"""


def server_config() -> str:
    hosts = "".join(
        f"{name} {{\n  passwd {PASSWD};\n  type tun;\n  proto tcp;\n  device ts{name};\n"
        f"  encrypt {word};\n}}\n"
        for name, word in HOSTS.items()
    )
    return "options { timeout 5; }\n" + hosts


def test_every_host_name_gets_the_same_answers() -> None:
    with two_hosts() as p, VtServer(p.a, server_config()) as s:
        seen = {}
        for host in [*HOSTS, "nosuch"]:
            out = p.b.run(sys.executable, "-c", PROBE, p.a_addr, host, timeout=20).stdout
            seen[host] = json.loads(out)
        offers = {v["offer"] for v in seen.values()}
        assert offers == {(b"OK VT3\n" + bytes(43)).hex()}, seen
        shapes = {(len(v["msg2"]), v["msg2"][:6]) for v in seen.values()}
        assert shapes == {(2 * 371, "017102")}, seen
        assert len({v["msg2"] for v in seen.values()}) == len(seen)  # random fields differ
        s.wait_log(r"denied: unknown host.*host=nosuch")
        no_crash(s)
