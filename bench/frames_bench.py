"""Micro-benchmark of the frame codec (not a test): ``python bench/frames_bench.py``.

Measures StreamDecoder.feed on many small frames per call (the TCP hot path), the same
stream cut into awkward chunks, and decode_datagram / frame for the UDP path.
"""

from __future__ import annotations

import argparse
import os
import time

from vtcore.protocol.frames import StreamDecoder, decode_datagram, frame


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=20_000)
    ap.add_argument("--size", type=int, default=84, help="payload bytes per frame")
    ap.add_argument("--chunk", type=int, default=65536, help="bytes per feed() call")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    payload = os.urandom(args.size)
    one = frame(payload)
    stream = one * args.frames
    chunks = [stream[i : i + args.chunk] for i in range(0, len(stream), args.chunk)]
    odd = [stream[i : i + 1499] for i in range(0, len(stream), 1499)]

    def feed(parts: list[bytes]) -> None:
        dec = StreamDecoder()
        n = 0
        for part in parts:
            n += len(dec.feed(part))
        assert n == args.frames, n

    def datagrams() -> None:
        for _ in range(args.frames):
            decode_datagram(one)

    def encode() -> None:
        for _ in range(args.frames):
            frame(payload)

    mb = len(stream) / 1e6
    for name, fn in (
        (f"feed, {args.chunk}-byte chunks", lambda: feed(chunks)),
        ("feed, 1499-byte chunks (split frames)", lambda: feed(odd)),
        ("feed, whole stream in one call", lambda: feed([stream])),
        ("decode_datagram", datagrams),
        ("frame (encode)", encode),
    ):
        t = _best(fn, args.repeat)
        print(f"{name:40s} {args.frames / t / 1e6:6.2f} Mframes/s  {mb / t:8.1f} MB/s")


if __name__ == "__main__":
    main()
