"""vt <-> vt negotiates its native fast path; ``vtmode no`` keeps the vtun wire.

Between two vt ends over TCP the server grants native framing (``n``: 4-byte headers,
frames beyond vtund's 4095 bytes) and tun/tap offloads (``o``: whole GSO super-packets
per frame), with vtund's ciphers and compressors too: they then work on super-packets.
Over UDP it grants native module formats only (``m``): one packet per datagram, but
compression that skips what does not shrink.
Each case checks both ends' ``session up`` lines, moves files both ways byte-identical,
runs iperf3, and reads the client's closing counters: the average frame must be larger
than any vtun frame could be (or, with ``vtmode no``, within vtund's limit).
"""

from __future__ import annotations

import re

import pytest
from netns import iperf3, transfer_file, two_hosts, wait_ping
from peers import VtClient, VtServer
from secure_tools import add_devices, client_conf, log_lines, no_crash, server_conf

pytestmark = pytest.mark.netns

VTUN_MAX_FRAME = 4095


def _field(line: str, key: str) -> str:
    m = re.search(rf"\b{key}=(\S+)", line)
    assert m, f"no {key}= in {line!r}"
    return m.group(1)


@pytest.mark.parametrize(
    ("proto", "extra", "native"),
    [
        ("tcp", "", True),
        ("tcp", "  encrypt aes128cbc;\n", True),
        ("tcp", "  encrypt aes256cfb;\n  compress lzo:1;\n", True),
        ("tcp", "  encrypt blowfish128ecb;\n  compress zlib:1;\n", True),
        ("tcp", "  encrypt aes128cbc;\n  vtmode no;\n", False),
        ("udp", "  compress lzo:1;\n", True),
    ],
    ids=["plain", "aes128cbc", "lzo+aes256cfb", "zlib+blowfish128ecb", "vtmode-no", "udp-lzo"],
)
def test_native_fast_path(proto: str, extra: str, native: bool) -> None:
    offload = native and proto == "tcp"
    with two_hosts() as p:
        ta, tb = add_devices(p, "tun", mtu=1400 if proto == "udp" else None)
        with VtServer(p.a, server_conf(proto=proto, encrypt=None, extra=extra)) as s, \
                VtClient(p.b, client_conf(encrypt=None), "t1", p.a_addr) as c:
            wait_ping(p.b, ta, timeout=15)
            for peer in (s, c):
                line = peer.wait_log(r"session up.*").group(0)
                assert _field(line, "native") == str(native), line
                assert _field(line, "offload") == str(offload), line
            assert transfer_file(p.b, p.a, ta, nbytes=3 << 20)
            assert transfer_file(p.a, p.b, tb, nbytes=3 << 20)
            up = iperf3(p.a, p.b, ta, seconds=1)
            assert up["bits_per_second"] > 1e6
            assert s.alive() and c.alive()
            c.stop()
            closed = log_lines(c.log(), "session closed")
            assert closed, c.log()[-2000:]
            line = closed[-1]
            frames = int(_field(line, "frames_out"))
            assert frames > 0 and int(_field(line, "dropped_decode")) == 0, line
            average = int(_field(line, "comp_out")) / frames
            # The client received a file: its device joined TCP segments (gro, a local
            # choice: the server's vtmode no does not turn it off), except where whole
            # super-packets arrive anyway (offload).
            joined = int(_field(line, "joined"))
            assert (joined > 0) == (not offload), line
            if offload:
                assert average > VTUN_MAX_FRAME, line
            else:
                assert average <= VTUN_MAX_FRAME, line
            no_crash(s, c)


def test_client_vtmode_no_turns_everything_off() -> None:
    """``vtmode no`` on the client: no native token sent, and no joining on its device."""
    with two_hosts() as p:
        ta, tb = add_devices(p, "tun")
        with VtServer(p.a, server_conf(encrypt=None)) as s, \
                VtClient(p.b, client_conf(encrypt=None, extra="  vtmode no;\n"), "t1",
                         p.a_addr) as c:
            wait_ping(p.b, ta, timeout=15)
            line = c.wait_log(r"session up.*").group(0)
            assert _field(line, "native") == "False" and _field(line, "gro") == "False", line
            assert transfer_file(p.a, p.b, tb, nbytes=3 << 20)
            c.stop()
            line = log_lines(c.log(), "session closed")[-1]
            assert int(_field(line, "joined")) == 0, line
            assert int(_field(line, "byte_in")) > 3 << 20, line
            no_crash(s, c)
