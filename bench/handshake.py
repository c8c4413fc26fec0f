"""Micro-benchmark of secure mode's handshake (not a test): ``python bench/handshake.py``.

Runs client and server state machines back to back in memory (no sockets: what is
measured is the handshake's own CPU) and reports, per side, the CPU time of one whole
handshake (thread CPU, median and p90 over ``--runs``), what that makes in handshakes per
second on one server core, and the server's time for msg1 (the PAKE step) with two
different passwords, interleaved, to show whether it depends on the password.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

from vt_crypto.secure import ClientSecureHandshake, SecureSettings, ServerSecureHandshake, negotiate

from vtcore.protocol.handshake import pack_msg

HOST = "bench"
PASSWORDS = (b"correct horse battery staple", b"Tr0ub4dor&3")


def _prefix() -> bytes:
    """Greeting, HOST line and the server's answer, as both ends hash them."""
    greeting = pack_msg("VTUN server ver 3.X vt\n")
    host = pack_msg(f"HOST: {HOST} {negotiate.HOST_TOKEN}\n")
    return greeting + host + negotiate.offer_block()


def _settings() -> SecureSettings:
    return SecureSettings(flags="<TuC9K>", suite="aes256gcm")


def one_handshake(password: bytes, prefix: bytes, clock: Callable[[], float]) -> tuple[float, float]:
    """CPU seconds of (client, server) for one whole handshake."""
    c = s = 0.0
    t = clock()
    client = ClientSecureHandshake(HOST, password, prefix)
    msg1 = client.data_to_send()
    c += clock() - t
    t = clock()
    server = ServerSecureHandshake(HOST, password, _settings(), prefix)
    server.receive_data(msg1)
    msg2 = server.data_to_send()
    s += clock() - t
    t = clock()
    client.receive_data(msg2)
    msg3 = client.data_to_send()
    c += clock() - t
    t = clock()
    server.receive_data(msg3)
    msg4 = server.data_to_send()
    s += clock() - t
    t = clock()
    client.receive_data(msg4)
    c += clock() - t
    if not (client.done and server.done):
        sys.exit("handshake did not complete")
    return c, s


def msg1_time(password: bytes, prefix: bytes, clock: Callable[[], float]) -> float:
    """Seconds the server spends on msg1 (the PAKE step) for ``password``."""
    msg1 = ClientSecureHandshake(HOST, password, prefix).data_to_send()
    server = ServerSecureHandshake(HOST, password, _settings(), prefix)
    t = clock()
    server.receive_data(msg1)
    return clock() - t


def _ms(values: list[float], q: float) -> float:
    values = sorted(values)
    return 1e3 * values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=300, help="handshakes per measurement")
    args = ap.parse_args()
    prefix = _prefix()
    clock = time.thread_time
    for _ in range(min(20, args.runs)):  # warm-up (imports, caches)
        one_handshake(PASSWORDS[0], prefix, clock)
    client, server = [], []
    for _ in range(args.runs):
        c, s = one_handshake(PASSWORDS[0], prefix, clock)
        client.append(c)
        server.append(s)
    per_pw: dict[bytes, list[float]] = {pw: [] for pw in PASSWORDS}
    for i in range(2 * args.runs):
        pw = PASSWORDS[i % 2]
        per_pw[pw].append(msg1_time(pw, prefix, time.perf_counter))
    print(f"secure handshake, {args.runs} runs, thread CPU time")
    print(f"  client CPU per handshake: median {_ms(client, 0.5):.3f} ms, p90 {_ms(client, 0.9):.3f} ms")
    print(f"  server CPU per handshake: median {_ms(server, 0.5):.3f} ms, p90 {_ms(server, 0.9):.3f} ms")
    print(f"  server handshakes/s per core: {1.0 / statistics.median(server):.0f}")
    for n, pw in enumerate(PASSWORDS, 1):
        t = per_pw[pw]
        print(f"  server msg1, password {n} ({len(pw)} bytes): median {_ms(t, 0.5):.3f} ms, "
              f"p10 {_ms(t, 0.1):.3f} ms, p90 {_ms(t, 0.9):.3f} ms")


if __name__ == "__main__":
    main()
