"""While links run, vt's nice value is -1, as vtund's LINKFD_PRIO; restored after."""

from __future__ import annotations

import os
import time

import pytest

from vtcore.runtime.priority import LinkPriority


def _nice(pid: int = 0) -> int:
    return os.getpriority(os.PRIO_PROCESS, pid)


@pytest.fixture
def nice_restored():
    before = _nice()
    yield before
    os.setpriority(os.PRIO_PROCESS, 0, before)


@pytest.mark.netns  # lowering nice needs root: the netns guard (a failure under CI)
def test_first_link_lowers_last_link_restores(nice_restored: int) -> None:
    os.setpriority(os.PRIO_PROCESS, 0, 0)
    prio = LinkPriority()
    with prio.link():
        assert _nice() == -1
        with prio.link():
            assert _nice() == -1
        assert _nice() == -1, "a second link ending must not restore while one runs"
    assert _nice() == 0
    prio.ended()  # more ends than starts: ignored
    assert prio.active == 0 and _nice() == 0


@pytest.mark.netns
def test_a_lower_value_is_kept(nice_restored: int) -> None:
    os.setpriority(os.PRIO_PROCESS, 0, -5)
    with LinkPriority().link():
        assert _nice() == -5
    assert _nice() == -5


def test_without_privilege_nothing_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def refuse(which: int, who: int, value: int) -> None:
        calls.append(value)
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "getpriority", lambda which, who: 0)
    monkeypatch.setattr(os, "setpriority", refuse)
    prio = LinkPriority()
    with prio.link():
        pass
    assert calls == [-1], "tried once, and nothing to restore after a refusal"


@pytest.mark.netns
@pytest.mark.netns
@pytest.mark.parametrize("workers", ["0", "1"])
def test_daemons_run_links_at_nice_minus_one(workers: str, monkeypatch) -> None:
    """One process: the first link lowers its nice, the last restores it.  With workers
    (a master and its unprivileged data paths) the workers carry the links and run at -1
    from their start (they could not lower it themselves); the master keeps its own."""
    import peers
    from behaviour import children
    from netns import two_hosts, wait_ping
    from peers import VtClient, VtServer
    from secure_tools import add_devices, client_conf, no_crash, server_conf

    monkeypatch.setattr(peers, "TEST_WORKERS", workers)
    base = _nice()  # what the daemons inherit
    link = min(base, -1)
    with two_hosts() as p:
        ta, _tb = add_devices(p, "tun")
        with VtServer(p.a, server_conf(encrypt=None)) as s:
            if workers == "0":
                assert _nice(s.proc.pid) == base, "no link yet"
            with VtClient(p.b, client_conf(encrypt=None), "t1", p.a_addr) as c:
                wait_ping(p.b, ta, timeout=15)
                for daemon in (s, c):
                    carriers = children(daemon.proc.pid) if workers == "1" else []
                    assert len(carriers) == int(workers)
                    for pid in carriers or [daemon.proc.pid]:
                        assert _nice(pid) == link, (daemon.kind, pid)
                    if carriers:
                        assert _nice(daemon.proc.pid) == base, "the master keeps its own"
            if workers == "0":
                deadline = time.monotonic() + 10
                while _nice(s.proc.pid) != base and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert _nice(s.proc.pid) == base, "the server's last link ended: restored"
            assert s.alive()
            no_crash(s)
