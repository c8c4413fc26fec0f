"""``make dist`` as a packager runs it (issue 17.10): a wheel and an sdist of every
distribution; vtcore's carry the man pages and the systemd units as data files; the wheels
install into a clean venv and with pipx, offline (the built wheels plus the machine's pip
configuration for the dependencies).  One build serves every check.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
from test_extras import PY, ROOT, run

pytestmark = pytest.mark.slow

BUDGET = 240  # seconds for the whole module: a hung resolver fails it instead of blocking CI
DISTS = ["vtcore", "vt_api", "vt_devices", "vt_crypto", "vt_lzo", "vt_shaper", "vt_zlib"]
PAGES = sorted(str(p.relative_to(ROOT / "man")) for p in (ROOT / "man").glob("man*/*"))
UNITS = sorted(p.name for p in (ROOT / "systemd").iterdir())
PLUGINS = {"transports": "vtcore", "devices": "vt-devices", "zlib": "vt-zlib", "lzo": "vt-lzo",
           "crypto": "vt-crypto", "shaper": "vt-shaper"}


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """``make dist`` once, into a fresh directory."""
    out = tmp_path_factory.mktemp("dist")
    run(["make", "-C", str(ROOT), "dist", f"PY={PY}", f"DIST={out}"], timeout=BUDGET / 2)
    return out


def _left(started: float) -> float:
    return BUDGET - (time.monotonic() - started)


def test_make_dist_builds_every_distribution_with_its_data_files(dist: Path) -> None:
    wheels = sorted(w.name.split("-")[0] for w in dist.glob("*.whl"))
    sdists = sorted(s.name.rsplit("-", 1)[0] for s in dist.glob("*.tar.gz"))
    assert wheels == sorted(DISTS) and sdists == sorted(DISTS), (wheels, sdists)
    (wheel,) = dist.glob("vtcore-*.whl")
    data = "vtcore-0.1.0.data/data/"
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = ({f"{data}share/man/{p}" for p in PAGES}
               | {f"{data}lib/systemd/system/{u}" for u in UNITS}) - names
    assert not missing, missing
    (sdist,) = dist.glob("vtcore-*.tar.gz")
    with tarfile.open(sdist) as tar:
        members = {m.split("/", 1)[1] for m in tar.getnames() if "/" in m}
    assert {f"man/{p}" for p in PAGES} | {f"systemd/{u}" for u in UNITS} <= members


def _check_installed(prefix: Path, vt: Path, started: float) -> None:
    """``vt`` runs, sees every plugin, and the pages and units are under ``prefix``."""
    version = run([str(vt), "--version"], timeout=_left(started)).stdout
    assert version.strip() == "vt, version 0.1.0"
    listed = json.loads(run([str(vt), "plugins", "list", "--json"],
                            timeout=_left(started)).stdout)
    assert {p["name"]: (p["distribution"], p["status"]) for p in listed} == {
        name: (dist, "loaded") for name, dist in PLUGINS.items()}, listed
    for page in PAGES:
        assert (prefix / "share" / "man" / page).read_bytes() == (ROOT / "man" / page).read_bytes()
    for unit in UNITS:
        installed = prefix / "lib" / "systemd" / "system" / unit
        assert installed.read_bytes() == (ROOT / "systemd" / unit).read_bytes(), unit


def test_the_wheels_install_into_a_clean_venv(dist: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    venv = tmp_path / "venv"
    run([PY, "-m", "venv", "--without-pip", str(venv)], timeout=_left(started))
    run([PY, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
         "--disable-pip-version-check", "--find-links", str(dist), "vtcore[all]==0.1.0"],
        timeout=_left(started))
    _check_installed(venv, venv / "bin" / "vt", started)


def test_pipx_installs_vt_with_its_man_pages(dist: Path, tmp_path: Path, monkeypatch) -> None:
    """pipx (from the dev extra, or installed into a temp venv) puts ``vt`` on its bin dir
    and links the man pages into its man dir."""
    started = time.monotonic()
    pipx = [PY, "-m", "pipx"]
    if importlib.util.find_spec("pipx") is None:
        tools = tmp_path / "tools"
        run([PY, "-m", "venv", str(tools)], timeout=_left(started))
        run([str(tools / "bin" / "python"), "-m", "pip", "install", "-q", "pipx"],
            timeout=_left(started))
        pipx = [str(tools / "bin" / "python"), "-m", "pipx"]
    for var, sub in (("PIPX_HOME", "home"), ("PIPX_BIN_DIR", "bin"), ("PIPX_MAN_DIR", "man")):
        monkeypatch.setenv(var, str(tmp_path / "pipx" / sub))
    (wheel,) = dist.glob("vtcore-*.whl")
    run([*pipx, "install", "--pip-args", f"--find-links {dist} --disable-pip-version-check",
         f"{wheel}[all]"], timeout=_left(started))
    vt = tmp_path / "pipx" / "bin" / "vt"
    _check_installed(tmp_path / "pipx" / "home" / "venvs" / "vtcore", vt, started)
    for page in PAGES:
        assert (tmp_path / "pipx" / "man" / page).is_file(), page
    res = subprocess.run(["man", "--warnings", "-l", str(tmp_path / "pipx" / "man" / PAGES[0])],
                         capture_output=True, text=True, timeout=30,
                         env={**os.environ, "MANPAGER": "cat", "MANWIDTH": "80"})
    assert res.returncode == 0 and "vt" in res.stdout, res.stderr
