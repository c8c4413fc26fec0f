"""The workspace as users install it: every distribution built into a wheel, a fresh venv,
``vtcore[lzo]`` installed from that wheelhouse.  The extra must bring vt-lzo (and nothing
else optional), and the installed ``vt`` must see exactly that.

Slow (about a minute: builds and a resolver run) but part of CI.
"""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTIONS = [ROOT, ROOT / "api", ROOT / "devices", *sorted(p.parent for p in ROOT.glob("plugins/*/pyproject.toml"))]
PY = sys.executable
BUDGET = 300  # seconds for the whole test; a hung resolver fails it instead of blocking CI

pytestmark = pytest.mark.slow


def run(args: list[str], *, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "VT_DISABLE_PLUGINS", "VT_TRACE_HOOKS",
                        "VT_TRACE_PLUGINS")}
    res = subprocess.run(args, capture_output=True, text=True, env=env, timeout=max(timeout, 1),
                         check=False)
    assert res.returncode == 0, f"{args}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def test_install_lzo_extra_into_a_fresh_venv(tmp_path: Path) -> None:
    deadline = time.monotonic() + BUDGET

    def left() -> float:
        return deadline - time.monotonic()

    wheels = tmp_path / "wheelhouse"
    run([PY, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q",
         "-w", str(wheels), *map(str, DISTRIBUTIONS)], timeout=left())
    built = sorted(w.name.split("-")[0] for w in wheels.glob("*.whl"))
    assert built == sorted(["vtcore", "vt_api", "vt_devices", "vt_crypto", "vt_lzo", "vt_shaper",
                            "vt_zlib"]), built

    venv = tmp_path / "venv"
    run([PY, "-m", "venv", "--without-pip", str(venv)], timeout=left())
    vpy = venv / "bin" / "python"
    # The dev venv's pip installs into the new one (--python): no ensurepip, shared cache.
    run([PY, "-m", "pip", "--python", str(vpy), "install", "--disable-pip-version-check", "-q",
         "--find-links", str(wheels), "vtcore[lzo]==0.1.0"], timeout=left())

    listed = json.loads(run([str(venv / "bin" / "vt"), "plugins", "list", "--json"],
                            timeout=left()).stdout)
    status = {p["name"]: (p["distribution"], p["status"]) for p in listed}
    assert status == {
        "transports": ("vtcore", "loaded"),
        "devices": ("vt-devices", "loaded"),
        "lzo": ("vt-lzo", "loaded"),
    }, status
    version = run([str(venv / "bin" / "vt"), "--version"], timeout=left()).stdout
    assert version.strip() == "vt, version 0.1.0"

    # What got installed is the workspace's code, not a same-named project from an index.
    site = Path(run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                    timeout=left()).stdout.strip())
    for rel in ("vtcore/api.py", "vt_api/__init__.py", "vt_lzo/codec.py", "vt_devices/plugin.py"):
        src = {"vtcore": ROOT, "vt_api": ROOT / "api", "vt_lzo": ROOT / "plugins" / "vt_lzo",
               "vt_devices": ROOT / "devices"}[rel.split("/")[0]] / rel
        assert filecmp.cmp(site / rel, src, shallow=False), rel
    assert not (site / "vt_crypto").exists() and not (site / "vt_zlib").exists()
    # Each plugin's own import works with only the core and that plugin installed.
    run([str(vpy), "-c", "import vt_lzo.plugin, vt_devices.plugin"], timeout=left())


PLUGINS = ("vt_zlib", "vt_lzo", "vt_crypto", "vt_shaper")


def test_each_plugin_passes_its_tests_with_only_vtcore(tmp_path: Path) -> None:
    """Each plugin's own test suite, in a venv holding vtcore (with vt-devices) and that one
    plugin: an import of an undeclared sibling would fail here."""
    deadline = time.monotonic() + BUDGET

    def left() -> float:
        return deadline - time.monotonic()

    wheels = tmp_path / "wheelhouse"
    run([PY, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q",
         "-w", str(wheels), *map(str, DISTRIBUTIONS)], timeout=left())
    venv = tmp_path / "venv"
    run([PY, "-m", "venv", "--without-pip", str(venv)], timeout=left())
    vpy = venv / "bin" / "python"
    pip = [PY, "-m", "pip", "--python", str(vpy), "--disable-pip-version-check", "-q"]
    run([*pip, "install", "--find-links", str(wheels), "vtcore==0.1.0", "pytest", "hypothesis"],
        timeout=left())
    for name in PLUGINS:
        dist = name.replace("_", "-")
        run([*pip, "install", "--find-links", str(wheels), f"{dist}==0.1.0"], timeout=left())
        others = [p for p in PLUGINS if p != name]
        probe = "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) for m in %r))"
        run([str(vpy), "-c", probe % (others,)], timeout=left())
        # The plugin's tests from the source tree, importing the installed plugin.
        run([str(vpy), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", os.devnull,
             "--rootdir", str(tmp_path), str(ROOT / "plugins" / name / "tests")],
            timeout=left())
        run([*pip, "uninstall", "-y", dist], timeout=left())
