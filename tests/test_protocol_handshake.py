"""Handshake state machines: byte-exact KATs from the Debian capture, paired runs in
memory (aioquic style), and fuzzing (any input: accepted or ProtocolError)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vtcore.protocol.challenge import decode_chal
from vtcore.protocol.errors import ProtocolError
from vtcore.protocol.events import (
    Accept,
    Accepted,
    Answer,
    Challenge,
    ChallengeAnswered,
    Challenged,
    Denied,
    HostAnnounced,
    Reject,
)
from vtcore.protocol.flags import Flags
from vtcore.protocol.handshake import (
    MESG_SIZE,
    ClientHandshake,
    ClientState,
    ServerHandshake,
    ServerState,
    pack_msg,
    unpack_msg,
)

# Captured from the Debian vtund 3.0.4 (spec 1.2).
GREETING = b"VTUN server ver 3.X 05/14/2022\n" + b"\0" * 19
HOST = b"HOST: t1\n" + b"\0" * 41
OK_CHAL = b"OK CHAL: <klllmfmaffhpdhcahnbiifmidiehankb>\n" + b"\0" * 6
CHAL = b"CHAL: <mnkdpplkfpahmlnfdgcoeoclaegonmdb>\n" + b"\0" * 9
OK_FLAGS = b"OK FLAGS: <Tu>\n" + b"\0" * 35
ERR = b"ERR\n" + b"\0" * 46
PASSWORD = b"secret123"
CHAL_BYTES = decode_chal("<klllmfmaffhpdhcahnbiifmidiehankb>")
PROFILES = {"t1": PASSWORD}


def test_capture_sizes() -> None:
    assert {len(m) for m in (GREETING, HOST, OK_CHAL, CHAL, OK_FLAGS, ERR)} == {MESG_SIZE}


def test_pack_and_unpack() -> None:
    assert pack_msg("HOST: t1\n") == HOST
    assert unpack_msg(HOST) == "HOST: t1\n"
    long = pack_msg("x" * 60)
    assert long == b"x" * 48 + b"\0\0"
    assert unpack_msg(b"y" * 50) == "y" * 49  # byte 49 forced to NUL
    assert unpack_msg(b"ab\0cd" + b"\0" * 45) == "ab"


def test_server_matches_capture() -> None:
    server = ServerHandshake(greeting="VTUN server ver 3.X 05/14/2022")
    assert server.data_to_send() == GREETING
    server.receive_data(HOST)
    assert server.next_event() == HostAnnounced("t1")
    assert server.next_event() is None
    assert server.send(Challenge(CHAL_BYTES)) == OK_CHAL
    server.receive_data(CHAL[:7])
    assert server.next_event() is None
    server.receive_data(CHAL[7:])
    event = server.next_event()
    assert isinstance(event, ChallengeAnswered) and event.host == "t1"
    assert "response" not in repr(event)
    assert server.check(PASSWORD)
    assert not server.check(b"wrong")
    assert server.send(Accept("<Tu>")) == OK_FLAGS
    assert server.state is ServerState.DONE


def test_client_matches_capture() -> None:
    client = ClientHandshake("t1", PASSWORD)
    assert client.data_to_send() == b""
    client.receive_data(GREETING[:10])
    assert client.data_to_send() == b""
    client.receive_data(GREETING[10:])
    assert client.data_to_send() == HOST
    assert client.peer_greeting == "VTUN server ver 3.X 05/14/2022"
    client.receive_data(OK_CHAL)
    assert client.data_to_send() == b"" and client.bytes_needed == 0
    assert client.next_event() == Challenged(OK_CHAL)
    assert client.transcript == GREETING + HOST + OK_CHAL and client.reply == OK_CHAL
    assert client.send(Answer()) == CHAL
    assert client.next_event() is None
    client.receive_data(OK_FLAGS + b"\x20\x00")  # server's first ECHO_REQ right behind
    assert client.next_event() == Accepted(Flags(type="tun"), "<Tu>")
    assert client.state is ClientState.DONE
    assert client.trailing_data() == b"\x20\x00"
    client.receive_data(b"\x40\x00")
    assert client.trailing_data() == b"\x40\x00"
    assert client.trailing_data() == b""


def run_pair(
    client: ClientHandshake,
    server: ServerHandshake,
    profiles: dict[str, bytes],
    flags: str = "<TuC9KE10>",
    chunk: int = 50,
) -> None:
    """Drive both ends in memory until the server decides (aioquic ``roundtrip`` style)."""

    def to_client(data: bytes) -> None:
        for i in range(0, len(data), chunk):
            client.receive_data(data[i : i + chunk])

    def to_server(data: bytes) -> None:
        for i in range(0, len(data), chunk):
            server.receive_data(data[i : i + chunk])

    def client_says() -> bytes:
        out = client.data_to_send()
        if isinstance(client.next_event(), Challenged):
            out += client.send(Answer())
        return out

    to_client(server.data_to_send())
    for _ in range(4):
        to_server(client_says())
        event = server.next_event()
        if isinstance(event, HostAnnounced):
            to_client(server.send(Challenge(bytes(range(16)))))
        elif isinstance(event, ChallengeAnswered):
            pwd = profiles.get(event.host)
            ok = pwd is not None and server.check(pwd)
            to_client(server.send(Accept(flags)) if ok else server.send(Reject()))
            return
    raise AssertionError("handshake did not finish")


@pytest.mark.parametrize("chunk", [1, 7, 50])
def test_pair_success(chunk: int) -> None:
    client = ClientHandshake("t1", PASSWORD)
    server = ServerHandshake()
    run_pair(client, server, PROFILES, chunk=chunk)
    assert client.next_event() == Accepted(
        Flags(type="tun", zlib=9, keepalive=True, encrypt=10), "<TuC9KE10>"
    )
    assert server.state is ServerState.DONE and client.state is ClientState.DONE


@pytest.mark.parametrize(("host", "password"), [("t1", b"wrong"), ("nosuchhost", PASSWORD)])
def test_pair_denied(host: str, password: bytes) -> None:
    client = ClientHandshake(host, password)
    server = ServerHandshake()
    run_pair(client, server, PROFILES)
    assert client.next_event() == Denied()
    assert client.state is ClientState.FAILED
    assert server.state is ServerState.FAILED


def test_pair_sslauth_no() -> None:
    # there is no negotiation: the runtime checks with the profile's sslauth setting
    server2 = ServerHandshake()
    client2 = ClientHandshake("t1", PASSWORD, sslauth=False)
    client2.receive_data(server2.data_to_send())
    server2.receive_data(client2.data_to_send())
    server2.next_event()
    client2.receive_data(server2.send(Challenge(b"\x11" * 16)))
    assert isinstance(client2.next_event(), Challenged)
    server2.receive_data(client2.send(Answer()))
    assert isinstance(server2.next_event(), ChallengeAnswered)
    assert server2.check(PASSWORD, sslauth=False)
    assert not server2.check(PASSWORD, sslauth=True)


def test_native_extension_points() -> None:
    server = ServerHandshake(greeting="VTUN server ver 3.X vt native/1")
    client = ClientHandshake("t1", PASSWORD, host_extra=("vt1",))
    client.receive_data(server.data_to_send())
    assert client.peer_greeting == "VTUN server ver 3.X vt native/1"
    host_msg = client.data_to_send()
    assert host_msg == pack_msg("HOST: t1 vt1\n")
    server.receive_data(host_msg)
    assert server.next_event() == HostAnnounced("t1", ("vt1",))
    client.receive_data(server.send(Challenge(bytes(16))))
    assert isinstance(client.next_event(), Challenged)
    server.receive_data(client.send(Answer()))
    assert isinstance(server.next_event(), ChallengeAnswered)
    client.receive_data(server.send(Accept(Flags(type="tun", extra="n1"))))
    assert client.next_event() == Accepted(Flags(type="tun", extra="n1"), "<TuFn1>")


def test_server_ignores_extra_tokens_like_vtund() -> None:
    # vtund's auth_server reads only tokens 1 and 2 of strtok(" :").
    server = ServerHandshake()
    server.receive_data(pack_msg("::HOST:  t1 extra:more\r\nignored"))
    assert server.next_event() == HostAnnounced("t1", ("extra", "more"))


@pytest.mark.parametrize(
    "first",
    [
        "HOST\n",  # one token
        "host: t1\n",  # case matters
        "\nHOST: t1\n",  # strtok keeps the leading newline on the first token
        "CHAL: <aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa>\n",  # wrong state
        "",
    ],
)
def test_server_rejects_bad_host_message(first: str) -> None:
    server = ServerHandshake()
    with pytest.raises(ProtocolError):
        server.receive_data(pack_msg(first))
    assert server.state is ServerState.FAILED
    assert server.send(Reject()) == ERR


@pytest.mark.parametrize(
    "answer",
    ["HOST: t1\n", "CHAL: <abc>\n", "CHAL:\n", "CHAL: <" + "z" * 32 + ">\n"],
)
def test_server_rejects_bad_answer(answer: str) -> None:
    server = ServerHandshake()
    server.receive_data(HOST)
    server.next_event()
    server.send(Challenge(bytes(16)))
    with pytest.raises(ProtocolError):
        server.receive_data(pack_msg(answer))
    assert server.send(Reject()) == ERR


def test_server_refuses_pipelined_messages() -> None:
    server = ServerHandshake()
    with pytest.raises(ProtocolError):
        server.receive_data(HOST + CHAL)
    server = ServerHandshake()
    server.receive_data(HOST)
    with pytest.raises(ProtocolError):
        server.receive_data(b"x")  # before our challenge was sent


def test_server_out_of_order_calls_are_local_errors() -> None:
    server = ServerHandshake()
    with pytest.raises(RuntimeError):
        server.send(Challenge(bytes(16)))
    with pytest.raises(RuntimeError):
        server.send(Accept("<Tu>"))
    server.receive_data(HOST)
    with pytest.raises(ValueError):
        server.send(Challenge(b"short"))
    with pytest.raises(ValueError):
        ServerHandshake(greeting="HELLO")


def test_truncated_stream_gives_no_event() -> None:
    server = ServerHandshake()
    server.receive_data(HOST[:49])
    assert server.next_event() is None and server.state is ServerState.WAIT_HOST
    client = ClientHandshake("t1", PASSWORD)
    client.receive_data(GREETING)
    client.data_to_send()
    client.receive_data(OK_CHAL[:30])
    assert client.data_to_send() == b"" and client.next_event() is None
    assert client.bytes_needed == 20
    assert server.bytes_needed == 1
    server.receive_data(HOST[49:])
    assert server.bytes_needed == 0


@pytest.mark.parametrize(
    ("stage", "message"),
    [
        (0, "SSH-2.0-OpenSSH\n"),
        (0, "vtun server\n"),
        (1, "OK CHAL: nothing\n"),
        (1, "HELLO\n"),
        (2, "OK FLAGS: <TuX>\n"),
        (2, "OK FLAGS: <Tu\n"),
        (2, "FLAGS: <Tu>\n"),
    ],
)
def test_client_rejects_garbage(stage: int, message: str) -> None:
    client = ClientHandshake("t1", PASSWORD)
    for block in (GREETING, OK_CHAL)[:stage]:
        client.receive_data(block)
    if stage == 2:
        assert isinstance(client.next_event(), Challenged)
        client.send(Answer())
    with pytest.raises(ProtocolError):
        client.receive_data(pack_msg(message))
        if isinstance(client.next_event(), Challenged):  # not a challenge: fails on answering
            client.send(Answer())
    assert client.state is ClientState.FAILED
    client.receive_data(OK_FLAGS)  # ignored once failed
    assert client.next_event() is None


def test_client_err_at_challenge_is_denied() -> None:
    client = ClientHandshake("t1", PASSWORD)
    client.receive_data(GREETING)
    client.receive_data(ERR)
    assert client.next_event() == Denied()
    # A client that requires a secure mode sees this ERR before anything else.
    assert client.reply == ERR and client.transcript.endswith(ERR)


def test_client_refuses_server_speaking_out_of_turn() -> None:
    client = ClientHandshake("t1", PASSWORD)
    with pytest.raises(ProtocolError):
        client.receive_data(GREETING + OK_CHAL)


@pytest.mark.parametrize("host", ["", "a b", "a:b", "a\nb"])
def test_client_rejects_unusable_host_names(host: str) -> None:
    with pytest.raises(ValueError):
        ClientHandshake(host, PASSWORD)


def test_client_sslauth_no_needs_password() -> None:
    with pytest.raises(ValueError):
        ClientHandshake("t1", b"", sslauth=False)


# ---------------------------------------------------------------- fuzz

message_text = st.one_of(
    st.sampled_from(
        [
            "HOST: t1\n",
            "CHAL: <mnkdpplkfpahmlnfdgcoeoclaegonmdb>\n",
            "VTUN x\n",
            "OK CHAL: <klllmfmaffhpdhcahnbiifmidiehankb>\n",
            "OK FLAGS: <TuC9>\n",
            "ERR\n",
        ]
    ),
    st.text(alphabet=st.characters(max_codepoint=255), max_size=60),
)
chunks = st.lists(st.one_of(st.binary(max_size=120), message_text.map(pack_msg)), max_size=6)


@settings(max_examples=300)
@given(chunks)
def test_fuzz_server(data: list[bytes]) -> None:
    server = ServerHandshake()
    for piece in data:
        try:
            server.receive_data(piece)
        except ProtocolError:
            assert server.state is ServerState.FAILED
            assert server.send(Reject()) == ERR
            return
        assert len(server._buf) < MESG_SIZE
        event = server.next_event()
        if isinstance(event, HostAnnounced):
            server.send(Challenge(bytes(16)))
        elif isinstance(event, ChallengeAnswered):
            assert not server.check(PASSWORD)
            server.send(Reject())
            return


@settings(max_examples=300)
@given(chunks)
def test_fuzz_client(data: list[bytes]) -> None:
    client = ClientHandshake("t1", PASSWORD)
    for piece in data:
        try:
            client.receive_data(piece)
        except ProtocolError:
            assert client.state is ClientState.FAILED
            return
        if client.state is not ClientState.DONE:
            assert len(client._buf) < MESG_SIZE
        client.data_to_send()
        event = client.next_event()
        assert event is None or isinstance(event, Challenged | Accepted | Denied)
        if isinstance(event, Challenged):
            try:
                client.send(Answer())
            except ProtocolError:
                assert client.state is ClientState.FAILED
                return
