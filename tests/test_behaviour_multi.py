"""``multi``: a second client for the same host is refused (no), replaces the first
(killold) or is served beside it (yes, the default: no ``multi`` line at all).  Locks live in ``lockdir``.

tty sessions keep addressing out of the way: the server's ``up`` program writes a marker
into the pty, each client's ``up`` program writes what arrives to its own file, so a
served session is one whose file gets the marker.
"""

from __future__ import annotations

import shutil

import pytest
from behaviour import HOST, assert_no_secret, conf, tmpdir, wait_for
from netns import two_hosts
from peers import VtClient, VtServer

MARK = "served-by-vt"


def _read(path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


@pytest.mark.netns
@pytest.mark.parametrize("multi", ["no", "killold", None])
def test_second_client_for_same_host(multi: str | None) -> None:
    d = tmpdir()
    lockdir = d / "locks"
    try:
        settings = {"multi": multi} if multi else {}
        server_up = f"program /bin/sh \"-c 'echo {MARK}; exec sleep 60'\""
        scfg = conf(HOST, vt_options={"lockdir": lockdir}, type="tty", proto="tcp",
                    up=[server_up], **settings)
        files = [d / "c1", d / "c2"]
        ccfgs = [conf(HOST, up=[f"program /bin/sh \"-c 'exec cat > {f}'\""]) for f in files]
        with two_hosts() as p, VtServer(p.a, scfg) as s:
            with VtClient(p.b, ccfgs[0], HOST, p.a_addr) as c1:
                wait_for(lambda: MARK in _read(files[0]), 10, "first client served")
                lock = lockdir / HOST
                if multi in ("no", "killold"):
                    assert lock.read_text() == f"{s.proc.pid}\n"
                else:
                    assert not lock.exists(), "multi yes takes no lock"
                # multi no: the second client is refused within a fraction of a second.
                with VtClient(p.b, ccfgs[1], HOST, p.a_addr, expect_exit=multi == "no") as c2:
                    if multi == "no":
                        c2.wait_log(r"authentication failed for host", timeout=10)
                        wait_for(lambda: not c2.alive(), 5, "refused client to exit")
                        assert c2.proc.returncode != 0
                        assert MARK not in _read(files[1])
                        assert c1.alive()
                        s.wait_log(r"denied: host already connected", timeout=5)
                    elif multi == "killold":
                        wait_for(lambda: MARK in _read(files[1]), 10, "new client served")
                        c1.wait_log(r"session closed", timeout=10)
                        wait_for(lambda: not c1.alive(), 5, "old client to exit")
                        assert c2.alive()
                        assert lock.read_text() == f"{s.proc.pid}\n"
                    else:
                        wait_for(lambda: MARK in _read(files[1]), 10, "second client served")
                        assert c1.alive() and c2.alive()
                    assert_no_secret(s, c1, c2)
            # Every session gone: no lock left behind.
            wait_for(lambda: not (lockdir / HOST).exists(), 10, "lock removed")
            assert s.alive()
    finally:
        shutil.rmtree(d, ignore_errors=True)
