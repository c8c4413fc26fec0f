"""Shared helpers for the secure-mode tests (pure, no sockets)."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable

from vt_crypto.secure import (
    ClientSecureHandshake,
    SecureHandshakeError,
    SecureSettings,
    ServerSecureHandshake,
    offer_block,
)

from vtcore.protocol.handshake import pack_msg

GREETING = pack_msg("VTUN server ver 3.X vt\n")


def prefix(host: str = "home") -> bytes:
    """The three 50-byte blocks both ends hash before the binary phase."""
    return GREETING + pack_msg(f"HOST: {host} vt2\n") + offer_block()


class DetRng:
    """A reproducible byte source (SHA-256 in counter mode) for known-answer runs."""

    def __init__(self, seed: bytes) -> None:
        self.seed = seed
        self._counter = itertools.count()

    def __call__(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(self.seed + next(self._counter).to_bytes(8, "big")).digest()
        return out[:n]


def det_rng(seed: bytes) -> DetRng:
    return DetRng(seed)


def settings(suite: str = "aes256gcm") -> SecureSettings:
    return SecureSettings(flags="<TuC9K>", suite=suite, options={"mtu": 1400})


class Pair:
    """A client and a server wired back to back; ``mutate(index, data)`` may alter the
    index-th transmission (0 = msg1, 1 = msg2, ...) on its way."""

    def __init__(
        self,
        client: ClientSecureHandshake,
        server: ServerSecureHandshake,
        mutate: Callable[[int, bytes], bytes] | None = None,
    ) -> None:
        self.client, self.server = client, server
        self.errors: dict[str, str] = {}
        self.wire: list[bytes] = []
        self.events: dict[str, object] = {}
        n = 0
        for _ in range(20):
            moved = False
            for src, dst, name in ((client, server, "server"), (server, client, "client")):
                data = src.data_to_send()
                if not data:
                    continue
                moved = True
                if mutate is not None:
                    data = mutate(n, data)
                n += 1
                self.wire.append(data)
                try:
                    dst.receive_data(data)
                except SecureHandshakeError as exc:
                    self.errors[name] = str(exc)
            if not moved:
                break
        for name, side in (("client", client), ("server", server)):
            ev = side.next_event()
            if ev is not None:
                self.events[name] = ev


def handshake(
    host: str = "home",
    client_pw: bytes = b"s3cret",
    server_pw: bytes | None = b"s3cret",
    suite: str = "aes256gcm",
    mutate: Callable[[int, bytes], bytes] | None = None,
    client_prefix: bytes | None = None,
    server_prefix: bytes | None = None,
    server_host: str | None = None,
    seed: bytes | None = None,
) -> Pair:
    pre = prefix(host)
    crng = det_rng(b"client" + seed) if seed is not None else None
    srng = det_rng(b"server" + seed) if seed is not None else None
    ckw = {"rng": crng} if crng else {}
    skw = {"rng": srng} if srng else {}
    client = ClientSecureHandshake(host, client_pw, client_prefix or pre, **ckw)
    server = ServerSecureHandshake(
        server_host or host,
        server_pw,
        settings(suite) if server_pw is not None else None,
        server_prefix or pre,
        **skw,
    )
    return Pair(client, server, mutate)
