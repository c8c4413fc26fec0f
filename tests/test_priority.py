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
def test_daemons_run_links_at_nice_minus_one() -> None:
    from netns import two_hosts, wait_ping
    from peers import VtClient, VtServer
    from secure_tools import add_devices, client_conf, no_crash, server_conf

    base = _nice()  # what the daemons inherit
    with two_hosts() as p:
        ta, _tb = add_devices(p, "tun")
        with VtServer(p.a, server_conf(encrypt=None)) as s:
            assert _nice(s.proc.pid) == base, "no link yet"
            with VtClient(p.b, client_conf(encrypt=None), "t1", p.a_addr) as c:
                wait_ping(p.b, ta, timeout=15)
                assert _nice(s.proc.pid) == min(base, -1)
                assert _nice(c.proc.pid) == min(base, -1)
            deadline = time.monotonic() + 10
            while _nice(s.proc.pid) != base and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _nice(s.proc.pid) == base, "the server's last link ended: restored"
            assert s.alive()
            no_crash(s)
