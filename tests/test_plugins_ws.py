"""docs/examples/vt-ws as a third party ships it: ``proto ws``, the tunnel inside a
WebSocket connection, on contract 1.1's ``TransportType.wrap`` (issue 14 item 6).

The client wraps right after its TCP connect; the server recognises a WebSocket client by
its first bytes (``GET ``) when its config has a ``proto ws`` host, so vtund's and vt's tcp
clients keep working on the same port, and a ``proto ws`` host refuses them clearly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from plugin_dist import (
    carries_both_ways,
    install_example,
    run_example_tests,
    vt,
    with_site,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "vt-ws"
PROXY_PORT = 8080


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The example's wheel and wsproto (its own dependency, with h11), installed alone."""
    target = install_example(EXAMPLE, tmp_path_factory.mktemp("vtws"))
    assert (target / "vt_ws" / "relay.py").is_file() and (target / "wsproto").is_dir()
    return target


def config(device: str, path: str | None = None, **settings: object) -> str:
    """A one-host config; ``path``: a ``ws_path`` line (a plugin keyword vtund lacks)."""
    from peers import vtund_conf

    text = vtund_conf("wt", type="tun", device=device, **settings)
    if path is not None:
        text = text.replace("wt {", f"wt {{\n  ws_path {path};", 1)
    return text


def test_installed_listed_and_its_own_tests_pass(site: Path, tmp_path: Path) -> None:
    listed = {p["name"]: p for p in json.loads(vt(["plugins", "list", "--json"], site).stdout)}
    ws = listed["ws"]
    assert (ws["distribution"], ws["status"], ws["builtin"]) == ("vt-ws", "loaded", False)
    summary = run_example_tests(EXAMPLE, site, "vt_ws", tmp_path)
    assert int(summary.split()[0]) >= 5, summary


def test_config_check_knows_proto_ws_and_ws_path_only_with_the_plugin(
        site: Path, tmp_path: Path) -> None:
    conf = tmp_path / "vt.conf"
    conf.write_text("wt { passwd x; type tun; proto ws; ws_path /tunnel; }\n")
    conf.chmod(0o600)
    assert vt(["config", "check", "-f", str(conf)], site).returncode == 0
    bare = vt(["config", "check", "-f", str(conf)], None)
    assert bare.returncode != 0
    assert "'proto ws': no installed plugin answers 'ws'" in bare.stdout + bare.stderr


# ------------------------------------------------------------------ live, in namespaces

PROXY = r"""
import asyncio, sys

PATH, BACKEND, PORT = sys.argv[1].encode(), sys.argv[2], int(sys.argv[3])

async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()

async def handle(reader, writer):
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    if head.split(b" ")[1] != PATH:
        writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()
        return
    up_reader, up_writer = await asyncio.open_connection(BACKEND, 5000)
    up_writer.write(head)
    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

async def main():
    server = await asyncio.start_server(handle, "0.0.0.0", PORT)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""
"""A plain HTTP reverse proxy: forwards a request for PATH (head and all, then the raw
bytes both ways) to the backend, answers 404 to any other path."""


@pytest.mark.netns
@pytest.mark.parametrize("secure", [False, True], ids=["legacy", "aead"])
def test_vt_to_vt_tunnel_inside_a_websocket(site: Path, secure: bool, tmp_path: Path) -> None:
    """Pings, a byte-identical file both ways and iperf3 both ways through ``proto ws``,
    with vtund's authentication and with secure mode (its handshake inside too); the up
    commands' ``%a:%p`` are the real peer's, not the wrapped stream's."""
    from netns import transfer_file, two_hosts, wait_ping
    from peers import VtClient, VtServer

    with two_hosts() as p:
        ta, tb = p.add_tunnel_devices("wsrv", "wcli")
        extra: dict[str, object] = {"encrypt": "aead"} if secure else {}
        seen = tmp_path / "peer"
        up = [f"program /bin/sh \"-c 'echo %a:%p > {seen}'\" wait"]
        with with_site(VtServer, site)(p.a, config("wsrv", proto="ws", up=up, **extra)) \
                as server, \
                with_site(VtClient, site)(p.b, config("wcli", proto="ws", **extra), "wt",
                                          p.a_addr) as client:
            wait_ping(p.b, ta, timeout=15)
            for peer in (server, client):
                # A stream like tcp's: native framing and whole GSO packets per frame.
                peer.wait_log(r"session up.*native=True offload=True .*proto=ws", timeout=10)
            if secure:
                client.wait_log(r"secure mode established", timeout=5)
            addr, port = seen.read_text().split(":")
            assert addr == p.b_addr and 1024 <= int(port) < 65536
            assert transfer_file(p.b, p.a, ta, nbytes=1 << 20)
            for res in carries_both_ways(p, ta, tb, server, client):
                print(f"proto ws ({'aead' if secure else 'legacy'}): "
                      f"{res['bits_per_second'] / 1e6:.0f} Mbit/s")
        for peer in (server, client):
            assert "Traceback" not in peer.log()


@pytest.mark.netns
def test_behind_a_reverse_proxy_path(site: Path, tmp_path: Path) -> None:
    """The client dials a plain HTTP reverse proxy that forwards only ``/tunnel``; a client
    with another path gets the proxy's 404 and says so."""
    from netns import two_hosts, wait_listening, wait_ping
    from peers import VtClient, VtServer

    script = tmp_path / "proxy.py"
    script.write_text(PROXY)
    with two_hosts() as p:
        ta, _ = p.add_tunnel_devices("wsrv", "wcli")
        proxy = p.a.popen("python3", script, "/tunnel", "127.0.0.1", PROXY_PORT)
        try:
            wait_listening(p.a, PROXY_PORT, timeout=10, proc=proxy)
            client_cls = with_site(VtClient, site)
            with with_site(VtServer, site)(p.a, config("wsrv", proto="ws")) as server:
                with client_cls(p.b, config("wcli", "/elsewhere", proto="ws"), "wt", p.a_addr,
                                port=PROXY_PORT, expect_exit=True) as lost:
                    lost.wait_log(r"proto ws: WebSocket upgrade refused: HTTP 404", timeout=10)
                with client_cls(p.b, config("wcli", "/tunnel", proto="ws"), "wt", p.a_addr,
                                port=PROXY_PORT) as client:
                    wait_ping(p.b, ta, timeout=15)
                    client.wait_log(r"session up.*proto=ws", timeout=10)
                assert "Traceback" not in server.log()
        finally:
            proxy.kill()
            proxy.wait(5)


@pytest.mark.netns
@pytest.mark.vtund
def test_vtund_cannot_speak_it_and_plain_clients_still_work(site: Path) -> None:
    """A vt server with a ``proto ws`` host: a vtund client (no WebSocket) is refused with
    a reason in the server's log; the same server's tcp host still serves vtund.  A
    ``proto ws`` client facing vtund stops with a clear line."""
    from netns import two_hosts, wait_ping
    from peers import VtClient, VtServer, VtundClient, VtundServer, requires_vtund

    requires_vtund()
    with two_hosts() as p:
        ta, _ = p.add_tunnel_devices("wsrv", "wcli")
        both = config("wsrv", proto="ws") + config("wsrv", proto="tcp").split("}", 1)[1] \
            .replace("wt {", "wp {", 1)
        with with_site(VtServer, site)(p.a, both) as server:
            with VtundClient(p.b, config("wcli"), "wt", p.a_addr, expect_exit=True) as vtund:
                server.wait_log(r"denied: feature not offered.*host wt needs proto ws, which "
                                r"the peer did not speak", timeout=10)
                vtund.wait_log(r"Connection denied by", timeout=10)
            plain = config("wcli").replace("wt {", "wp {", 1)
            with VtundClient(p.b, plain, "wp", p.a_addr) as vtund:
                wait_ping(p.b, ta, timeout=15)
            assert server.alive()
        with VtundServer(p.a, config("wsrv")), \
                with_site(VtClient, site)(p.b, config("wcli", proto="ws"), "wt", p.a_addr,
                                          expect_exit=True) as client:
            # vtund's greeting, or its reset once it refused the request as a HOST line
            client.wait_log(r"proto ws: .*WebSocket upgrade \(vtund, or a vt server with no "
                            r"proto ws host\)", timeout=10)
            assert "session up" not in client.log()
