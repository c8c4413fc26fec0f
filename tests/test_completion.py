"""Shell completion (click's own): ``vt run HOST`` completes the host sections of the -f
file, through click's environment protocol and through a real bash."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from behaviour import conf

BIN = Path(sys.executable).parent


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "vt.conf"
    path.write_text(conf("office", extra_hosts='home {\n  passwd "Vt-test-pw1";\n}\n'
                                               'lab2 {\n  passwd "Vt-test-pw1";\n}\n'))
    return path


def _complete(words: str, cword: int) -> list[str]:
    env = {**os.environ, "_VT_COMPLETE": "bash_complete", "COMP_WORDS": words,
           "COMP_CWORD": str(cword)}
    res = subprocess.run([BIN / "vt"], env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    return [line for line in res.stdout.splitlines() if line]


def test_run_completes_the_config_host_names(cfg: Path) -> None:
    assert _complete(f"vt run -f {cfg} ", 4) == ["plain,home", "plain,lab2", "plain,office"]
    assert _complete(f"vt run -f {cfg} of", 4) == ["plain,office"]


def test_an_unreadable_config_completes_nothing(tmp_path: Path) -> None:
    assert _complete(f"vt run -f {tmp_path / 'missing.conf'} ", 4) == []


def test_bash_completion_script_completes_hosts_in_a_real_bash(cfg: Path) -> None:
    script = ('eval "$(_VT_COMPLETE=bash_source vt)"; '
              f'COMP_WORDS=(vt run -f {cfg} l); COMP_CWORD=4; _vt_completion vt; '
              'printf "%s\\n" "${COMPREPLY[@]}"')
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    res = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], env=env,
                         capture_output=True, text=True, timeout=30)
    assert res.stdout.split() == ["lab2"], res.stdout + res.stderr
