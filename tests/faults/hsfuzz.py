"""Mutated vtun handshakes, many at once, while good clients log in: run in a namespace.

Each attempt connects, reads the greeting and sends either a damaged ``HOST:`` block or a
right one followed by a damaged answer to the challenge (bytes flipped, cut short,
extended, or replaced by random ones), then reads until the server closes or ``--wait``
passes.  ``--concurrency`` attempts run at once.  Meanwhile a good client logs in with
the right password every ``--good-every`` seconds from ``--good-source`` (an address of
its own, so that a per-source limit on the fuzzer does not count against it).  One JSON
line at the end: outcomes of the attempts, good logins served and their latency.

Only the server given on the command line is contacted; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time

from vtcore.protocol.events import Accepted, Answer, Challenged
from vtcore.protocol.handshake import MESG_SIZE, ClientHandshake


def mutate(block: bytes, rng: random.Random) -> bytes:
    """A damaged copy of ``block`` (never the same bytes)."""
    kind = rng.randrange(4)
    if kind == 0:
        b = bytearray(block)
        for i in rng.sample(range(len(b)), rng.randrange(1, 5)):
            b[i] ^= rng.randrange(1, 256)
        return bytes(b)
    if kind == 1:
        return block[: rng.randrange(len(block))]
    if kind == 2:
        return block + rng.randbytes(rng.randrange(1, 80))
    return rng.randbytes(rng.randrange(1, 120))


async def _exact(reader: asyncio.StreamReader, n: int, wait: float) -> bytes:
    return await asyncio.wait_for(reader.readexactly(n), wait)


async def _verdict(reader: asyncio.StreamReader, wait: float) -> str:
    """What the server did after our (damaged) message."""
    try:
        data = await asyncio.wait_for(reader.read(MESG_SIZE), wait)
    except TimeoutError:
        return "waiting"  # a cut-short message: the server waits for the rest
    except OSError:
        return "reset"
    if not data:
        return "closed"
    if data.startswith(b"ERR"):
        return "err"
    if data.startswith(b"OK FLAGS"):
        return "accepted"  # the damage hit the padding after the newline
    if data.startswith(b"OK CHAL"):
        return "challenged"  # a damaged host name: vtund challenges unknown hosts too
    return "other"


async def attempt(a: argparse.Namespace, i: int, out: dict[str, int]) -> None:
    rng = random.Random(a.seed * 1_000_003 + i)
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(a.server, a.port), 5)
        hs = ClientHandshake(a.host, a.password.encode())
        hs.receive_data(await _exact(reader, MESG_SIZE, 5))
        host_block = hs.data_to_send()
        if rng.random() < 0.5:
            writer.write(mutate(host_block, rng))
        else:
            writer.write(host_block)
            hs.receive_data(await _exact(reader, MESG_SIZE, 5))
            challenged = isinstance(hs.next_event(), Challenged)
            writer.write(mutate(hs.send(Answer()) if challenged else b"", rng))
        await writer.drain()
        kind = await _verdict(reader, a.wait)
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        kind = "refused"
    except Exception as exc:  # a protocol error of ours is the server speaking nonsense
        kind = f"client-error {type(exc).__name__}"
    finally:
        if writer is not None:
            writer.close()
    out[kind] = out.get(kind, 0) + 1


async def good_login(a: argparse.Namespace) -> float | None:
    """Seconds to a full login with the right password; None if refused."""
    t0 = time.monotonic()
    writer = None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(a.server, a.port, local_addr=(a.good_source, 0)), 5)
        hs = ClientHandshake(a.host, a.password.encode())
        event = None
        while event is None or isinstance(event, Challenged):
            if isinstance(event, Challenged):
                writer.write(hs.send(Answer()))
            hs.receive_data(await _exact(reader, hs.bytes_needed, 10))
            writer.write(hs.data_to_send())
            await writer.drain()
            event = hs.next_event()
        if not isinstance(event, Accepted):
            return None
        return time.monotonic() - t0
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return None
    finally:
        if writer is not None:
            writer.close()


async def main_async(a: argparse.Namespace) -> dict:
    outcomes: dict[str, int] = {}
    good: list[float] = []
    good_failed = 0
    done = asyncio.Event()

    async def good_loop() -> None:
        nonlocal good_failed
        while not done.is_set():
            t = await good_login(a)
            if t is None:
                good_failed += 1
            else:
                good.append(t)
            try:
                await asyncio.wait_for(done.wait(), a.good_every)
            except TimeoutError:
                pass

    goods = asyncio.ensure_future(good_loop()) if a.good_source else None
    sem = asyncio.Semaphore(a.concurrency)

    async def one(i: int) -> None:
        async with sem:
            await attempt(a, i, outcomes)

    t0 = time.monotonic()
    # Bounded: n attempts, each bounded by its waits; the whole run by --limit.
    try:
        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(a.n))), a.limit)
    except TimeoutError:
        outcomes["unfinished"] = a.n - sum(outcomes.values())
    wall = time.monotonic() - t0
    done.set()
    if goods is not None:
        await asyncio.wait_for(goods, 30)
    good.sort()
    return {"n": a.n, "concurrency": a.concurrency, "wall_s": round(wall, 2),
            "per_s": round(a.n / wall, 1), "outcomes": outcomes,
            "good_ok": len(good), "good_failed": good_failed,
            "good_p50_ms": round(good[len(good) // 2] * 1000, 1) if good else None,
            "good_max_ms": round(good[-1] * 1000, 1) if good else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", required=True)
    ap.add_argument("--port", type=int, default=5000)
    ap.add_argument("--host", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--wait", type=float, default=1.0,
                    help="seconds to wait for the server's verdict on one attempt")
    ap.add_argument("--good-source", default="")
    ap.add_argument("--good-every", type=float, default=0.25)
    ap.add_argument("--limit", type=float, default=600)
    a = ap.parse_args(argv)
    if not 1 <= a.n <= 1_000_000 or not 1 <= a.concurrency <= 1000:
        ap.error("n must be 1..1e6, concurrency 1..1000")
    print(json.dumps(asyncio.run(main_async(a))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
