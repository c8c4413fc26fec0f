"""Registration through the real plugin machinery, and independence from vtcore."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import pluggy
import pytest
from vt_api import DeviceBackendType, DeviceRequest, Registry, RegistryError, hookspecs
from vt_devices import plugin


def registry_via_pluggy() -> Registry:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(plugin, name="devices")
    pm.check_pending()
    registry = Registry(current_plugin="devices")
    pm.hook.vt_register_devices(registry=registry)
    return registry


def test_registers_four_backends_with_vtund_flags() -> None:
    reg = registry_via_pluggy()
    assert {t: b.flag for t, b in reg.devices.items()} == {
        "tun": "u",
        "ether": "e",
        "tty": "t",
        "pipe": "p",
    }
    assert {reg.owner[("device", t)] for t in reg.devices} == {"devices"}


def test_records_are_the_contracts() -> None:
    for backend in plugin.BACKENDS:
        assert type(backend) is DeviceBackendType
        assert backend.describe


def test_duplicate_is_reported() -> None:
    reg = registry_via_pluggy()
    with pytest.raises(RegistryError, match="tun"):
        plugin.vt_register_devices(registry=reg)


def test_stream_backends_open_through_registry() -> None:
    reg = registry_via_pluggy()
    for kind in ("tty", "pipe"):
        dev = reg.devices[kind].open(DeviceRequest(kind))
        try:
            assert dev.stream is True and dev.stdio_fd() is not None
        finally:
            dev.close()


def test_entry_point_declared() -> None:
    eps = metadata.entry_points(group="vt.plugins")
    assert any(ep.name == "devices" and ep.value == "vt_devices.plugin" for ep in eps)


def test_does_not_import_vtcore() -> None:
    code = (
        "import sys, vt_devices, vt_devices.plugin;"
        "bad = [m for m in sys.modules if m.split('.')[0] == 'vtcore'];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
