"""Built-in transports (tcp, udp), registered like any external plugin."""

from __future__ import annotations

from vt_api import Registry, TransportType, hookimpl

from vtcore.transports.tcp import open_tcp_link
from vtcore.transports.udp import open_udp_link


@hookimpl
def vt_register_transports(registry: Registry) -> None:
    registry.add_transport(TransportType("tcp", "T", open_tcp_link, "frames on the TCP connection"))
    registry.add_transport(
        TransportType("udp", "U", open_udp_link, "frames as datagrams after a port exchange")
    )
