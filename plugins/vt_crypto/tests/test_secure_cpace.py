"""CPace against the test vectors of draft-irtf-cfrg-cpace (appendix: string utilities and
"Test vector for CPace using group ristretto255 and hash SHA-512")."""

from __future__ import annotations

import pytest
from vt_crypto.secure import cpace

H = bytes.fromhex

# --------------------------------------------------------------------------- strings


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "00"),
        (b"1234", "0431323334"),
        (bytes(range(127)), "7f" + bytes(range(127)).hex()),
        (bytes(range(128)), "8001" + bytes(range(128)).hex()),
    ],
)
def test_prepend_len(data: bytes, expected: str) -> None:
    assert cpace.prepend_len(data) == H(expected)


def test_lv_cat_and_transcript_ir() -> None:
    assert cpace.lv_cat(b"1234", b"5", b"", b"678") == H("043132333401350003363738")
    assert cpace.transcript_ir(b"123", b"PartyA", b"234", b"PartyB") == H(
        "03313233065061727479410332333406506172747942"
    )
    assert cpace.transcript_ir(b"3456", b"PartyA", b"2345", b"PartyB") == H(
        "043334353606506172747941043233343506506172747942"
    )


# --------------------------------------------------------------------------- ristretto255

PRS = b"Password"
CI = H("0b415f696e69746961746f720b425f726573706f6e646572")
SID = H("7e4b4791d6a8ef019b936c79fb7f2c57")
GEN_STRING = H(
    "11435061636552697374726574746f3235350850617373776f726464"
    + "00" * 100
    + "180b415f696e69746961746f720b425f726573706f6e646572107e4b4791d6a8ef019b936c79fb7f2c57"
)
GEN_HASH = H(
    "da6d3ddc8802fca9058755ffd3ebde08a9c2c74945901a258482a288b6663af0"
    "6bf645c93cd1c51512307199c80e84908916d983b34af77205f90851a657ee27"
)
G = H("222b6b195fe84b1652badb6f6a3ae3d24341e7306967f0b8115b40d5698c7e56")
YA_SCALAR = H("da3d23700a9e5699258aef94dc060dfda5ebb61f02a5ea77fad53f4ff0976d08")
YA = H("d6bac480f2c386c394efc7c47adb9925dcd2630b64f240c50f8d0eec482b9157")
YB_SCALAR = H("d2316b454718c35362d83d69df6320f38578ed5984651435e2949762d900b80d")
YB = H("3ea7e0b19560d7c0b0f5734f63b955286dfa8232b5ebe63324e2d9e7433f7258")
K = H("80b69a8a76457ab6a4d7f887a4bf6b55a2f80ac19c333f917a05fc9887c8b40f")
ADA, ADB = b"ADa", b"ADb"
ISK_IR = H(
    "b69effbf61b51d56401c0f65601abe428de8206feaaf0e32198896dcae7b35cd"
    "2b38950a39dfd5d4a79164614c2984f7daa460b588c1e80c3fa2068af7900447"
)


def fixed(scalar: bytes):
    """An rng whose 64 bytes reduce to ``scalar`` (the vectors' scalars are below the order)."""
    return lambda n: scalar + bytes(n - len(scalar))


def test_generator() -> None:
    import hashlib

    assert len(GEN_STRING) == 170
    assert cpace.generator_string(PRS, CI, SID) == GEN_STRING
    assert hashlib.sha512(GEN_STRING).digest() == GEN_HASH
    assert cpace.calculate_generator(PRS, CI, SID) == G


def test_shares_secret_point_and_isk() -> None:
    assert cpace.scalar_mult_vfy(YA_SCALAR, G) == YA
    assert cpace.scalar_mult_vfy(YB_SCALAR, G) == YB
    assert cpace.scalar_mult_vfy(YA_SCALAR, YB) == K == cpace.scalar_mult_vfy(YB_SCALAR, YA)
    assert cpace.intermediate_key(SID, K, YA, ADA, YB, ADB) == ISK_IR


def test_both_parties_reach_the_vectors_isk() -> None:
    a = cpace.CPace(PRS, CI, SID, initiator=True, rng=fixed(YA_SCALAR))
    b = cpace.CPace(PRS, CI, SID, initiator=False, rng=fixed(YB_SCALAR))
    assert (a.share, b.share) == (YA, YB)
    assert a.finish(b.share, ADA, ADB) == ISK_IR == b.finish(a.share, ADB, ADA)


def test_scalar_mult_valid_input() -> None:
    s = H("7cd0e075fa7955ba52c02759a6c90dbbfc10e6d40aea8d283e407d88cf538a05")
    x = H("2c3c6b8c4f3800e7aef6864025b4ed79bd599117e427c41bd47d93d654b4a51c")
    assert cpace.scalar_mult_vfy(s, x) == H(
        "7c13645fe790a468f62c39beb7388e541d8405d1ade69d1778c5fe3e7f6b600e"
    )


@pytest.mark.parametrize(
    "bad",
    [
        H("2b3c6b8c4f3800e7aef6864025b4ed79bd599117e427c41bd47d93d654b4a51c"),  # Y_i1
        bytes(32),  # Y_i2 == G.I
        b"\xff" * 32,
        bytes(31),
    ],
)
def test_invalid_points_abort(bad: bytes) -> None:
    s = H("7cd0e075fa7955ba52c02759a6c90dbbfc10e6d40aea8d283e407d88cf538a05")
    assert cpace.scalar_mult_vfy(s, bad) is None
    party = cpace.CPace(PRS, CI, SID, initiator=False, rng=fixed(YB_SCALAR))
    assert party.finish(bad) is None


def test_any_input_difference_gives_other_keys() -> None:
    base = (PRS, CI, SID)
    ref = cpace.CPace(*base, initiator=True, rng=fixed(YA_SCALAR))
    peer = cpace.CPace(*base, initiator=False, rng=fixed(YB_SCALAR))
    isk = peer.finish(ref.share)
    for prs, ci, sid in ((b"password", CI, SID), (PRS, CI + b"x", SID), (PRS, CI, SID[:-1])):
        a = cpace.CPace(prs, ci, sid, initiator=True, rng=fixed(YA_SCALAR))
        assert a.finish(peer.share) != isk


# --------------------------------------------------------------------------- no branch on the password


def _trace(fn) -> list[tuple[str, ...]]:
    """Every Python line executed and every C function called while ``fn`` runs (the
    garbage collector off: its callbacks, e.g. hypothesis's, would run at random points)."""
    import gc
    import sys

    events: list[tuple[str, ...]] = []

    def line(frame, event, arg):
        if event == "line":
            events.append((frame.f_code.co_filename, frame.f_code.co_name, str(frame.f_lineno)))
        return line

    def calls(frame, event, arg):
        if event == "c_call":
            events.append(("c", getattr(arg, "__qualname__", repr(arg))))

    gc.disable()
    sys.settrace(lambda frame, event, arg: line)
    sys.setprofile(calls)
    try:
        fn()
    finally:
        sys.setprofile(None)
        sys.settrace(None)
        gc.enable()
    return events


PASSWORDS = (b"s3cret", b"a far longer pass phrase, not the same at all")


def test_pake_steps_take_the_same_path_for_any_password() -> None:
    """The Python around libsodium does not branch on the password: the client's msg1 and
    the server's answer to one msg1 execute the same lines and C calls, in the same order,
    for two passwords of different lengths and contents (the scalar operations themselves
    are libsodium's constant-time code)."""
    from secure_helpers import det_rng, prefix, settings
    from vt_crypto.secure import ClientSecureHandshake, ServerSecureHandshake

    msg1 = ClientSecureHandshake("home", b"whatever", prefix()).data_to_send()
    # Warm-up: first calls fill caches (ABC isinstance checks) the second would skip.
    ServerSecureHandshake("home", b"warm", settings(), prefix()).receive_data(msg1)
    clients, servers = [], []
    for pw in PASSWORDS:
        clients.append(
            _trace(lambda pw=pw: ClientSecureHandshake("home", pw, prefix(), rng=det_rng(b"c")))
        )
        server = ServerSecureHandshake("home", pw, settings(), prefix(), rng=det_rng(b"s"))
        servers.append(_trace(lambda server=server: server.receive_data(msg1)))
        assert server.data_to_send()  # msg2 went out: the server cannot tell yet
    for runs in (clients, servers):
        assert len(runs[0]) > 50
        assert any(e[1] == "crypto_scalarmult_ristretto255" for e in runs[0])
        assert runs[0] == runs[1]
