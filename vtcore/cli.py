"""The ``vt`` command line.  vtund's options keep their meanings and may follow the
positional arguments (``vt run conn 127.0.0.1 -n -f cli.conf``)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from vtcore import __version__

DEFAULT_CONFIG = "/etc/vtund.conf"


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"vt: {message}", err=True)
    sys.exit(code)


def _setup_logging(ctx: click.Context, detach: bool, facility: str | None = None,
                   quiet: bool = False, inetd: bool = False) -> None:
    """Logging first, while the terminal is still there to hear that it cannot be set up."""
    from vtcore import log

    root = ctx.find_root().params
    level = root.get("log_level") or ("warning" if quiet else "info")
    try:
        dest = log.choose_destination(root.get("log_format") or "auto", detach=detach,
                                      inetd=inetd, log_file=root.get("log_file"),
                                      facility=facility or "daemon")
    except log.LogSetupError as exc:
        if inetd and log.stderr_is_socket():
            sys.exit(1)  # stderr is the client's connection: the exit status is all it gets
        _fail(str(exc))
    log.configure(dest, level)


def _load(path: str, plugins):
    """Parse and check the config; exit with one line per error."""
    from vtcore.config import ConfigErrors, check_config, load_config

    try:
        config = load_config(path)
    except ConfigErrors as exc:
        _fail(str(exc), 2)
    errors = check_config(config, plugins.registry)
    if errors:
        _fail("\n".join(str(e) for e in errors), 2)
    return config


def _security_warnings(config, plugins) -> list:
    from vtcore.config.check import security_warnings

    return security_warnings(config, plugins.registry)


def _log_security_warnings(config, plugins) -> None:
    """Once at start-up, in the daemon's log: what the config gives away."""
    import structlog

    log = structlog.get_logger("vt.config")
    for warn in _security_warnings(config, plugins):
        log.warning("config warning", detail=str(warn))


def _prepare_dirs(*paths: str) -> None:
    """Create ``lockdir``/``statdir`` (0700) before anyone else can, or refuse to start on
    one another user could write to (:mod:`vtcore.runtime.fsguard`)."""
    from vtcore.runtime import fsguard

    try:
        fsguard.prepare(*paths)
    except fsguard.UnsafePath as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"{exc.filename or paths[0]}: {exc.strerror or exc}")


def _daemonize() -> None:
    """Detach like vtund without ``-n``: fork, new session, stdio to /dev/null.  The
    process on the terminal stays until the daemon is up, so that a failure after the
    fork still reaches the terminal with a non-zero exit status."""
    from vtcore import notify

    read_end, write_end = os.pipe()
    if os.fork():
        os.close(write_end)
        os._exit(notify.wait_ready(read_end))
    os.close(read_end)
    notify.report_to(write_end)
    os.setsid()
    if os.fork():
        os._exit(0)
    fd = os.open(os.devnull, os.O_RDWR)
    for n in (0, 1, 2):
        os.dup2(fd, n)
    os.close(fd)


def _run_daemon(main) -> Any:
    """The daemon's event loop; a crash before it is up is reported to the terminal that
    waits for it (see :func:`_daemonize`)."""
    from vtcore import notify
    from vtcore.runtime import loop

    try:
        return loop.run(main)
    except Exception as exc:
        notify.startup_failed(f"{type(exc).__name__}: {exc}")
        raise


def _check_metrics(config) -> None:
    """A metrics address that cannot listen fails the start, on the terminal."""
    from vtcore.metrics import check_address

    try:
        check_address(config.options.metrics)
    except OSError as exc:
        addr, port = config.options.metrics
        _fail(f"cannot listen for metrics on {addr}:{port}: {exc.strerror or exc}")


def _mlockall() -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mlockall(3) != 0:  # MCL_CURRENT | MCL_FUTURE
        _fail(f"mlockall failed: {os.strerror(ctypes.get_errno())}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="vt")
@click.option("--log-format", type=click.Choice(["auto", "console", "json", "syslog"]),
              default=None, help="Log output: human (console), json, or syslog.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default=None, help="Lowest level logged (default info).")
@click.option("--log-file", metavar="FILE", default=None,
              help="Append log lines to FILE (instead of the journal, syslog or stderr).")
def cli(log_format: str | None, log_level: str | None, log_file: str | None) -> None:
    """vt: a vtund-compatible tunnel daemon built from plugins."""


config_option = click.option("-f", "config_path", default=DEFAULT_CONFIG, show_default=True,
                             type=click.Path(), metavar="FILE",
                             help="Configuration file (vtund.conf syntax).")


def _complete_hosts(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list:
    """Shell completion of HOST: the host sections of the -f file (or the default one)."""
    from click.shell_completion import CompletionItem

    from vtcore.config import ConfigErrors, load_config

    try:
        hosts = load_config(ctx.params.get("config_path") or DEFAULT_CONFIG).hosts
    except ConfigErrors:
        return []
    return [CompletionItem(name) for name in sorted(hosts) if name.startswith(incomplete)]

F = TypeVar("F", bound=Callable[..., Any])

foreground_option = click.option("-n", "foreground", is_flag=True,
                                 help="Stay in the foreground.")


def daemon_options(verb: str) -> Callable[[F], F]:
    """-4, -6, -m and -q, which serve and run share with vtund's meanings."""
    options = [
        click.option("-4", "ipv4", is_flag=True, help=f"{verb} over IPv4."),
        click.option("-6", "ipv6", is_flag=True, help=f"{verb} over IPv6."),
        click.option("-m", "mlock", is_flag=True, help="Lock memory (mlockall)."),
        click.option("-q", "quiet", is_flag=True, help="Log warnings and errors only."),
    ]

    def apply(f: F) -> F:
        for option in reversed(options):
            f = option(f)
        return f

    return apply


def _family(ipv4: bool, ipv6: bool) -> bool | None:
    """-6: IPv6, -4: IPv4, neither: what the configuration and the address say."""
    return True if ipv6 else (False if ipv4 else None)


def _start(ctx: click.Context, foreground: bool, syslog: str | None, quiet: bool,
           mlock: bool, inetd: bool = False) -> None:
    """What a daemon does before its loop: logging, the allocator, memory locking."""
    from vtcore.runtime.memory import tune_allocator

    _setup_logging(ctx, not foreground and not inetd, syslog, quiet, inetd)
    tune_allocator()
    if mlock:
        _mlockall()


@cli.command()
@config_option
@click.option("-P", "port", type=int, help="Port to listen on (default: options.port, 5000).")
@click.option("-L", "bind", metavar="ADDR", help="Local address to listen on.")
@click.option("-t", "timeout", type=int, help="Handshake timeout in seconds.")
@foreground_option
@click.option("-i", "inetd", is_flag=True, help="inetd mode: the connection is stdin.")
@click.option("-s", "standalone", is_flag=True, help="Standalone server (the default).")
@daemon_options("Listen")
@click.pass_context
def serve(ctx, config_path, port, bind, timeout, foreground, inetd, standalone, ipv4, ipv6,
          mlock, quiet) -> None:
    """Run the server (vtund -s)."""
    from vtcore import notify
    from vtcore.runtime import loop
    from vtcore.runtime.server import (
        ListenError,
        Server,
        ServerOptions,
        hold_early_reload,
        serve_inetd,
    )

    hold_early_reload()  # a SIGHUP once the port answers must not kill a starting server
    plugins = _plugins(ctx)
    config = _load(config_path, plugins)
    inetd = inetd or (config.options.type == "inetd" and not standalone)
    _prepare_dirs(config.options.lockdir, config.options.statdir)
    overrides = ServerOptions(port=port, bind=bind, timeout=timeout, ipv6=_family(ipv4, ipv6))
    # In inetd mode stdout/stderr may be the client's socket: syslog unless told otherwise.
    _start(ctx, foreground, config.options.syslog, quiet, mlock, inetd)
    _log_security_warnings(config, plugins)
    if inetd:
        loop.run(serve_inetd(config_path, config, plugins, overrides))
        return
    server = Server(config_path, config, plugins, overrides)
    try:
        server.listener = notify.listen_socket() or server.make_listener()
    except ListenError as exc:
        _fail(str(exc))  # names the address and port
    except (OSError, ValueError) as exc:
        _fail(f"cannot listen: {getattr(exc, 'strerror', None) or exc}")
    _check_metrics(config)
    main = server.serve()
    from vtcore.runtime.master import Master, SetupError, resolve_workers

    if workers := resolve_workers(config, plugins):
        main.close()
        assert server.listener is not None
        try:
            main = Master(config_path, config, plugins, overrides, server.listener,
                          workers).serve()
        except SetupError as exc:
            _fail(str(exc))
    if not foreground:
        _daemonize()
    _run_daemon(main)


@cli.command(hidden=True)
@click.option("--fd", type=int, required=True)
@click.option("--master", "master_pid", type=int, required=True)
@click.option("--uid", type=int, required=True)
@click.option("--gid", type=int, required=True)
@click.option("--facility", default="daemon")
@click.pass_context
def worker(ctx, fd, master_pid, uid, gid, facility) -> None:
    """A worker of ``vt serve`` (started by the master, never by hand)."""
    from vtcore.runtime import loop
    from vtcore.runtime import worker as worker_mod

    plugins = _plugins(ctx)
    _start(ctx, True, facility, False, False)  # the data path is here: as a daemon's
    try:
        worker_mod.drop_privileges(uid, gid, master_pid, plugins)
    except (OSError, SystemExit) as exc:
        _fail(f"worker: cannot drop privileges: {exc}")
    sys.exit(loop.run(worker_mod.run_worker(fd, plugins)))


@cli.command()
@click.argument("host", shell_complete=_complete_hosts)
@click.argument("server")
@config_option
@click.option("-P", "port", type=int, help="Server port (default: options.port, 5000).")
@click.option("-t", "timeout", type=int, help="Connect and handshake timeout in seconds.")
@click.option("-p", "persist", is_flag=True, help="Reconnect whenever the session ends.")
@foreground_option
@daemon_options("Connect")
@click.pass_context
def run(ctx, host, server, config_path, port, timeout, persist, foreground, ipv4, ipv6, mlock,
        quiet) -> None:
    """Run the client for profile HOST against SERVER (vtund HOST SERVER)."""
    from vtcore.runtime.client import Client, ClientOptions

    plugins = _plugins(ctx)
    config = _load(config_path, plugins)
    if host not in config.hosts:
        _fail(f"{config_path}: no host {host!r} defined")
    _prepare_dirs(config.options.statdir)
    _start(ctx, foreground, config.options.syslog, quiet, mlock)
    _log_security_warnings(config, plugins)
    _check_metrics(config)
    opts = ClientOptions(port=port, timeout=timeout, persist=persist, ipv6=_family(ipv4, ipv6))
    parent = None
    from vtcore.runtime.master import ClientMaster, SetupError, resolve_workers

    if resolve_workers(config, plugins):  # the same split as the server's (issue 18)
        try:
            parent = ClientMaster(config_path, config, plugins, host, server, opts)
        except SetupError as exc:
            _fail(str(exc))
    if not foreground:
        _daemonize()

    async def main() -> int:
        if parent is not None:
            return await parent.run()
        return await Client(config, host, server, plugins, opts).run()

    sys.exit(_run_daemon(main()))


@cli.group()
def plugins() -> None:
    """Inspect installed plugins."""


@plugins.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def plugins_list(ctx: click.Context, as_json: bool) -> None:
    """Every plugin: distribution, version, kind, what it provides, status."""
    infos = list(_plugins(ctx).infos.values())
    if as_json:
        click.echo(json.dumps([i.as_dict() for i in infos], indent=2))
        return
    rows = [("NAME", "DISTRIBUTION", "VERSION", "KIND", "STATUS", "PROVIDES")]
    for i in infos:
        status = i.status if not i.error else f"{i.status}: {i.error}"
        rows.append((i.name + (" (builtin)" if i.builtin else ""), i.distribution, i.version,
                     ",".join(i.kinds) or "-", status, "; ".join(i.provides) or "-"))
    widths = [max(len(r[c]) for r in rows) for c in range(5)]
    for r in rows:
        click.echo("  ".join(r[c].ljust(widths[c]) for c in range(5)) + "  " + r[5])


@cli.command()
@click.argument("pids", nargs=-1, type=int)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--watch", "-w", is_flag=True,
              help="Refresh every INTERVAL seconds, with a throughput sparkline per session.")
@click.option("--interval", type=click.FloatRange(0.1, 3600), default=1.0, show_default=True,
              help="Seconds between --watch refreshes.")
@click.option("--count", type=click.IntRange(1), default=None,
              help="Stop --watch after COUNT refreshes (default: until interrupted).")
def status(pids: tuple[int, ...], as_json: bool, watch: bool, interval: float,
           count: int | None) -> None:
    """Sessions and counters of every vt running on this machine (or of PIDS)."""
    import itertools
    import time

    from vtcore.runtime.status import query_all
    from vtcore.statusview import History, render

    history = History()
    clear = watch and sys.stdout.isatty() and not as_json
    rounds = itertools.count() if count is None or not watch else range(count)
    try:
        for n in rounds:
            if n:
                time.sleep(interval)
            docs = [d for d in query_all() if not pids or d.get("pid") in pids]
            history.add(docs)
            if as_json:
                click.echo(json.dumps(docs, indent=None if watch else 2))
            else:
                head = "\x1b[H\x1b[J" if clear else ("" if not n else "\n")
                stamp = [f"vt status, every {interval:g}s: {time.strftime('%H:%M:%S')}"]
                shown = render(docs, history if watch else None)
                click.echo(head + "\n".join((stamp if watch else []) + shown))
            if not watch:
                break
    except KeyboardInterrupt:
        pass


@cli.group()
def config() -> None:
    """Work with vtund.conf files."""


@config.command("check")
@config_option
@click.pass_context
def config_check(ctx: click.Context, config_path: str) -> None:
    """Parse FILE and report every error as FILE:LINE:COL: message."""
    from vtcore.config import ConfigErrors, check_config, load_config
    from vtcore.config.check import with_plugin_errors

    try:
        cfg = load_config(config_path)
    except ConfigErrors as exc:
        for err in with_plugin_errors(exc, _plugins(ctx).registry):
            click.echo(str(err), err=True)
        sys.exit(1)
    errors = check_config(cfg, _plugins(ctx).registry)
    for warn in getattr(cfg, "warnings", []) + _security_warnings(cfg, _plugins(ctx)):
        click.echo(f"{warn} (warning)", err=True)
    for err in errors:
        click.echo(str(err), err=True)
    if errors:
        sys.exit(1)
    count = len(cfg.hosts)
    click.echo(f"{config_path}: ok ({count} host{'' if count == 1 else 's'})")


def _plugins(ctx: click.Context):
    """The plugins loaded by :func:`main` (once per process), or a fresh load."""
    from vtcore.plugins import load_plugins

    return ctx.find_root().obj or load_plugins()


def build_cli(plugins=None) -> click.Group:
    """The CLI with plugin-contributed commands added (``vt_register_commands``).

    Each plugin is called on its own: one that fails, or that tries to replace a command
    already there, is reported on stderr and the others still add theirs.
    """
    from vtcore.plugins import call_each, load_plugins

    plugins = plugins or load_plugins()
    before = dict(cli.commands)
    for name, exc in call_each(plugins.pm, "vt_register_commands", cli=cli):
        if exc is not None:  # a plugin's CLI must not break vt itself
            click.echo(f"vt: plugin {name} failed to add commands: {exc}", err=True)
        for command, cmd in before.items():
            if cli.commands.get(command) is not cmd:
                cli.commands[command] = cmd
                click.echo(f"vt: plugin {name} may not replace 'vt {command}'", err=True)
        before = dict(cli.commands)  # the next plugin may not replace this one's either
    return cli


def main() -> None:
    from vtcore.plugins import load_plugins

    plugins = load_plugins()
    build_cli(plugins).main(prog_name="vt", obj=plugins)


if __name__ == "__main__":
    main()
