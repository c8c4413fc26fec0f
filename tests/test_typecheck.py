"""The plugin contract is typed, and the code written on it type-checks: ``mypy --strict``
on vt-api, plain mypy (configured in pyproject.toml) on vtcore, vt-devices and the bundled
plugins.  A Protocol the runtime relies on that a plugin does not satisfy fails here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = sorted(str(p) for p in (ROOT / "plugins").glob("vt_*/vt_*"))


def mypy(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"),
         "--config-file", str(ROOT / "pyproject.toml"), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )


@pytest.mark.parametrize("args", [
    ("--strict", "api/vt_api"),
    ("vtcore", "devices/vt_devices", *PLUGINS),
], ids=["contract-strict", "vtcore-devices-plugins"])
def test_mypy_is_clean(tmp_path, args):
    res = mypy(tmp_path, *args)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.startswith("Success: no issues found")
