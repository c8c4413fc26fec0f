"""``make demo`` (``python -m vtcore.demo``), the README's main job, as a user runs it: a
tunnel between two namespaces it makes, traffic through it, status and counters shown,
everything torn down."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from netns import list_netns


@pytest.mark.netns
def test_demo_moves_traffic_shows_stats_and_cleans_up(tmp_path) -> None:
    env = {**os.environ, "VT_RUN_DIR": str(tmp_path / "run"), "TMPDIR": str(tmp_path)}
    before = set(list_netns())
    res = subprocess.run([sys.executable, "-m", "vtcore.demo"], capture_output=True,
                         text=True, timeout=120, env=env)  # fmt: skip
    out = res.stdout
    assert res.returncode == 0, out[-3000:] + res.stderr[-2000:]
    assert "Traceback" not in out + res.stderr
    assert "5 packets transmitted, 5 received" in out
    assert re.search(r"4194304 bytes in [\d.]+ s, sha256 matches", out)
    # vt status answered for both daemons, each with its session.
    assert re.search(r"pid \d+: server on \S+, (\d+ workers? as \S+, )?1 session\(s\)", out)
    assert re.search(r"pid \d+: client demo -> \S+, (\d+ workers? as \S+, )?1 session\(s\)", out)
    # Both logs end with the session's counters.
    assert len(re.findall(r"session closed .*byte_in=\d+", out)) == 2
    assert out.rstrip().endswith("== torn down")
    assert not [n for n in list_netns() if n.startswith("vtdemo-") and n not in before]
    assert not list(tmp_path.glob("vtdemo-*"))  # its configs (with the password) are gone
