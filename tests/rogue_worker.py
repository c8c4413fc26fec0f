"""A worker that misbehaves on purpose, for tests/test_workers.py: it speaks the master's
control channel (vtcore/runtime/control.py) like a real worker, then sends what a
compromised worker would.  ``rogue_worker.py FD CASE PASSWORD DONE_FILE``."""

from __future__ import annotations

import itertools
import json
import os
import socket
import sys
import time

from vtcore.protocol.challenge import chal_response

fd, case, password, done = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode(), sys.argv[4]
sock = socket.socket(fileno=fd)
ids = itertools.count(1)


def send(msg: dict, fds: list[int] | None = None, raw: bytes | None = None) -> int:
    msg = {**msg, "id": next(ids)} if "id" not in msg else msg
    data = raw if raw is not None else json.dumps(msg).encode()
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)
    return msg["id"]


def recv() -> tuple[dict, list[int]]:
    data, fds, _, _ = socket.recv_fds(sock, 65536, 2)
    if not data:
        raise SystemExit(0)
    return json.loads(data), fds


def ask(msg: dict) -> tuple[dict, list[int]]:
    want = send(msg)
    while True:
        answer, fds = recv()
        if answer.get("re") == want:
            return answer, fds
        for extra in fds:
            os.close(extra)


while True:  # the config and the master's status round trip first, then a connection
    msg, fds = recv()
    if msg.get("op") == "status":
        send({"re": msg["id"], "sessions": []})
    if msg.get("op") == "conn":
        conn, chal = msg["conn"], bytes.fromhex(msg["chal"])
        os.close(fds[0])
        break
    for extra in fds:
        os.close(extra)

proof = chal_response(chal, password).hex()
claim = {"op": "claim", "conn": conn, "host": "bt1", "response": proof}
device = {"op": "device", "conn": conn, "type": "pipe", "offload": False, "split": False,
          "runs": False}
up = {"op": "up", "conn": conn, "local": ["127.0.0.1", 5000], "remote": ["127.0.0.1", 40000]}

if case == "good":
    assert ask(claim)[0]["ok"] is True
    answer, fds = ask(device)
    assert answer["ok"] is True and len(fds) == 1
    ask(up)
    ask({"op": "down", "conn": conn})
    send({"op": "release", "conn": conn})
    os.close(fds[0])
elif case == "wrong-proof":
    send({**claim, "response": os.urandom(16).hex()})
elif case == "other-host":
    send({**claim, "host": "bt2"})
elif case == "unknown-connection":
    send({**claim, "conn": conn + 1000})
elif case == "second-claim":
    ask(claim)
    send(claim)
elif case == "device-unclaimed":
    send(device)
elif case == "second-device":
    ask(claim)
    ask(device)
    send(device)
elif case == "injected-up":
    ask(claim)
    ask(device)
    send({**up, "local": ["10.0.0.1; touch /tmp/vt-pwned", 1]})
elif case == "up-twice":
    ask(claim)
    ask(device)
    ask(up)
    send(up)
elif case == "not-json":
    send({}, raw=b"{not json")
elif case == "descriptor":
    send({"op": "release", "conn": conn}, fds=[os.open(os.devnull, os.O_RDONLY)])
elif case == "other-type":
    ask(claim)
    send({**device, "type": "tun"})
elif case == "unknown-op":
    send({"op": "shell", "cmd": "id"})
with open(done, "w") as f:
    f.write("done\n")
deadline = time.monotonic() + 30  # the master kills it (or ends it) long before
while time.monotonic() < deadline:
    try:
        recv()
    except (OSError, SystemExit):
        break
