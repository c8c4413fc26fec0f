"""Client downgrade (issue 15, finding 2): trust on first use of secure mode.

A client whose host has no secure word (only the server sets ``encrypt``) remembers
that a server once answered in secure mode, and from then on refuses vtund's challenge
from it: a man in the middle rewriting ``OK VT3`` into ``OK CHAL`` gets no response to
guess the password from.  A first contact with a real vtund still works, and every
session authenticated the vtund way says what a recording of it gives away.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest
from netns import ping, two_hosts, wait_ping
from peers import VtClient, VtServer, VtundServer, requires_vtund
from secure_tools import PASSWD, add_devices, client_conf, log_lines, no_crash, server_conf
from test_secure_attacks import relay

from vtcore.runtime import fsguard, trust

LEGACY = trust.LEGACY_AUTH  # the per-session line (the start-up config warning differs)


@pytest.fixture
def statdir():
    d = Path(tempfile.mkdtemp(prefix="vt-tofu-"))
    try:
        yield d / "stat"
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _client_conf(statdir: Path, extra: str = "") -> str:
    """The vtund habit: no secure word on the client."""
    return client_conf(encrypt=None, extra=extra).replace(
        "options {", f"options {{ statdir {statdir};", 1)


@pytest.mark.netns
def test_downgrade_refused_after_one_secure_session(statdir: Path) -> None:
    record = statdir / trust.SUBDIR / "t1@127.0.0.1:5000"
    with two_hosts() as p:
        ta, _ = add_devices(p, "tun")
        with VtServer(p.a, server_conf()) as s:
            with relay(p, "pass"), VtClient(p.b, _client_conf(statdir), "t1", "127.0.0.1") as c:
                wait_ping(p.b, ta, timeout=15)
                c.wait_log(r"legacy authentication from it will be refused from now on")
                assert not log_lines(c.log(), LEGACY)
            # Created safely: root's, 0700 directory, 0600 file, no symlink.
            dst, fst = os.lstat(record.parent), os.lstat(record)
            assert stat.S_ISDIR(dst.st_mode) and stat.S_IMODE(dst.st_mode) == 0o700
            assert stat.S_ISREG(fst.st_mode) and stat.S_IMODE(fst.st_mode) == 0o600
            assert dst.st_uid == fst.st_uid == os.geteuid()
            with relay(p, "rewrite-offer") as r, \
                    VtClient(p.b, _client_conf(statdir), "t1", "127.0.0.1",
                             expect_exit=True) as c:
                r.wait_event("rewrote")
                line = c.wait_log(r"session failed.*").group(0)
                assert "server does not offer secure mode for host t1" in line, line
                assert "refusing to fall back (downgrade?)" in line, line
                assert f"spoke secure mode before (remembered in {record})" in line, line
                c.proc.wait(timeout=5)
                assert c.proc.returncode != 0
                assert not log_lines(c.log(), LEGACY)
                assert not [e for e in r.events() if e.get("event") == "client-answered"]
            assert len(log_lines(s.log(), "session opened")) == 1
            assert ping(p.b, ta, count=1, timeout=2).received == 0
            no_crash(s, c)


@pytest.mark.netns
@pytest.mark.vtund
def test_first_contact_with_vtund_still_works_and_warns(statdir: Path) -> None:
    """An unchanged vtund.conf on a real vtund: the vt client connects, says what the
    legacy handshake costs, and remembers nothing (the server never spoke secure mode)."""
    requires_vtund()
    with two_hosts() as p:
        ta, _ = add_devices(p, "tun")
        with VtundServer(p.a, server_conf(encrypt=None)), \
                VtClient(p.b, _client_conf(statdir), "t1", p.a_addr) as c:
            wait_ping(p.b, ta, timeout=15)
            c.wait_log(LEGACY)
            assert PASSWD not in c.log()
            assert not (statdir / trust.SUBDIR).exists()
            no_crash(c)


@pytest.mark.netns
def test_sslauth_no_is_logged_on_both_ends(statdir: Path) -> None:
    """``sslauth no``: each end says, once per session, that a recording gives the
    password away."""
    with two_hosts() as p:
        ta, _ = add_devices(p, "tun")
        sslauth = "  sslauth no;\n"
        with VtServer(p.a, server_conf(encrypt=None, extra=sslauth)) as s, \
                VtClient(p.b, _client_conf(statdir, sslauth), "t1", p.a_addr) as c:
            wait_ping(p.b, ta, timeout=15)
            for peer in (s, c):
                peer.wait_log(r"sslauth no: the response is the challenge XOR the password")
                peer.wait_log(LEGACY)
                assert PASSWD not in peer.log()
            no_crash(s, c)


def test_record_names_stay_one_component(statdir: Path) -> None:
    path = trust.record_path(str(statdir), "h", "../../etc/x", 5000)
    assert path.parent == statdir / trust.SUBDIR and "/" not in path.name


def test_planted_record_symlink_is_refused(statdir: Path) -> None:
    """A symlink where the record should be (or a directory others may write) is never
    followed: the client refuses to connect rather than guess."""
    assert trust.remember(str(statdir), "h", "10.0.0.1", 5000, 0.0)
    assert trust.is_pinned(str(statdir), "h", "10.0.0.1", 5000)
    link = trust.record_path(str(statdir), "h", "10.0.0.2", 5000)
    link.symlink_to("/etc/hostname")
    with pytest.raises(fsguard.UnsafePath, match="symlink"):
        trust.is_pinned(str(statdir), "h", "10.0.0.2", 5000)
    assert not trust.remember(str(statdir), "h", "10.0.0.2", 5000, 0.0)
    link.parent.chmod(0o777)
    with pytest.raises(fsguard.UnsafePath, match="writable by group or others"):
        trust.is_pinned(str(statdir), "h", "10.0.0.1", 5000)
