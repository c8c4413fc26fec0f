"""Unit tests of vt-pcap: the file format, the frame module, its registration and command.

Pure tests: no tunnel, no root.  They need only vtcore and this distribution.
"""

from __future__ import annotations

import io
import os
import stat
import struct
from dataclasses import dataclass

import click
import pytest
from click.testing import CliRunner
from vtcore.api import FrameModuleType, LinkSettings, Registry, Stage
from vtcore.testing import check_frame_module, link_settings

from vt_pcap import plugin
from vt_pcap.module import PcapModule
from vt_pcap.pcapfile import (
    LINKTYPE_ETHERNET,
    LINKTYPE_RAW,
    PcapError,
    global_header,
    parse_global_header,
    record,
    summarize,
)

PACKETS = [b"\x45" + bytes(range(19)), b"\x45" + b"x" * 1400, b"\x60" + b"\x00" * 39]


def settings(**kw) -> LinkSettings:
    base = {"host": "h1", "role": "server", "tunnel_type": "tun"}
    return LinkSettings(**(base | kw))


# ------------------------------------------------------------------ file format


def test_global_header_bytes() -> None:
    head = global_header(LINKTYPE_RAW)
    assert head[:4] == bytes.fromhex("d4c3b2a1")  # little-endian microsecond magic
    assert struct.unpack("<HHiIII", head[4:]) == (2, 4, 0, 0, 65535, 101)


def test_record_layout_and_snaplen() -> None:
    rec = record(b"abcdef", 1700000000.25, snaplen=4)
    assert struct.unpack("<IIII", rec[:16]) == (1700000000, 250000, 4, 6)
    assert rec[16:] == b"abcd"


def test_summarize_roundtrip_and_big_endian() -> None:
    data = global_header(LINKTYPE_ETHERNET) + b"".join(record(p, 1.5) for p in PACKETS)
    s = summarize(io.BytesIO(data))
    assert (s.linktype, s.packets, s.bytes, s.truncated) == (1, 3, sum(map(len, PACKETS)), False)
    big = struct.pack(">IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)
    big += struct.pack(">IIII", 1, 0, 3, 3) + b"abc"
    assert summarize(io.BytesIO(big)).packets == 1


def test_summarize_truncated_and_damaged() -> None:
    data = global_header(LINKTYPE_RAW) + record(b"12345", 0.0)
    assert summarize(io.BytesIO(data[:-2])).truncated
    assert summarize(io.BytesIO(data[:-2])).packets == 0
    with pytest.raises(PcapError, match="magic"):
        parse_global_header(b"\x00" * 24)
    with pytest.raises(PcapError, match="too short"):
        parse_global_header(b"\xd4\xc3")
    huge = global_header(LINKTYPE_RAW) + struct.pack("<IIII", 0, 0, 10**9, 10**9)
    with pytest.raises(PcapError, match="not plausible"):
        summarize(io.BytesIO(huge))


# ------------------------------------------------------------------ frame module


def test_module_passes_frames_and_writes_both_directions(tmp_path) -> None:
    path = tmp_path / "cap.pcap"
    mod = PcapModule(str(path), LINKTYPE_RAW, clock=lambda: 42.0)
    for p in PACKETS[:2]:
        assert mod.encode(p) is p
    assert mod.decode(PACKETS[2]) is PACKETS[2]
    mod.close()
    data = path.read_bytes()
    assert data[:24] == global_header(LINKTYPE_RAW)
    assert data[24:] == b"".join(record(p, 42.0) for p in PACKETS)
    assert mod.captured == 3 and mod.errors == 0
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # clear text of the tunnel


def test_second_session_appends_without_second_header(tmp_path) -> None:
    path = str(tmp_path / "cap.pcap")
    for _ in range(2):
        mod = PcapModule(path, LINKTYPE_RAW)
        mod.encode(PACKETS[0])
        mod.close()
    with open(path, "rb") as f:
        assert summarize(f).packets == 2


def test_linktype_mismatch_disables(tmp_path) -> None:
    path = str(tmp_path / "cap.pcap")
    PcapModule(path, LINKTYPE_RAW).close()
    mod = PcapModule(path, LINKTYPE_ETHERNET)
    assert not mod.enabled and mod.errors == 1 and "linktype" in mod.error
    assert mod.encode(b"frame") == b"frame"
    assert mod.missed == 1


def test_unopenable_path_disables_but_passes_frames(tmp_path) -> None:
    mod = PcapModule(str(tmp_path / "no" / "such" / "dir.pcap"), LINKTYPE_RAW)
    assert not mod.enabled and mod.errors == 1
    assert [mod.encode(p) for p in PACKETS] == PACKETS
    assert mod.decode(b"") == b""
    assert (mod.captured, mod.missed) == (0, 4)


def test_write_error_mid_session_disables_once(tmp_path) -> None:
    mod = PcapModule(str(tmp_path / "cap.pcap"), LINKTYPE_RAW)
    assert mod.encode(PACKETS[0]) is PACKETS[0]
    # Swap the capture file for /dev/full: the next write fails with ENOSPC.
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, mod._fd)
    os.close(full)
    for p in PACKETS:
        assert mod.encode(p) is p
        assert mod.decode(p) is p
    assert (mod.captured, mod.errors, mod.missed) == (1, 1, 6)
    assert not mod.enabled


def test_descriptor_released_with_module(tmp_path) -> None:
    mod = PcapModule(str(tmp_path / "cap.pcap"), LINKTYPE_RAW)
    fd = mod._fd
    del mod
    with pytest.raises(OSError):
        os.fstat(fd)


# ------------------------------------------------------------------ registration


@dataclass
class ExtraValue:
    """Shape of the config parser's record for an unknown keyword."""

    value: str
    line: int = 1
    col: int = 1


@pytest.mark.parametrize("wrap", [str, lambda p: f'"{p}"', ExtraValue])
def test_create_reads_the_option(tmp_path, wrap) -> None:
    path = str(tmp_path / "cap.pcap")
    mod = plugin.create(settings(options={"pcap": wrap(path)}))
    assert isinstance(mod, PcapModule) and mod.path == path and mod.linktype == LINKTYPE_RAW
    mod.close()


def test_create_declines(tmp_path) -> None:
    assert plugin.create(settings()) is None
    path = str(tmp_path / "c.pcap")
    assert plugin.create(settings(tunnel_type="tty", options={"pcap": path})) is None
    mod = plugin.create(settings(tunnel_type="ether", options={"pcap": path}))
    assert mod is not None and mod.linktype == LINKTYPE_ETHERNET
    mod.close()


def test_keeps_the_linker_contract(tmp_path) -> None:
    """vtcore.testing's one-call check of what the linker expects of every frame module."""
    path = tmp_path / "contract.pcap"
    made: list[PcapModule] = []

    def make() -> PcapModule | None:
        mod = plugin.create(link_settings(tunnel_type="tun", options={"pcap": str(path)}))
        made.append(mod)
        return mod

    report = check_frame_module(make, hostile=300)
    for mod in made:
        mod.close()
    assert report.round_trips == 200 and report.hostile_dropped == 0  # pcap only watches
    with path.open("rb") as f:
        s = summarize(f)
    # Each instance recorded what it passed: 200 sent, 200 received, the rest decoded.
    assert s.packets >= 400 and not s.truncated


class Doubler:
    """Stands in for a compressor: makes 'what pcap saw' distinguishable from the wire."""

    def encode(self, frame: bytes) -> bytes:
        return frame * 2

    def decode(self, frame: bytes) -> bytes | None:
        half = len(frame) // 2
        return frame[:half] if frame[:half] == frame[half:] else None


def test_registered_before_compression_sees_plain_packets(tmp_path) -> None:
    reg = Registry()
    reg.add_frame_module(FrameModuleType("fakezip", Stage.COMPRESS, "compress", {"fake": 1},
                                         lambda s: Doubler()))
    plugin.vt_register_frame_modules(registry=reg)
    assert reg.answering("pcap") is reg.frame_modules["pcap"]
    assert reg.frame_modules["pcap"].stage < Stage.COMPRESS
    path = tmp_path / "cap.pcap"
    chain = reg.chain(settings(options={"pcap": str(path)}))
    assert [type(m).__name__ for m in chain] == ["PcapModule", "Doubler"]
    wire = PACKETS[0]
    for m in chain:  # encode: ascending stage
        wire = m.encode(wire)
    back = wire
    for m in reversed(chain):  # decode: descending stage
        back = m.decode(back)
    assert back == PACKETS[0]
    chain[0].close()
    data = path.read_bytes()[24:]
    assert data.count(PACKETS[0]) == 2 and data.count(PACKETS[0] * 2) == 0


# ------------------------------------------------------------------ command


def make_cli() -> click.Group:
    @click.group()
    def cli() -> None:
        pass

    plugin.vt_register_commands(cli=cli)
    return cli


def test_pcap_info_counts_packets(tmp_path) -> None:
    path = tmp_path / "cap.pcap"
    path.write_bytes(global_header(LINKTYPE_RAW) + b"".join(record(p, 0) for p in PACKETS))
    res = CliRunner().invoke(make_cli(), ["pcap-info", str(path)])
    assert res.exit_code == 0, res.output
    assert f"{path}: 3 packets" in res.output and "RAW (101)" in res.output


@pytest.mark.parametrize("content", [None, b"not a capture file at all", b""])
def test_pcap_info_bad_file_is_one_line(tmp_path, content) -> None:
    path = tmp_path / "bad.pcap"
    if content is not None:
        path.write_bytes(content)
    res = CliRunner().invoke(make_cli(), ["pcap-info", str(path)])
    assert res.exit_code == 1
    assert isinstance(res.exception, SystemExit)  # a clean exit, not an escaped exception
    assert f"Error: {path}:" in res.output
