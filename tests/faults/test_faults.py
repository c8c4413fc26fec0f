"""The fault suite, CI-sized (issue 16.4): each scenario of ``faults.py`` once, small.

``make faults`` runs the same scenarios long, with vtund as the anchor, and writes
``bench/results/faults-<timestamp>.md``.  Select these with ``-m faults``.
"""

from __future__ import annotations

import faults
import pytest

pytestmark = [pytest.mark.netns, pytest.mark.faults]


def test_handshake_fuzz_while_good_clients_are_served() -> None:
    rep = faults.handshake_fuzz(2000, concurrency=20, wait=0.3)
    assert sum(rep["outcomes"].values()) == 2000


def test_frame_fuzz_into_live_sessions() -> None:
    rep = faults.frame_fuzz(300)
    assert len(rep["sessions"]) == len(faults.SHORT_COMBOS)


@pytest.mark.parametrize("proto", ["tcp", "udp"])
@pytest.mark.parametrize("end", ["server", "client"])
def test_kill9_under_load_recovers(end, proto) -> None:
    # From the kill to the first reply, the restarted end's Python start-up included;
    # over udp the dead-peer probe (3 s) decides (tests/test_behaviour_restart.py holds
    # the 5 s target from the restart itself).
    rep = faults.kill9(proto, end, bound=20)
    assert rep["recovery_s"] is not None and rep["recovery_s"] < 10, rep


def test_sigstop_sigcont_resumes() -> None:
    rep = faults.stop_cont("tcp", seconds=3)
    assert rep["recovery_s"] < 5 and rep["new_sessions"] == 0, rep


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_lossy_reordering_underlay_keeps_files_identical(proto) -> None:
    faults.lossy_transfer(proto, nbytes=128 << 10)


def test_broken_config_sighups_keep_the_session_and_hosts() -> None:
    rep = faults.config_sighup(12)
    assert rep["sighups"] == 12 and rep["refused"] >= 8, rep


def test_session_churn_leaks_nothing() -> None:
    faults.churn(rounds=3, n=10)
