"""HandshakeLimiter: per-source token bucket and a global cap (time passed in)."""

from __future__ import annotations

import pytest
from vt_crypto.secure import HandshakeLimiter, source_key


def test_burst_from_one_source_is_cut_others_pass() -> None:
    lim = HandshakeLimiter(rate=1.0, burst=5, max_concurrent=1000)
    results = [lim.admit("192.0.2.1", 100.0) for _ in range(50)]
    assert results == [True] * 5 + [False] * 45
    assert lim.refused == 45
    assert all(lim.admit(f"192.0.2.{i}", 100.0) for i in range(2, 20))


def test_bucket_refills_with_time() -> None:
    lim = HandshakeLimiter(rate=2.0, burst=2, max_concurrent=1000)
    assert lim.admit("a", 0.0) and lim.admit("a", 0.0) and not lim.admit("a", 0.0)
    assert lim.admit("a", 0.5) and not lim.admit("a", 0.5)
    assert lim.admit("a", 100.0) and lim.admit("a", 100.0) and not lim.admit("a", 100.0)
    assert not lim.admit("a", 99.0)  # a clock going backwards adds nothing


def test_global_cap_and_release() -> None:
    lim = HandshakeLimiter(rate=1.0, burst=10, max_concurrent=3)
    assert [lim.admit(s, 0.0) for s in "abcd"] == [True, True, True, False]
    assert lim.in_flight == 3
    lim.release()
    assert lim.admit("d", 0.0) and not lim.admit("e", 0.0)
    for _ in range(10):
        lim.release()
    assert lim.in_flight == 0


def test_memory_is_bounded() -> None:
    lim = HandshakeLimiter(rate=0.001, burst=1, max_concurrent=10**6, max_sources=100)
    for i in range(10_000):
        lim.admit(f"s{i}", 0.0)
    assert len(lim._buckets) == 100
    assert not lim.admit("s9999", 0.0)  # recent sources are still remembered


@pytest.mark.parametrize(
    ("addr", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::9", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("not an ip", "not an ip"),
    ],
)
def test_source_key(addr: str, key: str) -> None:
    assert source_key(addr) == key


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        HandshakeLimiter(rate=0)
