"""UDP port exchange (spec 3.1): after ``OK FLAGS`` with ``U``, each side writes its UDP
port as 2 raw bytes on the TCP connection, then reads the peer's 2 bytes.

Byte order depends on the build: upstream vtund writes big endian, the Debian build
little endian (host order on amd64).  Both sides bind UDP to their TCP port, so the
order can be told apart by comparing with the peer's TCP source port.
"""

from __future__ import annotations

from dataclasses import dataclass

from vtcore.protocol.errors import ProtocolError

PORT_SIZE = 2


def pack_port(port: int, little_endian: bool = True) -> bytes:
    """The 2 bytes announcing ``port`` (little endian by default, as Debian's vtund)."""
    if not 0 < port < 65536:
        raise ValueError(f"bad UDP port {port}")
    return port.to_bytes(PORT_SIZE, "little" if little_endian else "big")


def unpack_port(b: bytes, tcp_peer_port: int | None = None) -> int:
    """The peer's UDP port from its 2 bytes.

    Takes whichever byte order gives the peer's TCP source port; when neither does (NAT,
    or the peer is unknown) little endian, as the Debian reference.
    """
    if len(b) != PORT_SIZE:
        raise ProtocolError(f"UDP port: expected {PORT_SIZE} bytes, got {len(b)}")
    little = int.from_bytes(b, "little")
    if tcp_peer_port is not None and little != tcp_peer_port:
        big = int.from_bytes(b, "big")
        if big == tcp_peer_port:
            return big
    if little == 0:
        raise ProtocolError("UDP port: peer announced port 0")
    return little


@dataclass(frozen=True)
class PeerPort:
    """The peer's UDP port arrived (its 2 bytes, read in whichever order fits)."""

    port: int


class PortExchange:
    """The port exchange as a sans-I/O machine, driven like the handshake
    (:func:`vtcore.runtime.netio.drive`): ``announce()`` gives our 2 bytes, the driver
    reads ``bytes_needed`` and ``next_event()`` gives :class:`PeerPort`.

    The order is the caller's: a client announces first; the server reads the client's
    port, connects its UDP socket to it and only then announces (see
    :func:`vtcore.transports.udp.open_udp_link`).  Bytes after the peer's port break the
    protocol (it closes TCP after its port): :class:`ProtocolError`.
    """

    def __init__(
        self, local_port: int, tcp_peer_port: int | None = None, little_endian: bool = True
    ) -> None:
        self._port = pack_port(local_port, little_endian)
        self._tcp_peer_port = tcp_peer_port
        self._buf = b""
        self._event: PeerPort | None = None
        self.peer_port: int | None = None

    def announce(self) -> bytes:
        """Our 2 bytes (once)."""
        if not self._port:
            raise RuntimeError("the port was already announced")
        out, self._port = self._port, b""
        return out

    def data_to_send(self) -> bytes:
        """Nothing: this side speaks only through :meth:`announce`."""
        return b""

    @property
    def bytes_needed(self) -> int:
        return 0 if self.peer_port is not None else PORT_SIZE - len(self._buf)

    def receive_data(self, data: bytes) -> None:
        if self.peer_port is not None or len(self._buf) + len(data) > PORT_SIZE:
            if data:
                raise ProtocolError("UDP port: unexpected data after the port")
            return
        self._buf += data
        if len(self._buf) == PORT_SIZE:
            self.peer_port = unpack_port(self._buf, self._tcp_peer_port)
            self._event = PeerPort(self.peer_port)

    def next_event(self) -> PeerPort | None:
        event, self._event = self._event, None
        return event
