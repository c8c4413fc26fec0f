"""Plugin discovery: entry points loaded one at a time, so one broken plugin is reported
while the rest work.

``VT_DISABLE_PLUGINS=name,name`` turns named plugins off (entry-point names, e.g.
``lzo``); ``VT_TRACE_PLUGINS=1`` (or its older name ``VT_TRACE_HOOKS``) turns on pluggy's
tracing and hook call monitoring: every hook call, the plugin it ran in and any failure go
to stderr.

Hooks are called through pluggy (``pm.subset_hook_caller``: the hook restricted to one
plugin), one plugin at a time, so a failure is attributed to its plugin and isolated.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy
from vt_api import KINDS, Registry, hookspecs

ENTRY_POINT_GROUP = "vt.plugins"
DISABLE_ENV = "VT_DISABLE_PLUGINS"
TRACE_ENVS = ("VT_TRACE_PLUGINS", "VT_TRACE_HOOKS")
"""``VT_TRACE_HOOKS`` is the older name, kept as an alias."""

# Built into the core: registered the same way as external plugins.
BUILTIN_PLUGINS = ("vtcore.transports.plugin",)


@dataclass
class PluginInfo:
    """What ``vt plugins list`` shows about one plugin."""

    name: str
    distribution: str
    version: str
    builtin: bool = False
    status: str = "loaded"
    error: str = ""
    provides: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "builtin": self.builtin,
            "kind": ",".join(self.kinds),
            "provides": self.provides,
            "status": self.status,
            "error": self.error,
        }


@dataclass
class Plugins:
    """The loaded plugin set: pluggy manager, registry and per-plugin report."""

    pm: pluggy.PluginManager
    registry: Registry
    infos: dict[str, PluginInfo]


def disabled_names() -> set[str]:
    raw = os.environ.get(DISABLE_ENV, "")
    return {n.strip() for n in raw.split(",") if n.strip()}


def _dist_of(ep: metadata.EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return ("?", "?")
    return (dist.metadata["Name"], dist.version)


def tracing() -> bool:
    return any(os.environ.get(name) for name in TRACE_ENVS)


def _describe(registry: Registry, plugin: str, info: PluginInfo) -> None:
    for kind, key, item in registry.records():
        if registry.owner.get((kind.name, key)) != plugin:
            continue
        info.provides.append(kind.provides(item))
        if kind.name not in info.kinds:
            info.kinds.append(kind.name)


def _trace(pm: pluggy.PluginManager) -> None:
    """pluggy's tracing, plus one line per call naming the plugin and how it ended."""
    pm.trace.root.setwriter(sys.stderr.write)
    pm.enable_tracing()

    def before(hook: str, impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, object]) -> None:
        names = ", ".join(i.plugin_name for i in impls)
        sys.stderr.write(f"vt hook: {hook}({', '.join(kwargs)}) -> {names}\n")

    def after(outcome: pluggy.Result[object], hook: str, impls: Sequence[pluggy.HookImpl],
              kwargs: Mapping[str, object]) -> None:
        exc = outcome.exception
        if exc is not None:
            names = ", ".join(i.plugin_name for i in impls)
            sys.stderr.write(f"vt hook: {hook} failed in plugin {names}: "
                             f"{type(exc).__name__}: {exc}\n")

    pm.add_hookcall_monitoring(before, after)


def implements(pm: pluggy.PluginManager, hook: str, plugin: object) -> bool:
    return any(i.plugin is plugin for i in getattr(pm.hook, hook).get_hookimpls())


def call_plugin(pm: pluggy.PluginManager, hook: str, plugin: object, **kwargs: object) -> None:
    """Call ``hook`` through pluggy in ``plugin`` alone (``subset_hook_caller``: tracing and
    hook call monitoring see the call), so whatever it raises is that plugin's."""
    others = [p for p in pm.get_plugins() if p is not plugin]
    pm.subset_hook_caller(hook, others)(**kwargs)


def call_each(pm: pluggy.PluginManager, hook: str,
              **kwargs: object) -> Iterator[tuple[str, Exception | None]]:
    """Call ``hook`` once per plugin implementing it, in registration order, yielding each
    plugin's name and what it raised (None when it did not)."""
    for name, plugin in list(pm.list_name_plugin()):
        if not implements(pm, hook, plugin):
            continue
        try:
            call_plugin(pm, hook, plugin, **kwargs)
        except Exception as exc:  # a plugin's bug is reported, never fatal to vt
            yield name, exc
        else:
            yield name, None


def load_plugins(extra: list[object] | None = None) -> Plugins:
    """Load built-in and entry-point plugins, then run the registration hooks."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    infos: dict[str, PluginInfo] = {}
    off = disabled_names()
    from vtcore import __version__

    for modname in BUILTIN_PLUGINS:
        short = modname.rsplit(".", 2)[-2]
        infos[short] = PluginInfo(short, "vtcore", __version__, builtin=True)
        if short in off:
            infos[short].status = "disabled"
            continue
        pm.register(importlib.import_module(modname), name=short)

    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist, version = _dist_of(ep)
        if ep.name in infos:  # two distributions claim one plugin name: the first keeps it
            infos[ep.name].error = (infos[ep.name].error or
                                    f"plugin name also claimed by {dist} {version} (ignored)")
            continue
        info = PluginInfo(ep.name, dist, version)
        infos[ep.name] = info
        if ep.name in off:
            info.status = "disabled"
            continue
        try:
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
        except Exception as exc:  # a broken plugin must not take the others down
            info.status = "error"
            info.error = f"{type(exc).__name__}: {exc}"
    for obj in extra or ():
        name = getattr(obj, "__name__", repr(obj))
        pm.register(obj, name=name)
        infos[name] = PluginInfo(name, "(in-process)", "")

    # A misspelt hook fails loudly: each offending plugin is reported and dropped.
    # check_pending() raises for one plugin at a time; each round removes one.
    for _ in range(len(infos) + 1):
        try:
            pm.check_pending()
            break
        except pluggy.PluginValidationError as exc:
            bad = getattr(exc, "plugin", None)
            name = pm.get_name(bad) if bad is not None else None
            if not name or name not in infos:
                raise
            pm.unregister(bad)
            infos[name].status = "error"
            infos[name].error = str(exc)

    if tracing():
        _trace(pm)

    registry = Registry()
    _register_all(pm, registry, infos)
    for name, info in infos.items():
        if info.status == "loaded":
            _describe(registry, name, info)
    return Plugins(pm, registry, infos)


def _register_all(pm: pluggy.PluginManager, registry: Registry, infos: dict[str, PluginInfo]) -> None:
    """Run each registration hook, plugin by plugin, so errors are attributed.

    A plugin whose registration fails contributes nothing: what it added before the error
    is taken back and it is unregistered (so it adds no commands either).
    """
    for name, plugin in list(pm.list_name_plugin()):
        registry.current_plugin = name
        for kind in KINDS:
            if not implements(pm, kind.hook, plugin):
                continue
            try:
                call_plugin(pm, kind.hook, plugin, registry=registry)
            except Exception as exc:  # RegistryError (a duplicate) or a bug in the plugin
                registry.forget(name)
                pm.unregister(name=name)
                info = infos.get(name)
                if info is not None:
                    info.status = "error"
                    info.error = f"{type(exc).__name__}: {exc}"
                break
    registry.current_plugin = ""
