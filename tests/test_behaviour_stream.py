"""tty and pipe tunnels carry a byte stream end to end, both ways at once.

Each side's ``up`` program sends a known random stream into the device and writes what
comes out of it to a file; the files must match byte for byte. vt <-> vt, and vt against
the reference vtund in both roles.
"""

from __future__ import annotations

import os
import shutil

import pytest
from behaviour import HOST, assert_no_secret, conf, file_size, stream_script, tmpdir, wait_for
from netns import two_hosts
from peers import CLIENTS, SERVERS

NBYTES = 48 * 1024

CASES = [
    ("vt", "vt", "tty", "tcp"),
    ("vt", "vt", "pipe", "tcp"),
    ("vt", "vt", "tty", "udp"),
    pytest.param("vtund", "vt", "tty", "tcp", marks=pytest.mark.vtund),
    pytest.param("vt", "vtund", "tty", "tcp", marks=pytest.mark.vtund),
    pytest.param("vtund", "vt", "pipe", "tcp", marks=pytest.mark.vtund),
    pytest.param("vt", "vtund", "pipe", "tcp", marks=pytest.mark.vtund),
]


@pytest.mark.netns
@pytest.mark.parametrize("server, client, kind, proto", CASES)
def test_stream_both_ways(server: str, client: str, kind: str, proto: str) -> None:
    d = tmpdir()
    try:
        s_send, c_send = d / "s_send", d / "c_send"
        s_recv, c_recv = d / "s_recv", d / "c_recv"
        # A stream over udp has no retransmission: a burst larger than the receiver's
        # socket buffer may lose datagrams on a loaded machine (vtund alike), so keep it small.
        nbytes = NBYTES if proto == "tcp" else NBYTES // 4
        s_data, c_data = os.urandom(nbytes), os.urandom(nbytes)
        s_send.write_bytes(s_data)
        c_send.write_bytes(c_data)
        scfg = conf(HOST, type=kind, proto=proto, up=[stream_script(s_send, s_recv)])
        ccfg = conf(HOST, up=[stream_script(c_send, c_recv)])
        with two_hosts() as p:
            with SERVERS[server](p.a, scfg) as s, CLIENTS[client](p.b, ccfg, HOST, p.a_addr) as c:
                wait_for(lambda: file_size(s_recv) >= nbytes and file_size(c_recv) >= nbytes,
                         30, f"both streams ({file_size(s_recv)}, {file_size(c_recv)} bytes)")
                # Nothing more may follow (no echo, no doubled bytes).
                assert s_recv.read_bytes() == c_data
                assert c_recv.read_bytes() == s_data
                assert s.alive() and c.alive()
                assert_no_secret(s, c)
    finally:
        shutil.rmtree(d, ignore_errors=True)
