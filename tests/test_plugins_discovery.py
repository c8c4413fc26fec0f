"""Plugin discovery: broken, disabled, misspelt and duplicate plugins are reported while the
rest work; the frame chain follows declared stages, never registration order.

Fake third-party plugins are real distributions: a module and a ``*.dist-info`` directory
with ``entry_points.txt`` in a temporary directory put on ``sys.path`` for one test.
"""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

from vtcore import hookimpl
from vtcore.api import FrameModuleType, LinkSettings, Registry, Stage
from vtcore.cli import build_cli, cli
from vtcore.plugins import load_plugins

WORKSPACE_PLUGINS = ("transports", "devices", "zlib", "lzo", "crypto", "shaper")


class FakeSite:
    """A directory on ``sys.path`` holding fake distributions."""

    def __init__(self, root: Path, tag: str) -> None:
        self.root = root
        self.tag = tag
        self.modules: list[str] = []

    def add(self, dist: str, ep_name: str, source: str, version: str = "1.0") -> str:
        module = f"vtfake_{self.tag}_{len(self.modules)}"
        self.modules.append(module)
        (self.root / f"{module}.py").write_text(textwrap.dedent(source))
        info = self.root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n"
        )
        (info / "entry_points.txt").write_text(f"[vt.plugins]\n{ep_name} = {module}\n")
        importlib.invalidate_caches()
        return module


@pytest.fixture
def site(tmp_path, monkeypatch, request):
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delenv("VT_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("VT_TRACE_HOOKS", raising=False)
    monkeypatch.delenv("VT_TRACE_PLUGINS", raising=False)
    fake = FakeSite(root, str(abs(hash(request.node.nodeid))))
    yield fake
    for mod in fake.modules:
        sys.modules.pop(mod, None)
    importlib.invalidate_caches()


def invoke(*args: str, env: dict[str, str] | None = None):
    res = CliRunner().invoke(cli, list(args), env=env)
    assert res.exception is None or isinstance(res.exception, SystemExit), res.output
    return res


def assert_workspace_loaded(infos, except_: tuple[str, ...] = ()) -> None:
    for name in WORKSPACE_PLUGINS:
        if name not in except_:
            assert infos[name].status == "loaded", (name, infos[name].error)


# ------------------------------------------------------------------ broken plugins


@pytest.mark.parametrize(
    "source, error",
    [
        ("raise ImportError('needs libfoo')\n", "ImportError: needs libfoo"),
        ("x = 1 / 0\n", "ZeroDivisionError"),
        ("def broken(:\n", "SyntaxError"),
    ],
)
def test_broken_plugin_is_listed_with_its_error_while_the_rest_load(site, source, error):
    site.add("vt-broken", "broken", source)
    plugins = load_plugins()
    info = plugins.infos["broken"]
    assert (info.status, info.distribution, info.version) == ("error", "vt-broken", "1.0")
    assert error in info.error
    assert_workspace_loaded(plugins.infos)
    assert plugins.registry.answering("compress", "lzo") is not None

    res = invoke("plugins", "list")
    assert res.exit_code == 0
    row = next(line for line in res.output.splitlines() if line.startswith("broken "))
    assert "vt-broken" in row and f"error: {error}" in row
    listed = {p["name"]: p for p in json.loads(invoke("plugins", "list", "--json").output)}
    assert listed["broken"]["status"] == "error" and error in listed["broken"]["error"]
    assert listed["lzo"]["status"] == "loaded"


def test_plugin_whose_hook_raises_contributes_nothing(site):
    site.add("vt-halfway", "halfway", """
        from vtcore import hookimpl
        from vtcore.api import TransportType

        @hookimpl
        def vt_register_transports(registry):
            registry.add_transport(TransportType("carrier-pigeon", "P", None))
            raise RuntimeError("out of birds")
    """)
    plugins = load_plugins()
    assert plugins.infos["halfway"].status == "error"
    assert "RuntimeError: out of birds" in plugins.infos["halfway"].error
    assert "carrier-pigeon" not in plugins.registry.transports
    assert set(plugins.registry.transports) == {"tcp", "udp"}
    assert plugins.pm.get_plugin("halfway") is None
    assert_workspace_loaded(plugins.infos)


# ------------------------------------------------------------------ VT_DISABLE_PLUGINS


def test_disable_env_turns_plugins_off(site, monkeypatch):
    monkeypatch.setenv("VT_DISABLE_PLUGINS", "lzo, shaper")
    plugins = load_plugins()
    assert plugins.infos["lzo"].status == "disabled"
    assert plugins.infos["shaper"].status == "disabled"
    assert plugins.registry.answering("compress", "lzo") is None
    assert not plugins.registry.answers("speed")
    assert plugins.registry.answering("compress", "zlib") is not None
    assert_workspace_loaded(plugins.infos, except_=("lzo", "shaper"))

    res = invoke("plugins", "list", env={"VT_DISABLE_PLUGINS": "lzo"})
    row = next(line for line in res.output.splitlines() if line.startswith("lzo "))
    assert "disabled" in row and "compress lzo" not in row
    zrow = next(line for line in res.output.splitlines() if line.startswith("zlib "))
    assert "loaded" in zrow


def test_disable_builtin_is_shown(site, monkeypatch):
    monkeypatch.setenv("VT_DISABLE_PLUGINS", "transports")
    plugins = load_plugins()
    assert plugins.infos["transports"].status == "disabled"
    assert plugins.registry.transports == {}


# ------------------------------------------------------------------ misspelt hooks


def test_misspelt_hooks_fail_loudly_and_are_reported(site):
    for n, hook in enumerate(("vt_register_frame_module", "vt_register_device")):
        site.add(f"vt-typo{n}", f"typo{n}", f"""
            from vtcore import hookimpl
            from vtcore.api import TransportType

            @hookimpl
            def {hook}(registry):
                pass

            @hookimpl
            def vt_register_transports(registry):
                registry.add_transport(TransportType("typo{n}", "Y", None))
        """)
    plugins = load_plugins()
    for n, hook in enumerate(("vt_register_frame_module", "vt_register_device")):
        info = plugins.infos[f"typo{n}"]
        assert info.status == "error"
        assert f"unknown hook '{hook}'" in info.error
        assert f"typo{n}" not in plugins.registry.transports  # dropped entirely
    assert_workspace_loaded(plugins.infos)


def test_hook_with_wrong_arguments_is_reported(site):
    site.add("vt-badargs", "badargs", """
        from vtcore import hookimpl

        @hookimpl
        def vt_register_frame_modules(reg):
            pass
    """)
    plugins = load_plugins()
    assert plugins.infos["badargs"].status == "error"
    assert "reg" in plugins.infos["badargs"].error
    assert_workspace_loaded(plugins.infos)


# ------------------------------------------------------------------ duplicates


def test_duplicate_registration_is_reported_and_rolled_back(site):
    site.add("vt-dup", "zzdup", """
        from vtcore import hookimpl
        from vtcore.api import FrameModuleType

        @hookimpl
        def vt_register_frame_modules(registry):
            registry.add_frame_module(FrameModuleType("dupextra", 150, "dupkw", {}, None))
            registry.add_frame_module(FrameModuleType("lzo", 101, "compress", {"lzo": 2}, None))
    """)
    plugins = load_plugins()
    info = plugins.infos["zzdup"]
    assert info.status == "error"
    assert "frame module 'lzo' registered by lzo and again by zzdup" in info.error
    assert "dupextra" not in plugins.registry.frame_modules
    assert plugins.registry.answering("dupkw") is None
    import vt_lzo.plugin

    assert plugins.registry.frame_modules["lzo"].create is vt_lzo.plugin.create
    assert_workspace_loaded(plugins.infos)


def test_a_plugin_answering_a_word_already_answered_is_reported(site):
    site.add("vt-zlib2", "zzlib", """
        from vtcore import hookimpl
        from vtcore.api import FrameModuleType

        @hookimpl
        def vt_register_frame_modules(registry):
            registry.add_frame_module(FrameModuleType("zlib2", 100, "compress", {"zlib": 1}, None))
    """)
    plugins = load_plugins()
    info = plugins.infos["zzlib"]
    assert info.status == "error"
    assert ("frame module 'zlib2' of zzlib answers 'compress zlib', already answered by "
            "frame module 'zlib' of zlib") in info.error
    assert "zlib2" not in plugins.registry.frame_modules
    assert plugins.registry.answering("compress", "zlib").name == "zlib"
    assert_workspace_loaded(plugins.infos)


def test_registry_rejects_duplicates_directly():
    from vtcore.api import RegistryError

    reg = Registry()
    reg.current_plugin = "a"
    reg.add_frame_module(FrameModuleType("m", 1, "k", {}, lambda s: None))
    reg.current_plugin = "b"
    with pytest.raises(RegistryError, match="'m' registered by a and again by b"):
        reg.add_frame_module(FrameModuleType("m", 2, "k", {}, lambda s: None))


def test_duplicate_entry_point_name_is_reported(site):
    site.add("vt-impostor", "lzo", "# registers nothing\n")
    plugins = load_plugins()
    info = plugins.infos["lzo"]
    # The first distribution on sys.path keeps the name; the other is named in the report.
    other = "vt-lzo" if info.distribution == "vt-impostor" else "vt-impostor"
    assert f"also claimed by {other}" in info.error


# ------------------------------------------------------------------ chain order


class Tag:
    """Appends its tag on encode, checks and strips it on decode; records what it saw."""

    def __init__(self, tag: bytes, seen: list[bytes]) -> None:
        self.tag, self.seen = tag, seen

    def encode(self, frame: bytes) -> bytes:
        self.seen.append(b"E" + self.tag)
        return frame + self.tag

    def decode(self, frame: bytes) -> bytes | None:
        self.seen.append(b"D" + self.tag)
        return frame[:-1] if frame.endswith(self.tag) else None


def tag_plugin(name: str, stage: int, seen: list[bytes]) -> types.ModuleType:
    mod = types.ModuleType(f"tagplugin_{name}")

    @hookimpl
    def vt_register_frame_modules(registry: Registry) -> None:
        registry.add_frame_module(
            FrameModuleType(name, stage, f"kw{name}", {}, lambda s: Tag(name.encode(), seen))
        )

    mod.vt_register_frame_modules = vt_register_frame_modules
    return mod


STAGES = {"s": Stage.SHAPE, "x": 50, "e": Stage.ENCRYPT, "c": Stage.COMPRESS, "d": 150}


@pytest.mark.parametrize("order", [list(STAGES), list(reversed(STAGES)), ["e", "x", "s", "d", "c"]])
def test_chain_follows_stage_not_registration_order(order):
    seen: list[bytes] = []
    plugins = load_plugins(extra=[tag_plugin(n, STAGES[n], seen) for n in order])
    chain = [m for m in plugins.registry.chain(LinkSettings("h", "server")) if isinstance(m, Tag)]
    assert [m.tag for m in chain] == [b"x", b"c", b"d", b"e", b"s"]
    frame = b"payload"
    for m in chain:  # the linker: encode ascending
        frame = m.encode(frame)
    assert frame == b"payloadxcdes"
    for m in reversed(chain):  # decode descending
        frame = m.decode(frame)
    assert frame == b"payload"
    assert seen == [b"Ex", b"Ec", b"Ed", b"Ee", b"Es", b"Ds", b"De", b"Dd", b"Dc", b"Dx"]


def test_equal_stages_are_ordered_by_name():
    reg = Registry()
    for name in ("b", "a", "c"):
        reg.add_frame_module(FrameModuleType(name, 7, name, {}, lambda s, n=name: Tag(n.encode(), [])))
    assert [m.tag for m in reg.chain(LinkSettings("h", "server"))] == [b"a", b"b", b"c"]


def test_workspace_modules_order_compress_encrypt_shape(site):
    plugins = load_plugins()
    crypto = plugins.registry.frame_modules["crypto"]
    settings = LinkSettings("h", "client", compress=("zlib", 9),
                            encrypt=crypto.words["aes128cbc"], speed_out=1000,
                            password=b"secret")
    types_in_order = [type(m).__module__ for m in plugins.registry.chain(settings)]
    # Re-register the very same records in reverse: the chain must not change.
    reverse = Registry()
    for item in reversed(list(plugins.registry.frame_modules.values())):
        reverse.add_frame_module(item)
    assert [type(m).__module__ for m in reverse.chain(settings)] == types_in_order
    assert [t.split(".")[0] for t in types_in_order] == ["vt_zlib", "vt_crypto"]
    # The shaper is a pacer of its own, not a link of the chain.
    assert [type(p).__module__ for _, p in plugins.registry.pacers_for(settings)] == [
        "vt_shaper.bucket"]


# ------------------------------------------------------------------ listing and tracing


def test_builtin_transports_are_listed(site):
    res = invoke("plugins", "list")
    assert res.exit_code == 0
    lines = res.output.splitlines()
    assert lines[0].split()[:3] == ["NAME", "DISTRIBUTION", "VERSION"]
    row = next(line for line in lines if line.startswith("transports (builtin)"))
    assert "vtcore" in row and "loaded" in row and "proto tcp; proto udp" in row
    listed = {p["name"]: p for p in json.loads(invoke("plugins", "list", "--json").output)}
    t = listed["transports"]
    assert (t["builtin"], t["kind"], t["provides"]) == (True, "transport", ["proto tcp", "proto udp"])
    assert listed["devices"]["provides"] == ["type tun", "type ether", "type tty", "type pipe"]
    assert listed["lzo"]["distribution"] == "vt-lzo" and listed["lzo"]["builtin"] is False


@pytest.mark.parametrize("env", ["VT_TRACE_PLUGINS", "VT_TRACE_HOOKS"])
def test_trace_prints_each_hook_call_and_the_plugin_that_failed(site, monkeypatch, capsys, env):
    site.add("vt-halfway", "halfway", """
        from vtcore import hookimpl

        @hookimpl
        def vt_register_transports(registry):
            raise RuntimeError("out of birds")
    """)
    site.add("vt-cmds", "cmds", """
        from vtcore import hookimpl

        @hookimpl
        def vt_register_commands(cli):
            pass
    """)
    monkeypatch.setenv(env, "1")
    build_cli(load_plugins())
    err = capsys.readouterr().err
    assert "vt hook: vt_register_frame_modules(registry) -> lzo\n" in err
    assert "vt hook: vt_register_transports(registry) -> transports\n" in err
    assert "vt hook: vt_register_commands(cli) -> cmds\n" in err
    assert "registry: Registry(devices: 4, transports: 2, " in err  # short, not every record
    # pluggy's own tracing, through its hook call monitoring
    assert "  vt_register_devices [hook]\n" in err
    assert "finish vt_register_devices --> [] [hook]" in err
    assert ("vt hook: vt_register_transports failed in plugin halfway: "
            "RuntimeError: out of birds\n") in err
    monkeypatch.delenv(env)
    load_plugins()
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------ plugin commands


def test_plugin_commands_are_added_and_isolated(site, capsys):
    site.add("vt-cmds", "cmds", """
        import click
        from vtcore import hookimpl

        @click.command("hello-plugin")
        def hello():
            click.echo("hello from a plugin")

        @click.command("run")
        def hijack():
            click.echo("hijacked")

        @hookimpl
        def vt_register_commands(cli):
            cli.add_command(hello)
            cli.add_command(hijack)
    """)
    site.add("vt-cmdfail", "cmdfail", """
        from vtcore import hookimpl

        @hookimpl
        def vt_register_commands(cli):
            raise RuntimeError("no commands today")
    """)
    try:
        group = build_cli()
        err = capsys.readouterr().err
        assert "plugin cmdfail failed to add commands: no commands today" in err
        assert "plugin cmds may not replace 'vt run'" in err
        res = CliRunner().invoke(group, ["hello-plugin"])
        assert (res.exit_code, res.output) == (0, "hello from a plugin\n")
        assert "hijacked" not in CliRunner().invoke(group, ["run", "--help"]).output
    finally:
        cli.commands.pop("hello-plugin", None)
