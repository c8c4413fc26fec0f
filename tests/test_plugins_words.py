"""Config words and ``OK FLAGS`` letters come from the installed plugins, not from lists in
the core: a third-party plugin adding ``compress zstd:N``, ``type foo`` and ``proto ws``
makes the config accept them (and only then), and its records' ``flag`` letters carry
its type and transport through the handshake.

The plugin is a real distribution on ``sys.path`` (see ``test_plugins_discovery.FakeSite``).
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from test_plugins_discovery import site  # noqa: F401  (the fixture)

from vtcore.api import DeviceBackendType, Registry, RegistryError, TransportType
from vtcore.cli import cli
from vtcore.config import parse_config
from vtcore.plugins import load_plugins
from vtcore.protocol.errors import ProtocolError
from vtcore.protocol.events import Accept, Accepted, Answer, Challenge, Challenged
from vtcore.protocol.flags import Flags, parse_flags
from vtcore.protocol.handshake import ClientHandshake, ServerHandshake
from vtcore.runtime.session import flag_letters, server_flags

THIRD_PARTY = """
    from vt_devices.pipe import open_pipe_device
    from vtcore import hookimpl
    from vtcore.api import DeviceBackendType, FrameModuleType, TransportType
    from vtcore.transports.tcp import open_tcp_link

    @hookimpl
    def vt_register_devices(registry):
        registry.add_device(DeviceBackendType("foo", "foo", "f", open_pipe_device, "foo"))

    @hookimpl
    def vt_register_transports(registry):
        registry.add_transport(TransportType("ws", "W", open_tcp_link, "websocket"))

    @hookimpl
    def vt_register_frame_modules(registry):
        registry.add_frame_module(FrameModuleType(
            "zstd", 102, "compress", {"zstd": 0}, lambda s: None, levels=(1, 22)))
"""

CONFIG = """h {
  passwd x;
  compress zstd:19;
  type foo;
  proto ws;
}
"""


def check(path: str):
    return CliRunner().invoke(cli, ["config", "check", "-f", path])


def errors(res) -> list[str]:
    """The check's error lines (its security warnings, e.g. on the file's mode, aside)."""
    return [line for line in res.stderr.splitlines() if not line.endswith("(warning)")]


def test_words_are_accepted_only_when_an_installed_plugin_answers_them(site, tmp_path):  # noqa: F811
    conf = tmp_path / "vt.conf"
    conf.write_text(CONFIG)
    res = check(str(conf))
    assert res.exit_code == 1
    assert errors(res) == [
        f"{conf}:3:3: 'compress zstd:19': no installed plugin answers 'zstd' "
        "(installed: lzo, zlib)",
        f"{conf}:4:3: 'type foo': no installed plugin answers 'foo' "
        "(installed: ether, pipe, tty, tun)",
        f"{conf}:5:3: 'proto ws': no installed plugin answers 'ws' (installed: tcp, udp)",
    ]

    site.add("vt-foo", "foo", THIRD_PARTY)
    res = check(str(conf))
    assert (res.exit_code, res.stdout) == (0, f"{conf}: ok (1 host)\n"), res.stderr

    conf.write_text(CONFIG.replace("zstd:19", "zstd:23").replace("type foo", "type fo"))
    res = check(str(conf))
    assert errors(res) == [
        f"{conf}:3:3: 'compress zstd:23': zstd level must be 1-22",
        f"{conf}:4:3: 'type fo': no installed plugin answers 'fo' "
        "(installed: ether, foo, pipe, tty, tun); did you mean 'foo'?",
    ]


def handshake(client: ClientHandshake, flags: str) -> object:
    """The vtund handshake in memory, the server accepting with ``flags``."""
    server = ServerHandshake()
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    server.next_event()
    client.receive_data(server.send(Challenge(bytes(range(16)))))
    assert isinstance(client.next_event(), Challenged)
    server.receive_data(client.send(Answer()))
    server.next_event()
    client.receive_data(server.send(Accept(flags)))
    return client.next_event()


def test_flags_letters_come_from_the_records(site):  # noqa: F811
    site.add("vt-foo", "foo", THIRD_PARTY)
    letters = flag_letters(load_plugins().registry)
    host = parse_config(CONFIG).hosts["h"]
    flags = server_flags(host, "", letters)
    assert flags == "<Wf>"  # no C/L: zstd has no vtund letter
    event = handshake(ClientHandshake("h", b"x", letters=letters), flags)
    assert event == Accepted(Flags(proto="ws", type="foo"), "<Wf>")
    # A client without the plugin refuses the letters, as a vtund client would.
    with pytest.raises(ProtocolError, match="unexpected character 'W'"):
        handshake(ClientHandshake("h", b"x"), flags)
    # vtund's own letters are the ones the bundled plugins register.
    assert parse_flags("<UeC9K>", letters=letters) == parse_flags("<UeC9K>")
    vtund_host = parse_config("h { passwd x; type ether; proto udp; compress 9; keepalive yes; }")
    assert server_flags(vtund_host.hosts["h"], "", letters) == "<UeC9K>"


@pytest.mark.parametrize("flag, error", [
    ("K", "flag 'K' must be one letter, not one of CEFKLS"),
    ("ff", "flag 'ff' must be one letter"),
    ("1", "flag '1' must be one letter"),
    ("u", "flag 'u' already taken by device 'tun' of devices"),
    ("T", "flag 'T' already taken by transport 'tcp' of transports"),
])
def test_a_flag_letter_reserved_or_taken_is_refused(flag, error):
    reg = Registry()
    reg.current_plugin = "devices"
    reg.add_device(DeviceBackendType("tun", "tun", "u", lambda r: None))
    reg.current_plugin = "transports"
    reg.add_transport(TransportType("tcp", "T", lambda *a: None))
    reg.current_plugin = "foo"
    with pytest.raises(RegistryError, match=error):
        reg.add_device(DeviceBackendType("foo", "foo", flag, lambda r: None))
    assert "foo" not in reg.devices
