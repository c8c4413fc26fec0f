"""Keep-alive timing (spec 2.3), driven with a fake clock."""

from __future__ import annotations

import math

import pytest

from vtcore.protocol.keepalive import Action, KeepAlive


def run_silence(ka: KeepAlive, until: float) -> list[tuple[float, Action]]:
    """Fire every deadline up to ``until``; return the non-NONE actions with their time."""
    out = []
    for _ in range(1000):
        t = ka.next_deadline()
        if t > until:
            break
        action = ka.on_timer(t)
        if action is not Action.NONE:
            out.append((t, action))
        if action is Action.DEAD:
            break
    return out


def test_default_30_4_silence() -> None:
    ka = KeepAlive(30, 4, now=0.0)
    assert ka.next_deadline() == 30.0
    actions = run_silence(ka, 10_000)
    # ticks at 30, 61, 92, 123, 154, 185: echo at ticks 2..5, dead at tick 6
    assert actions == [
        (61.0, Action.SEND_ECHO),
        (92.0, Action.SEND_ECHO),
        (123.0, Action.SEND_ECHO),
        (154.0, Action.SEND_ECHO),
        (185.0, Action.DEAD),
    ]
    assert abs(185.0 - (4 + 2) * (30 + 1)) <= 31  # "about (count+2)*(interval+1)"
    assert ka.next_deadline() == math.inf
    assert ka.on_timer(1e9) is Action.NONE


@pytest.mark.parametrize(("interval", "count"), [(1, 0), (2, 1), (5, 3), (10, 10)])
def test_dead_after_count_plus_two_ticks(interval: int, count: int) -> None:
    ka = KeepAlive(interval, count, now=100.0)
    actions = run_silence(ka, 1e6)
    echoes = [a for _, a in actions if a is Action.SEND_ECHO]
    assert len(echoes) == count
    dead_at = actions[-1][0]
    assert actions[-1][1] is Action.DEAD
    assert dead_at - 100.0 == interval + (count + 1) * (interval + 1)


def test_inbound_traffic_keeps_alive() -> None:
    ka = KeepAlive(10, 2, now=0.0)
    for _ in range(50):
        t = ka.next_deadline()
        assert ka.on_timer(t) is Action.NONE  # first tick after traffic: no echo yet
        ka.received(t + 0.5)
    assert ka.idle == 0


def test_traffic_resets_idle_mid_way() -> None:
    ka = KeepAlive(10, 2, now=0.0)
    assert ka.on_timer(10.0) is Action.NONE
    assert ka.on_timer(21.0) is Action.SEND_ECHO
    ka.received(25.0)  # e.g. the ECHO_REP
    assert ka.on_timer(32.0) is Action.NONE
    assert ka.on_timer(43.0) is Action.SEND_ECHO


def test_early_call_does_nothing() -> None:
    ka = KeepAlive(30, 4, now=0.0)
    assert ka.on_timer(29.9) is Action.NONE
    assert ka.next_deadline() == 30.0
    assert ka.idle == 0


def test_late_tick_rearms_from_now() -> None:
    ka = KeepAlive(30, 4, now=0.0)
    ka.on_timer(45.0)
    assert ka.next_deadline() == 76.0


def test_first_tick_capped_at_300() -> None:
    assert KeepAlive(1000, 1, now=5.0).next_deadline() == 305.0


def test_disabled() -> None:
    ka = KeepAlive.disabled()
    assert ka.next_deadline() == math.inf
    assert ka.on_timer(1e12) is Action.NONE
    assert KeepAlive(0, 0, enabled=False).next_deadline() == math.inf
    with pytest.raises(ValueError):
        KeepAlive(0, 4)


# ---------------------------------------------------------------------- dead-peer probe


def test_probe_without_answer_is_dead_after_three_seconds() -> None:
    ka = KeepAlive(30, 4, now=0.0)
    assert ka.suspect(10.0)
    assert ka.probing and ka.probes == 1
    actions = run_silence(ka, 100)
    echoes = [t for t, a in actions if a is Action.SEND_ECHO]
    assert echoes == [10.0, 10.5, 11.0, 11.5, 12.0, 12.5]
    assert actions[-1] == (13.0, Action.DEAD)
    assert ka.next_deadline() == math.inf
    assert not ka.suspect(14.0), "a dead session is not probed again"


def test_answer_ends_probe_and_keepalive_goes_on() -> None:
    ka = KeepAlive(30, 4, now=0.0)
    ka.suspect(10.0)
    assert ka.on_timer(10.0) is Action.SEND_ECHO
    ka.received(10.2)  # the echo reply (in secure mode: an authenticated frame)
    assert not ka.probing
    assert ka.next_deadline() == 30.0
    assert run_silence(ka, 100)[0] == (61.0, Action.SEND_ECHO)


def test_forged_hints_alone_never_end_a_session_whose_peer_answers() -> None:
    """An ICMP error every 0.1 s (forgeable) against a peer that answers each echo."""
    ka = KeepAlive(30, 4, now=0.0)
    now = 0.0
    for _ in range(600):
        now += 0.1
        ka.suspect(now)
        while ka.next_deadline() <= now:
            action = ka.on_timer(ka.next_deadline())
            assert action is not Action.DEAD
            if action is Action.SEND_ECHO:
                ka.received(ka.next_deadline())
    assert ka.probes > 1


def test_probe_runs_without_keepalive() -> None:
    ka = KeepAlive.disabled()
    assert ka.suspect(5.0)
    assert run_silence(ka, 100)[-1] == (8.0, Action.DEAD)


def test_sending_into_silence_starts_a_probe() -> None:
    ka = KeepAlive(30, 4, now=0.0, watch_sending=True)
    assert ka.sent(1.0) == 3.0
    assert ka.sent(1.5) == 3.0, "the window counts from the first frame sent"
    assert ka.next_deadline() == 3.0
    actions = run_silence(ka, 100)
    assert actions[0] == (3.0, Action.SEND_ECHO)
    assert actions[-1] == (6.0, Action.DEAD)


def test_sending_with_answers_never_probes() -> None:
    ka = KeepAlive(30, 4, now=0.0, watch_sending=True)
    for i in range(100):
        t = i * 0.5
        ka.sent(t)
        ka.received(t + 0.05)
        assert ka.on_timer(t + 0.1) is Action.NONE
    assert ka.probes == 0


def test_sending_is_not_watched_over_streams_or_without_keepalive() -> None:
    for ka in (KeepAlive(30, 4, now=0.0), KeepAlive(enabled=False, watch_sending=True)):
        ka.sent(1.0)
        assert ka.next_deadline() >= 30.0
        assert ka.on_timer(10.0) is Action.NONE
