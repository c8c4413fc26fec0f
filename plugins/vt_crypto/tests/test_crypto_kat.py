"""Known answers: vt_crypto's frames against the spec, byte for byte.

Every vector is checked twice: against hard-coded hex and against the plain spec
re-statement in ``crypto_spec_ref`` (no vt_crypto code), so a change in either shows.
"""

from __future__ import annotations

import hashlib

import pytest
from crypto_spec_ref import ScriptedRng, VtundDecoder, encrypt_frames, legacy_encrypt, script
from cryptography.hazmat.decrepit.ciphers.algorithms import Blowfish
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from vt_crypto import CIPHERS, WORDS, derive_key, make_codec, spec_for

PASSWORD = b"secret-pw"
PACKETS = [
    bytes.fromhex("4500001400010000400100007f0000017f000001"),  # 20 bytes
    bytes(range(16)),  # a multiple of both block sizes: random pad block
    b"vtun!",
]
ICMP84 = bytes.fromhex("45000054") + bytes(range(80))

KAT = {
    "blowfish128ecb": [
        "fce24047152b5ad348a771c14a7de23027eb06c389d111e7",
        "16c89c949d629033204ee8cc2a07a764f017a1e158c122b3",
        "9fd87994048f90a7",
    ],
    "blowfish256cbc": [
        "6e0f5cc6f8c1310fd473de0ae46607658fbd7d233c050b63"
        "bb7b2d52a91f71c9941af97449ed1fe1225910c59a28a0a3",
        "7f3e1c6f3d953dd52ff3c42d481291695dc00864c316ad17c4478abbfff6bd1f",
        "e76f15788c228386ee6f79eb98beb14f",
    ],
    "blowfish128cfb": [
        "2555d0b0de0fca16bede2267a30b81ad47093b5353a789b9"
        "475f146c1f64773a4a6c0c07b0f59d857887494a8060c95c",
        "6e49237eb7df47f75ec033d8393caead80e58af952943c8ab94c4782ee2f8295",
        "152e55c09d7b05a56d5454f44cee1aa9",
    ],
    "aes128cbc": [
        "ee23e292045e889ae5d0f2511d9260493c5ab0716f240f7555c53bed3af0dee8"
        "981ecbfe9b451c49ac882ab000204cdbbf3d7b6862f3d1d7847cd5b81a3cde0e"
        "f930ead7b3c32a6192d5d6b04463e4e0",
        "ef85588d611064708015eb950630c0461ea28dece84119a796ed35bd721e8aca"
        "2de52054797c0c7b543162a3b688b7a0",
        "49f3ac62565cbcfb8ad0d0d0a1b5d9315b80fd5ebec93878db3c577f530cd591",
    ],
    "aes128ofb": [
        "ee23e292045e889ae5d0f2511d9260493c5ab0716f240f7555c53bed3af0dee8"
        "627a6e9816ce979fc4c3ffe15d271e51f7e7a99020cc0ab3168bfff01656e447"
        "470110dfe9090324dd6988f90f19a103",
        "945277f4a33723f6359aebe59651c9ad135163e44c05278272a0c578d53e9937"
        "7a08e7cc6c7f72f6be27e3882850ce7b",
        "03e870a6b15217030238511faad3db3e5bf752c5bbb9ee3c609670c8bfe1302f",
    ],
    "aes256cfb": [
        "2472573294ec2acac0e767e0d57a044b5122d4fc62df33fb353b2cb15496c905"
        "ad4c15608bc0dcec4dd17f8bb4d2e2bf64d76826e3799c28f50a202d10827305"
        "6ab3d6a7c7544282928d411b8035bb74",
        "7f87dd5fcb28559431cceb82b953d1526901a2d9d096eca72404c7e9cb636367"
        "1139d1dd5ccbaa7264342b2562e33ff3",
        "99486f1ac0294b7f0cb2406945bc72345f00dfe7f7ea934d32ce2c1bf8731ee9",
    ],
    "aes256ecb": [
        "446cafb96e4502fdb3932881631811067c378d781d22365f136199b280b0f3b8",
        "1d67c76eb59bb168d55341c9bd41da84dfdd018fc3ff2e82f0c31b2039cc56c0",
        "eb586b11839b662ac1f4faf5236c379b",
    ],
}
LEGACY_KAT = [
    "8f99bab9b02fccd60b01818f9047dde79e7f79a678a2dad1",
    "ce1afb3c48587f5216c89c949d629033204ee8cc2a07a764",
    "006aef30c18f6173",
]


@pytest.mark.parametrize("name", sorted(KAT))
def test_frames_match_hardcoded_and_spec_reference(name: str) -> None:
    reference = encrypt_frames(name, PASSWORD, PACKETS, ScriptedRng(script()))
    assert [f.hex() for f in reference] == KAT[name]
    codec = make_codec(WORDS[name], PASSWORD, rng=ScriptedRng(script()))
    assert [codec.encode(p).hex() for p in PACKETS] == KAT[name]


@pytest.mark.parametrize("name", sorted(KAT))
def test_kat_frames_decode(name: str) -> None:
    codec = make_codec(WORDS[name], PASSWORD)
    assert [codec.decode(bytes.fromhex(h)) for h in KAT[name]] == PACKETS
    assert codec.dropped == 0


def test_legacy_matches_hardcoded_and_spec_reference() -> None:
    codec = make_codec(999, PASSWORD)
    assert [legacy_encrypt(PASSWORD, p).hex() for p in PACKETS] == LEGACY_KAT
    assert [codec.encode(p).hex() for p in PACKETS] == LEGACY_KAT
    assert [codec.decode(bytes.fromhex(h)) for h in LEGACY_KAT] == PACKETS


def test_legacy_verified_capture_facts() -> None:
    """spec §5.4 (verified): 84-byte packet -> 88 bytes, first block 04 00 00 00 45 00 00 54."""
    frame = make_codec(999, PASSWORD).encode(ICMP84)
    assert len(frame) == 88
    ecb = Cipher(Blowfish(hashlib.md5(PASSWORD).digest()), modes.ECB()).decryptor()
    assert ecb.update(frame)[:8] == bytes.fromhex("0400000045000054")


def test_aes128cbc_verified_sizes_and_layout() -> None:
    """spec §5.3 (verified): first frame 32 + 16 + 84 + 12 = 144 bytes, then 112."""
    codec = make_codec(10, PASSWORD)
    first, second = codec.encode(ICMP84), codec.encode(ICMP84)
    assert (len(first), len(second)) == (144, 112)
    k = hashlib.md5(PASSWORD).digest()
    head = Cipher(algorithms.AES(k), modes.ECB()).decryptor().update(first[:32])
    assert head[:4] == b"ivec"
    dec = Cipher(algorithms.AES(k), modes.CBC(head[4:20])).decryptor()
    p1, p2 = dec.update(first[32:]), dec.update(second)
    for plain in (p1, p2):
        assert plain[:4] == b"seq#" and plain[8:16] == bytes(8)
        assert plain[16:100] == ICMP84
        assert plain[100:] == bytes([12]) * 12
    seq1, seq2 = int.from_bytes(p1[4:8], "big"), int.from_bytes(p2[4:8], "big")
    assert seq2 == (seq1 + 1) % 2**32


def test_aligned_packet_gets_random_block_ending_in_block_size() -> None:
    codec = make_codec(13, PASSWORD)  # aes256ecb
    frame = codec.encode(bytes(32))
    plain = Cipher(algorithms.AES(derive_key(PASSWORD, 32)), modes.ECB()).decryptor().update(frame)
    assert len(frame) == 48 and plain[-1] == 16 and plain[32:47] != bytes(15)


def test_blowfish_chained_keeps_first_four_bytes() -> None:
    """vt does not reproduce the 64-bit vtund quirk that zeroes plaintext bytes 0-3."""
    codec = make_codec(2, PASSWORD)  # blowfish128cbc
    frame = codec.encode(ICMP84)
    k = derive_key(PASSWORD, 16)
    head = Cipher(Blowfish(k), modes.ECB()).decryptor().update(frame[:16])
    plain = Cipher(Blowfish(k), modes.CBC(head[4:12])).decryptor().update(frame[16:])
    assert plain[:4] == b"seq#" and plain[8:12] == b"\x45\x00\x00\x54"


def test_key_derivation() -> None:
    md5_empty = bytes.fromhex("d41d8cd98f00b204e9800998ecf8427e")
    assert derive_key(b"", 16) == md5_empty
    assert derive_key(b"", 32) == md5_empty * 2
    assert derive_key(b"abc", 32) == hashlib.md5(b"a").digest() + hashlib.md5(b"bc").digest()
    assert derive_key(b"abc", 16) == bytes.fromhex("900150983cd24fb0d6963f7d28e17f72")
    assert derive_key(b"abc\0junk", 16) == derive_key(b"abc", 16)  # vtund uses strlen


def test_cipher_table_codes() -> None:
    assert WORDS["yes"] == 1
    assert {c: s.name for c, s in CIPHERS.items() if c in (1, 4, 8, 9, 12, 16, 999)} == {
        1: "blowfish128ecb",
        4: "blowfish128ofb",
        8: "blowfish256ofb",
        9: "aes128ecb",
        12: "aes128ofb",
        16: "aes256ofb",
        999: "oldblowfish128ecb",
    }
    assert spec_for(77).name == "blowfish128ecb"
    assert len(WORDS) == 18


@pytest.mark.parametrize("name", ["aes128cbc", "aes128ofb", "aes256cfb", "blowfish256cbc"])
def test_vtund_decoder_reads_ivec_plus_rsyn_frame(name: str) -> None:
    """vt may send a fresh IV and a resync request in one frame; vtund's order of checks
    (ivec header, then the tag) reads both."""
    codec = make_codec(WORDS[name], PASSWORD)
    codec.send_rsyn = True  # as after our decoder lost sync, before anything was sent
    assert codec.encoder_state == "INIT"
    peer = VtundDecoder(name, PASSWORD)
    assert peer.decode(codec.encode(PACKETS[0])) == PACKETS[0]
    assert peer.rsyn_seen == 1 and codec.encoder_state == "SEQUENCE"
    assert peer.decode(codec.encode(PACKETS[2])) == PACKETS[2] and peer.rsyn_seen == 1
