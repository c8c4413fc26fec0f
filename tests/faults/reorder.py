"""Loss and reordering on a namespace's way out, for kernels without netem (run in it).

An iptables rule queues every packet leaving ``--dev`` to NFQUEUE ``--queue``
(``--queue-bypass``: should this process die, packets pass untouched; iptables, as
kernels without netem tend to lack nft's queue expression too).  Here each packet is
dropped with probability ``--loss``; otherwise, with probability ``--reorder`` and none
held yet, it is held back and let go right after the next packet (it arrives after a
packet sent later), or after ``--hold`` seconds when no other comes.  Runs until stdin
closes or ``--seconds`` pass, then removes its rule and prints one JSON line of counts.

    python reorder.py --dev veth0 --queue 7 --loss 0.05 --reorder 0.25
"""

from __future__ import annotations

import argparse
import json
import random
import select
import subprocess
import sys
import time

from netfilterqueue import NetfilterQueue


def rule(dev: str, queue: int) -> list[str]:
    return ["OUTPUT", "-o", dev, "-j", "NFQUEUE", "--queue-num", str(queue), "--queue-bypass"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dev", required=True)
    ap.add_argument("--queue", type=int, default=7)
    ap.add_argument("--loss", type=float, default=0.05)
    ap.add_argument("--reorder", type=float, default=0.25)
    ap.add_argument("--hold", type=float, default=0.02)
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    rng = random.Random(a.seed)
    counts = {"packets": 0, "dropped": 0, "reordered": 0, "held_timeout": 0}
    held: list = []  # at most one packet, and when it was held
    nfq = NetfilterQueue()

    def on_packet(pkt) -> None:
        counts["packets"] += 1
        if rng.random() < a.loss:
            counts["dropped"] += 1
            pkt.drop()
            return
        if not held and rng.random() < a.reorder:
            held.append((pkt, time.monotonic()))
            return
        pkt.accept()
        if held:
            held.pop()[0].accept()
            counts["reordered"] += 1

    nfq.bind(a.queue, on_packet, max_len=4096)
    subprocess.run(["iptables", "-w", "5", "-A", *rule(a.dev, a.queue)], check=True, timeout=10)
    print(json.dumps({"ready": True}), flush=True)
    fd = nfq.get_fd()
    deadline = time.monotonic() + a.seconds
    try:
        while time.monotonic() < deadline:
            ready = select.select([fd, sys.stdin], [], [], a.hold / 2)[0]
            if sys.stdin in ready and not sys.stdin.readline():
                break
            if fd in ready:
                nfq.run(block=False)
            if held and time.monotonic() - held[0][1] >= a.hold:
                held.pop()[0].accept()
                counts["held_timeout"] += 1
    finally:
        subprocess.run(["iptables", "-w", "5", "-D", *rule(a.dev, a.queue)], check=False,
                       timeout=10)
        if held:
            held.pop()[0].accept()
        nfq.unbind()
    print(json.dumps(counts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
