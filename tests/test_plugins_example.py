"""docs/example-plugin (vt-pcap) as a third party ships it: built into a wheel outside the
workspace, installed into a separate directory, found by ``vt`` only through its entry point.

Nothing in vtcore names vt-pcap; with the wheel off the path, vt must not know ``pcap``.
"""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path

import pytest
from plugin_dist import PY, env_with, install_example, run, run_example_tests, vt, with_site

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "example-plugin"

CONFIG = """\
options {{ port 5000; }}
mylink {{
  passwd secret;
  type tun;
  pcap "{pcap}";
}}
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """Build the example's wheel from a copy outside the workspace; install it alone."""
    target = install_example(EXAMPLE, tmp_path_factory.mktemp("vtpcap"))
    assert (target / "vt_pcap" / "plugin.py").is_file()
    return target


def pcap_bytes(packets: list[bytes]) -> bytes:
    data = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)
    for p in packets:
        data += struct.pack("<IIII", 1, 0, len(p), len(p)) + p
    return data


def test_vtcore_does_not_name_the_plugin() -> None:
    for path in (ROOT / "vtcore").rglob("*.py"):
        text = path.read_text().lower()
        assert "vt_pcap" not in text and "vt-pcap" not in text, path


def test_listed_loaded_and_providing_pcap(site: Path) -> None:
    res = vt(["plugins", "list", "--json"], site)
    assert res.returncode == 0, res.stderr
    listed = {p["name"]: p for p in json.loads(res.stdout)}
    p = listed["pcap"]
    assert (p["distribution"], p["version"], p["status"]) == ("vt-pcap", "0.1.0", "loaded")
    assert p["kind"] == "frame module" and p["builtin"] is False
    assert any(s.startswith("pcap") for s in p["provides"])
    assert listed["lzo"]["status"] == "loaded"  # the workspace plugins are unaffected

    without = {p["name"] for p in json.loads(vt(["plugins", "list", "--json"], None).stdout)}
    assert "pcap" not in without


def test_plugin_command(site: Path, tmp_path: Path) -> None:
    cap = tmp_path / "cap.pcap"
    cap.write_bytes(pcap_bytes([b"\x45" * 20, b"\x45" * 60, b"\x60" * 40]))
    res = vt(["pcap-info", str(cap)], site)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"{cap}: 3 packets, 120 bytes")
    assert "pcap-info" in vt(["--help"], site).stdout
    assert "pcap-info" not in vt(["--help"], None).stdout
    bad = vt(["pcap-info", str(tmp_path / "missing.pcap")], site)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "missing.pcap" in bad.stderr


def test_disable_env_turns_the_third_party_plugin_off(site: Path) -> None:
    env = env_with(site) | {"VT_DISABLE_PLUGINS": "pcap"}
    res = run([PY, "-m", "vtcore", "plugins", "list", "--json"], env=env)
    listed = {p["name"]: p for p in json.loads(res.stdout)}
    assert listed["pcap"]["status"] == "disabled" and listed["pcap"]["provides"] == []


def test_config_keyword_needs_the_plugin(site: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "vt.conf"
    cfg.write_text(CONFIG.format(pcap=tmp_path / "x.pcap"))
    without = vt(["config", "check", "-f", str(cfg)], None)
    assert without.returncode != 0
    assert re.search(rf"^{re.escape(str(cfg))}:5:3: .*'pcap'", without.stderr, re.M), without.stderr
    assert "Traceback" not in without.stderr

    with_plugin = vt(["config", "check", "-f", str(cfg)], site)
    assert with_plugin.returncode == 0, with_plugin.stderr
    assert "ok" in with_plugin.stdout


def test_example_tests_pass_against_the_installed_wheel(site: Path, tmp_path: Path) -> None:
    """The plugin's own tests, run with only vtcore and the installed wheel."""
    run_example_tests(EXAMPLE, site, "vt_pcap", tmp_path)


@pytest.mark.netns
def test_tunnel_capture_in_netns(site: Path, tmp_path: Path) -> None:
    """A real tunnel (zlib-compressed, so the wire differs from the packets) between two
    namespaces, both ends capturing: each file holds the plain ICMP packets of both ways."""
    import shutil
    import tempfile

    from netns import two_hosts, wait_ping
    from peers import VtClient, VtServer, vtund_conf

    def config(device: str, capture: Path, **extra: object) -> str:
        text = vtund_conf("pcapt", type="tun", device=device, **extra)
        return text.replace("pcapt {\n", f'pcapt {{\n  pcap "{capture}";\n', 1)

    # The captures are written where the packets are, in each end's unprivileged worker
    # (vt's split): into a directory the workers' user may write, as a deployment must.
    from vtcore.config.model import Options
    from vtcore.runtime.master import worker_account

    capdir = Path(tempfile.mkdtemp(prefix="vt-pcap-"))
    uid, gid, _ = worker_account(Options())  # the workers' default user
    os.chown(capdir, uid, gid)
    caps = {"server": capdir / "server.pcap", "client": capdir / "client.pcap"}
    try:
        with two_hosts() as p:
            ta, tb = p.add_tunnel_devices("tpsrv", "tpcli")
            scfg = config("tpsrv", caps["server"], compress="zlib:9", proto="tcp")
            ccfg = config("tpcli", caps["client"])
            with with_site(VtServer, site)(p.a, scfg), \
                    with_site(VtClient, site)(p.b, ccfg, "pcapt", p.a_addr):
                wait_ping(p.b, ta, timeout=15)
                p.b.run("ping", "-n", "-c", "4", "-i", "0.2", "-W", "2", "-p", "cafebabe",
                        ta, timeout=20)
        for side, cap in caps.items():
            data = cap.read_bytes()
            info = vt(["pcap-info", str(cap)], site)
            assert info.returncode == 0, info.stderr
            count = int(re.search(r": (\d+) packets", info.stdout).group(1))
            assert data[20:24] == struct.pack("<I", 101), side  # LINKTYPE_RAW
            # 4 echo requests and 4 replies with the pattern, both ways, uncompressed.
            assert data.count(bytes.fromhex("cafebabe") * 4) >= 8, side
            assert count >= 8, (side, count)
    finally:
        shutil.rmtree(capdir, ignore_errors=True)
