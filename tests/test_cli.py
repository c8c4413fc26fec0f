"""The ``vt`` command line: help everywhere, vtund's option orders, exit codes,
``FILE:LINE:COL:`` errors, JSON logs, the plugin table.

The daemons themselves are replaced by recorders (monkeypatched ``Client``/``Server``):
these tests are about what the command line hands them.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import structlog
from click.testing import CliRunner

import vtcore.runtime.client as client_mod
import vtcore.runtime.master as master_mod
import vtcore.runtime.memory as memory_mod
import vtcore.runtime.server as server_mod
from vtcore import __version__
from vtcore.cli import cli
from vtcore.runtime.client import ClientOptions
from vtcore.runtime.server import ServerOptions

GOOD = """\
options {
  port 5000;
  timeout 3;
}
conn {
  passwd secret;
  type tun;
}
"""

BAD = """\
options { port abc; }
conn {
  passwd secret;
  type nope;
  bogus;
}
"""


@pytest.fixture(autouse=True)
def _keep_structlog_config(monkeypatch):
    """The CLI configures structlog for the process; give the next test its own back."""
    monkeypatch.delenv("VT_DISABLE_PLUGINS", raising=False)
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture
def good(tmp_path) -> Path:
    path = tmp_path / "cli.conf"
    path.write_text(GOOD)
    return path


@pytest.fixture
def bad(tmp_path) -> Path:
    path = tmp_path / "bad.conf"
    path.write_text(BAD)
    return path


def invoke(*args: object):
    res = CliRunner().invoke(cli, [str(a) for a in args], prog_name="vt")
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res


# ------------------------------------------------------------------ help and version


@pytest.mark.parametrize(
    "args, expect",
    [
        ([], ["Usage: vt [OPTIONS] COMMAND", "serve", "run", "plugins", "config",
              "--log-format", "--version"]),
        (["serve"], ["Usage: vt serve [OPTIONS]", "-f FILE", "-P", "-L ADDR", "-n", "-i"]),
        (["run"], ["Usage: vt run [OPTIONS] HOST SERVER", "-f FILE", "-p", "-P", "-n"]),
        (["plugins"], ["Usage: vt plugins [OPTIONS] COMMAND", "list"]),
        (["plugins", "list"], ["Usage: vt plugins list [OPTIONS]", "--json"]),
        (["config"], ["Usage: vt config [OPTIONS] COMMAND", "check"]),
        (["config", "check"], ["Usage: vt config check [OPTIONS]", "-f FILE",
                               "/etc/vtund.conf"]),
    ],
)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_of_every_command(args, expect, flag):
    res = invoke(*args, flag)
    assert res.exit_code == 0, res.output
    for text in expect:
        assert text in res.output, (text, res.output)


def test_version():
    for flag in ("--version", "-V"):
        res = invoke(flag)
        assert (res.exit_code, res.output) == (0, f"vt, version {__version__}\n")


def test_python_m_vtcore_is_vt():
    res = subprocess.run([sys.executable, "-m", "vtcore", "--help"], capture_output=True,
                         text=True, timeout=60, check=False)
    assert res.returncode == 0 and "Usage: vt [OPTIONS] COMMAND" in res.stdout


def test_unknown_command_and_option_are_usage_errors():
    res = invoke("frobnicate")
    assert res.exit_code == 2 and "No such command 'frobnicate'" in res.output
    res = invoke("run", "conn", "127.0.0.1", "-Z")
    assert res.exit_code == 2 and "No such option" in res.output and "-Z" in res.output
    res = invoke("run", "conn")
    assert res.exit_code == 2 and "Missing argument 'SERVER'" in res.output


# ------------------------------------------------------------------ run: vtund orders


class RecordingClient:
    calls: list[dict] = []

    def __init__(self, config, host_name, server, plugins, overrides=None):
        RecordingClient.calls.append({"host": host_name, "server": server,
                                      "opts": overrides, "config": config})

    async def run(self) -> int:
        structlog.get_logger("vt.client").info("recorded run", host="conn", passwd="secret")
        return 0


@pytest.fixture
def client_calls(monkeypatch) -> list[dict]:
    RecordingClient.calls = []
    monkeypatch.setattr(client_mod, "Client", RecordingClient)
    monkeypatch.setattr(master_mod, "resolve_workers", lambda config, plugins: 0)
    return RecordingClient.calls


@pytest.mark.parametrize(
    "argv, opts",
    [
        # vtund's usual shape: options after the positionals.
        (["conn", "127.0.0.1", "-n", "-f", "{cfg}"], ClientOptions()),
        (["-n", "-f", "{cfg}", "conn", "127.0.0.1"], ClientOptions()),
        (["-f", "{cfg}", "conn", "-n", "127.0.0.1", "-p", "-P", "5001", "-t", "9", "-6"],
         ClientOptions(port=5001, timeout=9, persist=True, ipv6=True)),
        (["conn", "127.0.0.1", "-4", "-nf", "{cfg}", "-P5002"],
         ClientOptions(port=5002, ipv6=False)),
    ],
)
def test_run_accepts_vtund_argument_orders(good, client_calls, argv, opts):
    res = invoke("run", *[a.replace("{cfg}", str(good)) for a in argv])
    assert res.exit_code == 0, res.output
    (call,) = client_calls
    assert (call["host"], call["server"], call["opts"]) == ("conn", "127.0.0.1", opts)
    assert list(call["config"].hosts) == ["conn"]


def test_run_unknown_host_is_a_clear_error(good, client_calls):
    res = invoke("run", "nosuch", "127.0.0.1", "-n", "-f", good)
    assert res.exit_code == 1
    assert f"vt: {good}: no host 'nosuch' defined" in res.output
    assert client_calls == []


def test_run_with_broken_config_exits_2_with_positions(bad, client_calls):
    res = invoke("run", "conn", "127.0.0.1", "-n", "-f", bad)
    assert res.exit_code == 2
    assert re.search(rf"{re.escape(str(bad))}:1:\d+: ", res.output)
    assert client_calls == []


# ------------------------------------------------------------------ serve


class RecordingServer:
    calls: list[dict] = []
    listen_error: OSError | None = None

    def __init__(self, config_path, config, plugins, overrides):
        RecordingServer.calls.append({"path": config_path, "opts": overrides, "served": False})
        self.listener = None

    def make_listener(self):
        if RecordingServer.listen_error is not None:
            raise RecordingServer.listen_error
        return "listener"

    async def serve(self) -> None:
        RecordingServer.calls[-1]["served"] = True


@pytest.fixture
def server_calls(monkeypatch) -> list[dict]:
    RecordingServer.calls = []
    RecordingServer.listen_error = None
    monkeypatch.setattr(server_mod, "Server", RecordingServer)
    # One process: these tests are about the command line, not the worker split.
    monkeypatch.setattr(master_mod, "resolve_workers", lambda config, plugins: 0)

    async def fake_inetd(config_path, config, plugins, overrides):
        RecordingServer.calls.append({"path": config_path, "opts": overrides, "inetd": True})

    monkeypatch.setattr(server_mod, "serve_inetd", fake_inetd)
    return RecordingServer.calls


def test_serve_options(good, server_calls):
    res = invoke("serve", "-s", "-n", "-f", good, "-P", "5001", "-L", "127.0.0.1", "-t", "7",
                 "-6")
    assert res.exit_code == 0, res.output
    (call,) = server_calls
    assert call["path"] == str(good) and call["served"]
    assert call["opts"] == ServerOptions(port=5001, bind="127.0.0.1", timeout=7, ipv6=True)


def test_serve_inetd_and_listen_error(good, server_calls):
    assert invoke("serve", "-i", "-f", good).exit_code == 0
    assert server_calls[-1].get("inetd") is True
    RecordingServer.listen_error = OSError(98, "Address already in use")
    res = invoke("serve", "-n", "-f", good)
    assert res.exit_code == 1
    assert "vt: cannot listen: Address already in use" in res.output


def test_daemons_tune_the_allocator(good, client_calls, server_calls, monkeypatch):
    """``run``, ``serve`` and ``serve -i`` carry traffic: each sets the allocator up for it
    (what that does is tests/test_memory.py's business)."""
    tuned: list[str] = []
    monkeypatch.setattr(memory_mod, "tune_allocator", lambda: tuned.append("x") or True)
    assert invoke("run", "conn", "127.0.0.1", "-n", "-f", good).exit_code == 0
    assert invoke("serve", "-n", "-f", good).exit_code == 0
    assert invoke("serve", "-i", "-f", good).exit_code == 0
    assert len(tuned) == 3
    assert invoke("config", "check", "-f", good).exit_code == 0
    assert len(tuned) == 3
    # A worker carries the traffic of a split daemon: the same, before it drops root.
    import vtcore.runtime.worker as worker_mod

    order: list[str] = []
    monkeypatch.setattr(memory_mod, "tune_allocator", lambda: order.append("tuned") or True)
    monkeypatch.setattr(worker_mod, "drop_privileges", lambda *a: order.append("dropped"))

    async def no_worker(fd, plugins) -> int:
        return 0

    monkeypatch.setattr(worker_mod, "run_worker", no_worker)
    res = invoke("worker", "--fd", 99, "--master", 1, "--uid", 65534, "--gid", 65534)
    assert res.exit_code == 0, res.output
    assert order == ["tuned", "dropped"]


# ------------------------------------------------------------------ config check


def test_config_check_ok(good):
    """A legacy host is fine, with one warning (tests/test_config_security.py has them all)."""
    good.chmod(0o600)
    res = invoke("config", "check", "-f", good)
    assert res.exit_code == 0
    warning, ok = res.output.splitlines()
    assert warning.startswith(f"{good}:6:3: host 'conn' has no secure word") and \
        warning.endswith("(warning)")
    assert ok == f"{good}: ok (1 host)"


def test_config_check_reports_every_error_with_position(bad):
    res = invoke("config", "check", "-f", bad)
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln]
    assert len(lines) >= 3, res.output  # port, type, bogus: all of them, not just the first
    for ln in lines:
        assert re.match(rf"{re.escape(str(bad))}:\d+:\d+: \S", ln), ln
    assert any(ln.startswith(f"{bad}:1:") and "port" in ln for ln in lines)
    assert any(ln.startswith(f"{bad}:4:") and "type" in ln for ln in lines)
    assert "Traceback" not in res.output


@pytest.mark.parametrize("text", ["", "options { port 5000; }\n", "default { type tun; }\n"])
def test_config_without_hosts_is_refused_by_check_and_serve(tmp_path, text):
    """Issue 16.3: vtund says "No hosts defined"; ``vt config check`` must not say "ok (0
    hosts)" and ``vt serve`` must not start serving nobody."""
    empty = tmp_path / "empty.conf"
    empty.write_text(text)
    res = invoke("config", "check", "-f", empty)
    assert (res.exit_code, res.output) == (1, f"{empty}:1:1: no hosts defined (the config has "
                                              "no host section)\n")
    res = invoke("serve", "-n", "-f", empty)
    assert res.exit_code == 2 and f"{empty}:1:1: no hosts defined" in res.output, res.output
    assert "Traceback" not in res.output


def test_config_check_missing_file(tmp_path):
    missing = tmp_path / "nope.conf"
    res = invoke("config", "check", "-f", missing)
    assert res.exit_code == 1
    assert res.output.startswith(f"{missing}:") and "Traceback" not in res.output


def test_config_check_missing_plugin_names_the_extra(good, monkeypatch):
    good.write_text(GOOD.replace("type tun;", "type tun;\n  compress lzo:3;"))
    assert invoke("config", "check", "-f", good).exit_code == 0
    monkeypatch.setenv("VT_DISABLE_PLUGINS", "lzo")
    res = invoke("config", "check", "-f", good)
    assert res.exit_code == 1
    assert re.search(rf"{re.escape(str(good))}:8:\d+: .*lzo", res.output), res.output


# ------------------------------------------------------------------ logging


def test_log_format_json_in_process(good, client_calls):
    res = invoke("--log-format", "json", "run", "conn", "127.0.0.1", "-n", "-f", good)
    assert res.exit_code == 0, res.output
    records = [json.loads(ln) for ln in res.output.splitlines() if ln.startswith("{")]
    (rec,) = [r for r in records if r["event"] == "recorded run"]
    assert rec["level"] == "info" and rec["host"] == "conn" and "timestamp" in rec
    assert rec["passwd"] == "[redacted]" and "secret" not in res.output


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Writes:
    """A text stream that keeps each write() call apart."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


@pytest.mark.parametrize("fmt", ["json", "console", "journal"])
def test_each_log_line_is_one_write(fmt: str) -> None:
    """Processes that share stderr (a master and its workers) must each write a whole line
    at once: print()'s separate newline let two JSON records share a line in CI."""
    from vtcore import log

    stream = _Writes()
    try:
        log.configure(fmt, stream=stream)
        log.structlog.get_logger("vt").info("one event", detail="x" * 300)
        log.structlog.get_logger("vt").warning("another")
    finally:
        log.configure("auto")
    assert len(stream.calls) == 2, stream.calls
    assert all(c.endswith("\n") and c.count("\n") == 1 for c in stream.calls), stream.calls


def test_log_format_json_real_client_failure(good):
    """The real client, a refused loopback connection: one JSON line per log event."""
    res = subprocess.run(
        [sys.executable, "-m", "vtcore", "--log-format", "json", "run", "conn", "127.0.0.1",
         "-n", "-P", str(closed_port()), "-f", str(good)],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert res.returncode != 0
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines, res.stderr
    records = [json.loads(ln) for ln in lines]  # every line is JSON
    assert any(r.get("level") == "error" and r.get("host") == "conn" for r in records)


# ------------------------------------------------------------------ plugins list


def test_plugins_list_table_and_json():
    res = invoke("plugins", "list")
    assert res.exit_code == 0
    lines = res.output.splitlines()
    assert lines[0].split() == ["NAME", "DISTRIBUTION", "VERSION", "KIND", "STATUS", "PROVIDES"]
    # Columns are aligned: every row's DISTRIBUTION starts where the header's does.
    col = lines[0].index("DISTRIBUTION")
    for ln in lines[1:]:
        assert ln[col - 2:col] == "  " and ln[col] != " ", ln
    names = [ln.split()[0] for ln in lines[1:]]
    assert {"transports", "devices", "zlib", "lzo", "crypto", "shaper"} <= set(names)

    data = json.loads(invoke("plugins", "list", "--json").output)
    assert all(set(p) == {"name", "distribution", "version", "builtin", "kind", "provides",
                          "status", "error"} for p in data)
    assert [p["name"] for p in data] == names
    lzo = next(p for p in data if p["name"] == "lzo")
    assert lzo["provides"] == ["compress lzo:1-9"] and lzo["kind"] == "frame module"


def test_config_check_one_pass_with_suggestions(tmp_path):
    """Issue 17.8: every error in one run, each typo with its "did you mean", secure-mode
    words among the valid ciphers, and ``speed`` explained in vtund's order (in:out)."""
    conf = tmp_path / "typos.conf"
    conf.write_text(
        "options { port 5000; tmeout 3; }\n"
        "h1 {\n  passwd abc;\n  typ tun;\n  proto tcpp;\n  encrypt aed;\n"
        "  multi yess;\n  nat_hack srv;\n  speed fast;\n}\n"
    )
    res = invoke("config", "check", "-f", conf)
    assert res.exit_code == 1
    lines = res.output.splitlines()
    expected = {
        1: "unknown keyword 'tmeout' in the options section; did you mean 'timeout'?",
        4: "unknown keyword 'typ' in a session section; did you mean 'type'?",
        5: "did you mean 'tcp'?",
        6: "did you mean 'aead'?",
        7: "got 'yess'; did you mean 'yes'?",
        8: "got 'srv'; did you mean 'server'?",
        9: "'speed' takes kbit/s as N or in:out (in: to the client, out: from it)",
    }
    for line_no, text in expected.items():
        assert any(ln.startswith(f"{conf}:{line_no}:") and text in ln for ln in lines), \
            (line_no, res.output)
    cipher = next(ln for ln in lines if ln.startswith(f"{conf}:6:"))
    for word in ("aead", "chacha20poly1305", "aes256gcm"):
        assert f" {word}," in cipher or f" {word};" in cipher, cipher
