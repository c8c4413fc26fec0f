"""``options { metrics ADDR:PORT; }``: the Prometheus endpoint, scraped over real HTTP from
inside the namespace while a live tunnel carries pings."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from behaviour import HOST, conf, wait_for
from netns import Netns, busy_loopback_port, ping, two_hosts, wait_ping
from peers import VtClient, VtServer
from prometheus_client.parser import text_string_to_metric_families

from vtcore.config import ConfigErrors, load_config

DASHBOARD = Path(__file__).resolve().parent.parent / "docs" / "grafana-vt.json"
SCRAPE = ("import sys, urllib.request; "
          "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())")


def scrape(ns: Netns, port: int) -> dict[tuple[str, tuple], float]:
    """``{(sample name, sorted labels): value}`` from http://127.0.0.1:PORT/metrics in ns."""
    text = ns.run(sys.executable, "-c", SCRAPE, f"http://127.0.0.1:{port}/metrics").stdout
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.mark.netns
def test_metrics_endpoint_reports_live_sessions_hosts_and_handshakes() -> None:
    with two_hosts() as p:
        ta, _tb = p.add_tunnel_devices()
        srv_conf = conf(HOST, type="tun", proto="tcp", device="tsrv",
                        vt_options={"metrics": "127.0.0.1:9100"})
        cli_conf = conf(HOST, device="tcli", vt_options={"metrics": "127.0.0.1:9101"})
        with VtServer(p.a, srv_conf) as srv:
            with VtClient(p.b, cli_conf, HOST, p.a_addr) as cli:
                wait_ping(p.b, ta, timeout=15)
                peer = srv.wait_log(r"session opened.*peer=(\S+)").group(1)
                ids = {"host": HOST, "peer": peer}
                before = scrape(p.a, 9100)
                assert value(before, "vt_sessions_up", host=HOST) == 1
                assert value(before, "vt_handshakes_total", result="accepted") == 1
                assert ping(p.b, ta, count=10, interval=0.05).received == 10
                after = scrape(p.a, 9100)
                for name, direction in (("vt_session_device_bytes_total", "in"),
                                        ("vt_session_device_bytes_total", "out"),
                                        ("vt_session_frames_total", "in"),
                                        ("vt_host_link_bytes_total", "out")):
                    labels = ids if "session" in name else {"host": HOST}
                    grew = (value(after, name, direction=direction, **labels)
                            - value(before, name, direction=direction, **labels))
                    least = 10 if "frames" in name else 10 * 84  # 10 echo packets
                    assert grew >= least, (name, direction, grew)
                assert value(after, "vt_session_dropped_frames_total", reason="decode",
                             **ids) == 0
                assert value(after, "vt_session_rekeys_total", **ids) == 0
                for action in ("too_big", "fragmented"):  # nothing over the path MTU here
                    assert value(after, "vt_session_oversize_packets_total", action=action,
                                 **ids) == 0
                assert 0 <= value(after, "vt_session_last_frame_age_seconds", **ids) < 2
                client = scrape(p.b, 9101)
                assert value(client, "vt_reconnects_total", host=HOST) == 0
                assert value(client, "vt_handshakes_total", result="accepted") == 1
                assert value(client, "vt_session_frames_total", direction="out", host=HOST,
                             peer=p.a_addr) >= 10
                total = value(after, "vt_host_device_bytes_total", direction="in", host=HOST)
                # Every metric the Grafana example queries is one the endpoints export.
                wanted = set(re.findall(r"\bvt_[a-z_]+", DASHBOARD.read_text()))
                assert wanted and wanted <= {name for name, _ in (*after, *client)}
                cli.stop()
            # The session is gone; its host's totals stay (counters never go back).
            gone = wait_for(lambda: (s := scrape(p.a, 9100))
                            and value(s, "vt_sessions_up", host=HOST) == 0 and s, 10,
                            "session end in metrics")
            assert value(gone, "vt_host_device_bytes_total", direction="in", host=HOST) >= total
            assert not any(name.startswith("vt_session_device") for name, _ in gone)
            bad = conf(HOST, device="tcli", passwd="Wrong-pw-99")
            with VtClient(p.b, bad, HOST, p.a_addr, expect_exit=True) as denied:
                wait_for(lambda: denied.proc.poll() is not None, 15, "denied client exit")
            assert value(scrape(p.a, 9100), "vt_handshakes_total", result="denied") == 1


def test_metrics_keyword_takes_an_address_and_port(tmp_path: Path) -> None:
    cfg = tmp_path / "vt.conf"
    cfg.write_text(conf(HOST, vt_options={"metrics": "[::1]:9100"}))
    assert load_config(cfg).options.metrics == ("::1", 9100)
    cfg.write_text(conf(HOST))
    assert load_config(cfg).options.metrics is None
    cfg.write_text(conf(HOST, vt_options={"metrics": "9100"}))
    with pytest.raises(ConfigErrors, match=r"vt\.conf:2:\d+: 'metrics' takes ADDR:PORT"):
        load_config(cfg)


def test_metrics_address_in_use_fails_the_start_on_the_terminal(tmp_path: Path) -> None:
    with busy_loopback_port() as port:
        cfg = tmp_path / "vt.conf"
        cfg.write_text(conf(HOST, vt_options={"metrics": f"127.0.0.1:{port}",
                                              "lockdir": tmp_path, "statdir": tmp_path}))
        res = subprocess.run([sys.executable, "-m", "vtcore", "serve", "-n", "-f", cfg,
                              "-L", "127.0.0.1", "-P", "0"], capture_output=True, text=True,
                             timeout=30)
    assert res.returncode != 0
    assert f"cannot listen for metrics on 127.0.0.1:{port}" in res.stderr, res.stderr
