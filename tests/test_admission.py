"""Handshake admission (vtcore.admission): slots per source with eviction, and the per-host
failure budget with exponential back-off.  Pure; time is passed in (a fake clock)."""

from __future__ import annotations

import pytest
from vt_api.wire import source_key

from vtcore.admission import HandshakeSlots, HostBackoff


def test_a_source_at_its_cap_evicts_its_own_oldest() -> None:
    slots = HandshakeSlots(max_pending=100, per_source=3)
    assert [slots.admit(i, "198.51.100.1") for i in range(3)] == [[], [], []]
    assert slots.admit(3, "198.51.100.1") == [0]
    assert slots.admit(4, "198.51.100.1") == [1]
    assert slots.admit("good", "198.51.100.2") == []  # another source is untouched
    assert len(slots) == 4 and slots.evicted == 2


def test_full_server_evicts_the_oldest_of_the_busiest_source() -> None:
    slots = HandshakeSlots(max_pending=6, per_source=4)
    slots.admit("good", "g")
    for i in range(4):
        slots.admit(("a", i), "a")
    slots.admit(("b", 0), "b")
    assert len(slots) == 6
    assert slots.admit(("c", 0), "c") == [("a", 0)]
    assert slots.admit(("c", 1), "c") == [("a", 1)]
    assert slots.admit(("c", 2), "c") == [("a", 2)]
    # a and c now hold 1 and 3: c is the busiest, its oldest goes; "good" stays.
    assert slots.admit(("d", 0), "d") == [("c", 0)]
    assert "good" in slots
    slots.release("good")
    assert "good" not in slots and len(slots) == 5


def test_idle_flood_from_ten_sources_leaves_room() -> None:
    """The issue's target: 1,000 idle connections from 10 sources hold at most
    10 x per_source slots; a good client from elsewhere takes one without evicting."""
    slots = HandshakeSlots(max_pending=256, per_source=16)
    for i in range(1000):
        slots.admit(i, f"10.0.0.{i % 10}")
    assert len(slots) == 160
    assert slots.admit("good", "10.0.1.1") == []


def test_release_is_idempotent_and_unknown_tickets_are_ignored() -> None:
    slots = HandshakeSlots(max_pending=2, per_source=2)
    slots.admit(1, "s")
    slots.release(1)
    slots.release(1)
    slots.release("never")
    assert len(slots) == 0
    assert slots.admit(2, "s") == [] and slots.admit(3, "s") == []


def test_bad_slot_parameters() -> None:
    with pytest.raises(ValueError):
        HandshakeSlots(max_pending=0)
    with pytest.raises(ValueError):
        HandshakeSlots(per_source=0)


def test_source_key_groups_ipv6_per_64() -> None:
    assert source_key("2001:db8:1:2::1") == source_key("2001:db8:1:2:ffff::9")
    assert source_key("2001:db8:1:2::1") != source_key("2001:db8:1:3::1")
    assert source_key("::ffff:192.0.2.7") == "192.0.2.7"


# ------------------------------------------------------------------------------ back-off


def test_budget_then_exponential_backoff() -> None:
    b = HostBackoff(free=3, first_interval=1.0, max_interval=8.0)
    now = 100.0
    for _ in range(2):
        assert b.allow("h", now)
        assert b.failed("h", now) is None
    assert b.allow("h", now)
    notice = b.failed("h", now)  # the budget is spent: back-off starts, logged once
    assert notice is not None and notice.failures == 3 and notice.interval == 1.0
    assert not b.allow("h", now + 0.5)
    assert b.allow("h", now + 1.0)
    assert not b.allow("h", now + 1.1)  # one attempt per interval
    intervals = []
    t = now + 1.0
    for _ in range(5):
        b.failed("h", t)
        (state,) = b.snapshot(t)
        intervals.append(state["interval"])
        t += state["interval"]
        assert not b.allow("h", t - 0.01)
        assert b.allow("h", t)
    assert intervals == [2.0, 4.0, 8.0, 8.0, 8.0]
    assert b.snapshot(t)[0]["refused"] == 7


def test_attempts_in_flight_count_against_the_budget() -> None:
    """A burst of simultaneous guesses gets no more than the budget through."""
    b = HostBackoff(free=5)
    assert sum(b.allow("h", 0.0) for _ in range(100)) == 5
    for _ in range(2):
        b.failed("h", 0.1)
    assert not b.allow("h", 0.2)  # 2 failed + 3 in flight: the budget is still full
    b.succeeded("h", 0.3)  # one proves the password: the budget is back
    assert sum(b.allow("h", 0.4) for _ in range(100)) == 3


def test_an_early_check_spends_nothing() -> None:
    b = HostBackoff(free=2, first_interval=1.0)
    assert all(b.allow("h", 0.0, reserve=False) for _ in range(50))
    assert b.snapshot(0.0) == [] and b.allow("h", 0.0) and b.allow("h", 0.0)
    b.failed("h", 0.0)
    b.failed("h", 0.0)
    assert not b.allow("h", 0.5, reserve=False)
    assert b.allow("h", 1.0, reserve=False) and b.allow("h", 1.0, reserve=False)
    assert b.allow("h", 1.0) and not b.allow("h", 1.0, reserve=False)


def test_backoff_is_per_host_and_success_resets() -> None:
    b = HostBackoff(free=2)
    for _ in range(2):
        assert b.allow("h", 0.0)
        b.failed("h", 0.0)
    assert not b.allow("h", 0.1)
    assert b.allow("other", 0.1)
    b.succeeded("other", 0.1)
    assert b.allow("h", 1.0)
    b.succeeded("h", 1.0)
    assert b.allow("h", 1.1) and b.snapshot(1.1) == []


def test_notice_is_logged_once_per_window() -> None:
    b = HostBackoff(free=1, first_interval=10.0, max_interval=10.0)
    notices = [b.failed("h", 0.0 + i * 0.1) for i in range(50)]  # a burst in flight
    assert sum(n is not None for n in notices) == 1
    assert b.failed("h", 10.5) is not None
    assert b.failed("h", 10.6) is None


def test_a_host_left_alone_is_forgotten() -> None:
    b = HostBackoff(free=1, first_interval=1.0, max_interval=4.0, forget_after=60.0)
    b.allow("h", 0.0)
    b.failed("h", 0.0)
    assert not b.allow("h", 0.5)
    assert b.snapshot(30.0) != []
    assert b.allow("h", 61.0) and b.snapshot(61.0) == []


def test_backoff_memory_is_bounded() -> None:
    """Random host names (unknown hosts are tracked like known ones, so back-off does not
    tell them apart) cannot grow memory without bound."""
    b = HostBackoff(free=1, max_hosts=50)
    for i in range(5000):
        b.allow(f"h{i}", 0.0)
        b.failed(f"h{i}", 0.0)
    assert len(b.snapshot(0.0)) == 50
    assert not b.allow("h4999", 0.0)


def test_bad_backoff_parameters() -> None:
    with pytest.raises(ValueError):
        HostBackoff(free=0)
    with pytest.raises(ValueError):
        HostBackoff(first_interval=5.0, max_interval=1.0)
