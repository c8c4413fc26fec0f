"""Install an example plugin as users get it: its wheel built from a copy outside the
workspace, installed alone into its own site directory (``PYTHONPATH``), with only those
of its dependencies that vt's environment lacks; ``vt`` then finds it through its entry
point alone.  Used by test_plugins_example.py (vt-pcap) and test_plugins_zstd.py."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

PY = sys.executable
TIMEOUT = 240
PIP = [PY, "-m", "pip", "--disable-pip-version-check"]


def run(args: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=timeout, check=False)


def missing_dependencies(source: Path) -> list[str]:
    """The requirements of ``source``'s pyproject.toml that this environment lacks."""
    project = tomllib.loads((source / "pyproject.toml").read_text())["project"]
    missing = []
    for req in project.get("dependencies", []):
        name = re.match(r"[A-Za-z0-9._-]+", req).group(0)
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(req)
    return missing


def install_example(source: Path, base: Path) -> Path:
    """Build ``source``'s wheel in ``base``, install it (and what vt lacks of its
    dependencies) into ``base/site``; return that directory."""
    src = base / "src"
    shutil.copytree(source, src, ignore=shutil.ignore_patterns(
        "__pycache__", "*.egg-info", ".pytest_cache", "build"))
    wheels = base / "wheels"
    built = run([*PIP, "wheel", "--no-deps", "-w", str(wheels), str(src)], timeout=TIMEOUT)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = wheels.glob("*.whl")
    target = base / "site"
    inst = run([*PIP, "install", "--no-deps", "--target", str(target), str(wheel)],
               timeout=TIMEOUT)
    assert inst.returncode == 0, inst.stdout + inst.stderr
    missing = missing_dependencies(source)
    if missing:  # with their own dependencies (wsproto needs h11)
        inst = run([*PIP, "install", "--target", str(target), *missing], timeout=TIMEOUT)
        assert inst.returncode == 0, inst.stdout + inst.stderr
    return target


def env_with(site: Path | None) -> dict[str, str]:
    """This environment without plugin switches, with ``site`` on the path if given."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("VT_DISABLE_PLUGINS", "VT_TRACE_HOOKS", "VT_TRACE_PLUGINS", "PYTHONPATH")}
    if site is not None:
        env["PYTHONPATH"] = str(site)
    return env


def vt(args: list[str], site: Path | None, **kw) -> subprocess.CompletedProcess[str]:
    return run([PY, "-m", "vtcore", *args], env=env_with(site), **kw)


def run_example_tests(source: Path, site: Path, package: str, tmp: Path) -> str:
    """The example's own tests, run against the installed wheel; their summary line."""
    tests = tmp / "tests"
    shutil.copytree(source / "tests", tests, ignore=shutil.ignore_patterns("__pycache__"))
    where = run([PY, "-c", f"import {package}; print({package}.__file__)"], env=env_with(site),
                cwd=tmp)
    assert where.stdout.startswith(str(site)), where.stdout + where.stderr
    res = run([PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp),
               str(tests)], env=env_with(site), cwd=tmp, timeout=120)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    summary = re.search(r"\d+ passed.*", res.stdout)
    assert summary, res.stdout[-2000:]
    return summary.group(0)


def with_site(cls, site: Path):
    """A tests/peers.py peer class whose ``vt`` sees the plugins installed in ``site``."""

    class Peer(cls):
        def argv(self) -> list[object]:
            return ["env", f"PYTHONPATH={site}", *super().argv()]

    return Peer


def carries_both_ways(p, ta: str, tb: str, server, client) -> list[dict]:
    """A file from the server's side and iperf3 both ways through a live tunnel between
    ``p.b`` (client) and ``p.a``; both peers still up.  Returns iperf3's results."""
    from netns import iperf3, transfer_file

    assert transfer_file(p.a, p.b, tb, nbytes=256 << 10)
    results = []
    for reverse in (False, True):
        res = iperf3(p.a, p.b, ta, seconds=2, reverse=reverse)
        assert res["bytes"] > 1 << 20, res
        results.append(res)
    assert client.alive() and server.alive()
    return results

