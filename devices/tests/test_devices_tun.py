"""tun/tap devices, for real, inside a network namespace each test creates."""

from __future__ import annotations

import errno
import json
import os
import select
import time

import pytest
from vt_devices.base import DeviceError
from vt_devices.plugin import BACKENDS
from vt_devices.tun import (
    IFF_TUN,
    TUN_F_CSUM,
    VNET_HDR_LEN,
    TunDevice,
    open_tap_device,
    open_tun,
    open_tun_device,
    tun_features,
)
from vtdev_helpers import arp_request, parse_arp_reply, parse_echo_reply

from vtcore.api import DeviceRequest
from vtcore.testing import icmp_echo

netns = pytest.mark.netns
KERNEL_IP, PEER_IP = "10.77.0.1", "10.77.0.2"


def backend(tunnel_type: str):
    return next(b for b in BACKENDS if b.tunnel_type == tunnel_type)


def read_until(dev: TunDevice, match, timeout: float = 3.0):
    """Read packets until ``match(pkt)`` returns non-None; bounded in time."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        select.select([dev], [], [], left)
        for pkt in dev.read_packets(64):
            found = match(pkt)
            if found is not None:
                return found
    raise AssertionError("no matching packet within timeout")


def bring_up(ns, dev: str, addr: str) -> None:
    ns.ip("addr", "add", addr, "dev", dev)
    ns.ip("link", "set", "dev", dev, "up")


def test_bad_name_is_one_line_error() -> None:
    with pytest.raises(DeviceError, match="invalid interface name") as info:
        open_tun_device(DeviceRequest("tun", "x" * 16))
    assert "\n" not in str(info.value)


@netns
def test_automatic_names(netns) -> None:
    with netns.entered():
        tun = backend("tun").open(DeviceRequest("tun"))
        tap = backend("ether").open(DeviceRequest("ether"))
    try:
        # A fresh namespace: the kernel hands out the first free number, like vtund's tunN.
        assert (tun.name, tap.name) == ("tun0", "tap0")
        assert tun.stream is False and tap.stream is False
        assert tun.stdio_fd() is None
        assert netns.link("tun0")["linkinfo"]["info_data"]["type"] == "tun"
        assert netns.link("tap0")["linkinfo"]["info_data"]["type"] == "tap"
        assert os.get_blocking(tun.fileno()) is False
    finally:
        tun.close()
        tap.close()
    # Not persistent: gone with the fd.
    assert netns.link("tun0") is None and netns.link("tap0") is None


@netns
def test_named_device_and_busy(netns) -> None:
    with netns.entered():
        dev = backend("tun").open(DeviceRequest("tun", "vtnamed7"))
        try:
            assert dev.name == "vtnamed7"
            assert netns.link("vtnamed7") is not None
            with pytest.raises(DeviceError, match="vtnamed7.*busy") as info:
                open_tun("vtnamed7")
            assert info.value.errno == errno.EBUSY
            # Same name as a tap while it is a tun: refused, not reused.
            with pytest.raises(DeviceError):
                open_tun("vtnamed7", tap=True)
        finally:
            dev.close()
            dev.close()  # idempotent
    assert netns.link("vtnamed7") is None


@netns
@pytest.mark.parametrize("mode", ["tun", "tap"])
def test_attach_to_persistent_device(netns, mode: str) -> None:
    name = f"vtp{mode}"
    netns.ip("tuntap", "add", "dev", name, "mode", mode)
    before = netns.link(name)
    with netns.entered():
        dev = backend("tun" if mode == "tun" else "ether").open(
            DeviceRequest("tun" if mode == "tun" else "ether", name)
        )
    try:
        assert dev.name == name
        assert netns.link(name)["ifindex"] == before["ifindex"]
    finally:
        dev.close()
    # Persistent: still there after vt lets go.
    assert netns.link(name)["ifindex"] == before["ifindex"]


@netns
def test_write_while_down_drops_without_error(netns) -> None:
    with netns.entered():
        dev = open_tun_device(DeviceRequest("tun"))
    with dev:
        pkt = icmp_echo(PEER_IP, KERNEL_IP, 1, 1, b"x")
        assert dev.write_packet(pkt) is False  # EIO: interface down (vtund dies here)
        assert dev.write_packet(b"") is False  # EINVAL
        assert dev.dropped == 2
        assert dev.read_packets(10) == []


@netns
def test_tun_icmp_round_trip(netns) -> None:
    with netns.entered():
        dev = open_tun_device(DeviceRequest("tun", "vtt0"))
    with dev:
        bring_up(netns, "vtt0", f"{KERNEL_IP}/30")
        payload = bytes(range(256)) * 4
        assert dev.write_packet(icmp_echo(PEER_IP, KERNEL_IP, 0x4242, 7, payload))
        reply = read_until(
            dev, lambda p: r if (r := parse_echo_reply(p)) and r[2] == 0x4242 else None
        )
        assert reply == (KERNEL_IP, PEER_IP, 0x4242, 7, payload)
        assert dev.dropped == 0
        stats = json.loads(netns.ip("-s", "-j", "link", "show", "dev", "vtt0").stdout)[0]
        assert stats["stats64"]["rx"]["packets"] == 1  # exactly our one request


@netns
def test_tap_arp_round_trip(netns) -> None:
    with netns.entered():
        dev = open_tap_device(DeviceRequest("ether", "vte0"))
    with dev:
        bring_up(netns, "vte0", f"{KERNEL_IP}/30")
        kernel_mac = netns.link("vte0")["address"]
        our_mac = "02:00:00:00:00:02"
        assert dev.write_packet(arp_request(our_mac, PEER_IP, KERNEL_IP))
        reply = read_until(dev, parse_arp_reply)
        assert reply == (our_mac, kernel_mac, KERNEL_IP, our_mac, PEER_IP)


@netns
def test_read_packets_respects_limit_and_batches(netns) -> None:
    with netns.entered():
        dev = open_tun_device(DeviceRequest("tun", "vtt1"))
    with dev:
        bring_up(netns, "vtt1", f"{KERNEL_IP}/30")
        netns.ip("link", "set", "dev", "vtt1", "txqueuelen", "1000")
        for seq in range(5):
            assert dev.write_packet(icmp_echo(PEER_IP, KERNEL_IP, 9, seq, b"p"))
        seen: set[int] = set()
        deadline = time.monotonic() + 3
        while len(seen) < 5 and time.monotonic() < deadline:
            select.select([dev], [], [], 0.5)
            got = dev.read_packets(2)
            assert len(got) <= 2
            seen |= {r[3] for p in got if (r := parse_echo_reply(p)) and r[2] == 9}
        assert seen == set(range(5))


@netns
def test_deleted_interface_reads_eof(netns) -> None:
    with netns.entered():
        dev = open_tun_device(DeviceRequest("tun", "vtgone"))
    with dev:
        netns.ip("link", "del", "dev", "vtgone")
        with pytest.raises(EOFError, match="vtgone"):
            dev.read_packets(4)
        assert dev.write_packet(icmp_echo(PEER_IP, KERNEL_IP, 1, 1, b"")) is False


@netns
def test_vnet_hdr_offload_round_trip(netns) -> None:
    with netns.entered():
        handle = open_tun("vtv0", vnet_hdr=True)
    dev = TunDevice(handle.fd, handle.name)
    with dev:
        assert handle.offload & TUN_F_CSUM
        assert netns.link("vtv0") is not None
        bring_up(netns, "vtv0", f"{KERNEL_IP}/30")
        hdr = bytes(VNET_HDR_LEN)  # no checksum offload, no GSO
        assert dev.write_packet(hdr + icmp_echo(PEER_IP, KERNEL_IP, 0x77, 1, b"vnet"))

        def match(pkt: bytes):
            r = parse_echo_reply(pkt[VNET_HDR_LEN:])
            return (pkt[:VNET_HDR_LEN], r) if r and r[2] == 0x77 else None

        vhdr, reply = read_until(dev, match)
        assert len(vhdr) == VNET_HDR_LEN
        assert vhdr[1] == 0  # gso_type NONE for a small packet
        assert reply == (KERNEL_IP, PEER_IP, 0x77, 1, b"vnet")


@netns
def test_multi_queue_opens_two_queues(netns) -> None:
    with netns.entered():
        first = open_tun("vtmq0", multi_queue=True)
        second = open_tun("vtmq0", multi_queue=True)
    try:
        assert first.name == second.name == "vtmq0"
        assert first.fd != second.fd
    finally:
        os.close(first.fd)
        os.close(second.fd)


@netns
def test_features_report_tun() -> None:
    assert tun_features() & IFF_TUN
