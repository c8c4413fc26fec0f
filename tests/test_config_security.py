"""``vt config check`` and the daemons' start-up log warn about what a config gives away
(issue 15, findings 2, 8, 9): passwords in a file others may read, hosts authenticated
the vtund way, ``sslauth no``, compression before secure mode (VORACLE)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

RISKY = """\
options { port 5000; timeout 3; }
legacy { passwd Pw-one1; type tun; }
weak {
  passwd Pw-two2;
  type tun;
  sslauth no;
}
sec {
  passwd Pw-three3;
  type tun;
  encrypt aead;
  compress zlib:9;
}
"""

CLEAN = """\
options { port 5000; }
sec {
  passwd Pw-three3;
  type tun;
  encrypt aead;
}
"""


def vt(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vtcore", *map(str, args)],
                          capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture
def risky(tmp_path) -> Path:
    path = tmp_path / "risky.conf"
    path.write_text(RISKY)
    path.chmod(0o644)
    return path


def test_config_check_warns_where_each_risk_is(risky: Path) -> None:
    res = vt("config", "check", "-f", risky)
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"{risky}: ok (3 hosts)\n"
    got = [ln.removesuffix(" (warning)") for ln in res.stderr.splitlines()]
    assert all(ln.startswith(f"{risky}:") for ln in got), got
    where = {ln.split(": ", 1)[0].removeprefix(f"{risky}:"): ln.split(": ", 1)[1]
             for ln in got if "readable" not in ln}
    assert got[0] == (f"{risky}:2:10: this file holds passwords and is readable by group or "
                      "others (mode 0644); chmod 600 it")
    assert where["2:10"].startswith("host 'legacy' has no secure word: it authenticates the "
                                    "vtund way (a recorded session allows offline password")
    assert where["4:3"].startswith("host 'weak' has no secure word")
    assert where["6:3"] == ("'sslauth no': the response is the challenge XOR the password; "
                            "one recorded session gives the password away")
    assert "VORACLE" in where["12:3"] and "compress no" in where["12:3"]
    assert len(got) == 5, got
    assert "Pw-" not in res.stderr


def test_clean_secure_config_has_no_warning(tmp_path: Path) -> None:
    path = tmp_path / "clean.conf"
    path.write_text(CLEAN)
    path.chmod(0o600)
    res = vt("config", "check", "-f", path)
    assert (res.returncode, res.stdout, res.stderr) == (0, f"{path}: ok (1 host)\n", "")
    path.chmod(0o640)
    res = vt("config", "check", "-f", path)
    assert "readable by group or others (mode 0640)" in res.stderr


def test_client_logs_the_warnings_at_start(risky: Path, tmp_path: Path) -> None:
    """The daemon's own log says it too (a refused loopback connection ends the run)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    risky.write_text(RISKY.replace("timeout 3;", f"timeout 3; statdir {tmp_path}/stat;"))
    res = vt("run", "weak", "127.0.0.1", "-n", "-P", port, "-f", risky)
    assert res.returncode != 0
    assert "readable by group or others" in res.stderr
    assert "'sslauth no': the response is the challenge XOR the password" in res.stderr
    assert "Pw-" not in res.stderr
