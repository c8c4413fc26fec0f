"""vt-shaper: token bucket at vtund's limit, checked with synthetic time."""

from __future__ import annotations

import random

import pytest
from vt_shaper.bucket import MIN_PAUSE, Shaper, vtund_limit
from vt_shaper.plugin import create, vt_register_pacers

from vtcore.api import FrameModule, LinkSettings, PacingModule, Registry

FRAME = 1400


def run(shaper: Shaper, seconds: float, gap: float = 10e-6, slack: float = 0.0) -> float:
    """Send FRAME-byte frames as fast as allowed for ``seconds``; return bytes/s achieved.

    ``gap`` is the time between frames when not paused (a fast device); ``slack`` is the
    most a pause oversleeps (timer granularity), drawn at random.
    """
    rng = random.Random(5)
    now = 0.0
    sent = 0
    for _ in range(10_000_000):  # bound: far above what any case needs
        if now >= seconds:
            break
        sent += FRAME
        pause = shaper.sent(FRAME, now)
        assert pause >= 0.0
        now += gap + (pause + rng.uniform(0, slack) if pause else 0.0)
    else:
        pytest.fail("loop bound reached")
    return sent / now


def test_vtund_limit_formula() -> None:
    assert vtund_limit(64) == 8592  # spec §5.5 example
    assert vtund_limit(100) == 12 * 1024 + 400  # integer division first
    assert vtund_limit(256) == 33168


@pytest.mark.parametrize("kbps", [256, 1000, 10_000, 50_000])
@pytest.mark.parametrize("slack", [0.0, 0.002])
def test_long_run_rate_within_2_percent(kbps: int, slack: float) -> None:
    shaper = Shaper(kbps)
    rate = run(shaper, seconds=30.0, slack=slack)
    assert abs(rate - shaper.rate) / shaper.rate < 0.02
    # and within 2% of the nominal setting (kbit/s of 1024 bits/8 bytes) too
    assert abs(rate - kbps * 128) / (kbps * 128) < 0.02


@pytest.mark.parametrize("kbps", [256, 50_000])
def test_slow_sender_is_never_paused(kbps: int) -> None:
    shaper = Shaper(kbps)
    gap = FRAME / (shaper.rate * 0.9)  # 90% of the limit
    now = 0.0
    for _ in range(2000):
        assert shaper.sent(FRAME, now) == 0.0
        now += gap


def test_burst_then_pause_repays_debt() -> None:
    shaper = Shaper(1000)  # 128400 B/s; burst = 2 frames of 2148 (more than 10 ms)
    assert shaper.burst == 2 * 2148
    assert shaper.sent(FRAME, 0.0) == 0.0
    assert shaper.sent(FRAME, 0.0) == 0.0
    assert shaper.sent(FRAME, 0.0) == 0.0  # 4200 <= 4296
    pause = shaper.sent(FRAME, 0.0)
    assert pause == pytest.approx((4 * FRAME - shaper.burst) / shaper.rate)
    # After pausing exactly that long the bucket is empty: the next frame pauses a frame's time.
    assert shaper.sent(FRAME, pause) == pytest.approx(FRAME / shaper.rate)


def test_burst_is_10ms_at_high_rate() -> None:
    shaper = Shaper(50_000)
    assert shaper.burst == pytest.approx(0.010 * shaper.rate)
    assert shaper.burst < 70_000


def test_idle_does_not_build_credit_beyond_burst() -> None:
    shaper = Shaper(256)
    shaper.sent(FRAME, 0.0)
    total = 0
    now = 3600.0  # an hour idle
    while shaper.sent(FRAME, now) == 0.0:
        total += FRAME
        assert total <= shaper.burst
    assert total + FRAME > shaper.burst


def test_tiny_debts_are_carried_not_paused() -> None:
    shaper = Shaper(50_000)
    now = 0.0
    pauses = []
    for _ in range(1000):
        pauses.append(shaper.sent(FRAME, now))
    assert all(p == 0.0 or p >= MIN_PAUSE for p in pauses)
    assert any(p > 0.0 for p in pauses)


def test_clock_going_backwards_adds_no_credit() -> None:
    shaper = Shaper(256)
    shaper.sent(int(shaper.burst), 10.0)
    pause = shaper.sent(FRAME, 5.0)
    assert pause == pytest.approx(FRAME / shaper.rate)


def test_a_pacer_not_a_frame_module() -> None:
    """It sees no frame: the linker only asks it how long to pause."""
    shaper = Shaper(64)
    assert isinstance(shaper, PacingModule) and not isinstance(shaper, FrameModule)


def test_registration_and_factory() -> None:
    reg = Registry(current_plugin="shaper")
    vt_register_pacers(reg)
    item = reg.pacers["shaper"]
    assert item.keyword == "speed" and reg.frame_modules == {}
    assert reg.answers("speed") and reg.answers("speed", "128")
    assert reg.answering("speed") is None  # no frame module answers it
    (name, pacer), = reg.pacers_for(LinkSettings(host="h", role="client", speed_out=64))
    assert name == "plugin shaper (shaper)" and isinstance(pacer, Shaper)
    assert item.describe == "speed N | IN:OUT kbit/s (IN: to the client, OUT: from it)"
    assert create(LinkSettings(host="h", role="server")) is None
    shaper = create(LinkSettings(host="h", role="client", speed_out=512))
    assert isinstance(shaper, Shaper) and shaper.rate == vtund_limit(512)
