"""vtcore.compression.AdaptiveSkip: the native path's "stop compressing noise" policy."""

from __future__ import annotations

from vtcore.compression import MAX_SKIP, MIN_JUDGED, AdaptiveSkip


def run(policy: AdaptiveSkip, frames: int, shrinks: bool, size: int = 1400) -> list[bool]:
    """Which of ``frames`` frames were tried."""
    tried = []
    for _ in range(frames):
        t = policy.should_try()
        tried.append(t)
        if t:
            policy.tried(size, size // 2 if shrinks else size + 5)
    return tried


def test_compressible_traffic_is_always_tried() -> None:
    policy = AdaptiveSkip()
    assert all(run(policy, 500, shrinks=True))
    assert policy.raw_frames == 0


def test_backoff_doubles_to_the_cap_then_one_try_per_cap() -> None:
    policy = AdaptiveSkip()
    tried = run(policy, 2000, shrinks=False)
    positions = [i for i, t in enumerate(tried) if t]
    gaps = [b - a - 1 for a, b in zip(positions, positions[1:], strict=False)]
    assert gaps[:7] == [1, 2, 4, 8, 16, 32, 64]
    assert set(gaps[6:]) == {MAX_SKIP}
    assert policy.raw_frames == 2000 - len(positions)


def test_one_good_try_resets_the_backoff() -> None:
    policy = AdaptiveSkip()
    run(policy, 300, shrinks=False)
    while not policy.should_try():
        pass
    assert policy.tried(1400, 700)
    assert all(run(policy, 50, shrinks=True))


def test_a_shrink_of_less_than_a_sixteenth_does_not_pay() -> None:
    policy = AdaptiveSkip()
    assert not policy.tried(1600, 1501)
    policy = AdaptiveSkip()
    assert policy.tried(1600, 1500)


def test_short_frames_never_change_the_decision() -> None:
    policy = AdaptiveSkip()
    for _ in range(100):
        assert policy.should_try()
        assert not policy.tried(MIN_JUDGED - 1, MIN_JUDGED + 10)
    assert policy.raw_frames == 0
