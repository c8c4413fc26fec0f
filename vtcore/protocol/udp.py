"""UDP port exchange (spec 3.1): after ``OK FLAGS`` with ``U``, each side writes its UDP
port as 2 raw bytes on the TCP connection, then reads the peer's 2 bytes.

Byte order depends on the build: upstream vtund writes big endian, the Debian build
little endian (host order on amd64).  Both sides bind UDP to their TCP port, so the
order can be told apart by comparing with the peer's TCP source port.
"""

from __future__ import annotations

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


class PortExchange:
    """Sans-I/O wrapper: bytes to send, bytes in, the peer's port out.

    ``receive_data`` may be given more than 2 bytes only if the peer broke the protocol
    (it closes TCP after its port): that raises :class:`ProtocolError`.
    """

    def __init__(
        self, local_port: int, tcp_peer_port: int | None = None, little_endian: bool = True
    ) -> None:
        self._out = pack_port(local_port, little_endian)
        self._tcp_peer_port = tcp_peer_port
        self._buf = b""
        self.peer_port: int | None = None

    def data_to_send(self) -> bytes:
        """Our 2 bytes (once; empty afterwards)."""
        out, self._out = self._out, b""
        return out

    def receive_data(self, data: bytes) -> int | None:
        """Feed TCP bytes; returns the peer's port once complete, else None."""
        if self.peer_port is not None:
            if data:
                raise ProtocolError("UDP port: unexpected data after the port")
            return self.peer_port
        self._buf += data
        if len(self._buf) > PORT_SIZE:
            raise ProtocolError("UDP port: unexpected data after the port")
        if len(self._buf) < PORT_SIZE:
            return None
        self.peer_port = unpack_port(self._buf, self._tcp_peer_port)
        return self.peer_port
