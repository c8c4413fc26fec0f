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
