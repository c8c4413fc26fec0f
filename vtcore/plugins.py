"""Plugin discovery: entry points loaded one at a time, so one broken plugin is reported
while the rest work.

``VT_DISABLE_PLUGINS=name,name`` turns named plugins off (entry-point names, e.g.
``lzo``); ``VT_TRACE_HOOKS=1`` prints every hook call to stderr.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from vtcore import hookspecs
from vtcore.api import Registry

ENTRY_POINT_GROUP = "vt.plugins"
DISABLE_ENV = "VT_DISABLE_PLUGINS"
TRACE_ENV = "VT_TRACE_HOOKS"

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


def _describe(registry: Registry, plugin: str, info: PluginInfo) -> None:
    for (kind, name), owner in registry.owner.items():
        if owner != plugin:
            continue
        if kind == "device":
            dev = registry.devices[name]
            info.provides.append(f"type {dev.tunnel_type}")
        elif kind == "transport":
            info.provides.append(f"proto {name}")
        elif kind == "secure mode":
            mode = registry.secure_modes[name]
            info.provides.append("encrypt " + "|".join(sorted(mode.words)) + " (secure mode)")
        else:
            mod = registry.frame_modules[name]
            info.provides.append(mod.describe or f"{mod.keyword} {name}")
        if kind not in info.kinds:
            info.kinds.append(kind)


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

    if os.environ.get(TRACE_ENV):
        pm.trace.root.setwriter(sys.stderr.write)
        pm.enable_tracing()

    registry = Registry()
    _register_all(pm, registry, infos)
    for name, info in infos.items():
        if info.status == "loaded":
            _describe(registry, name, info)
    return Plugins(pm, registry, infos)


def _register_all(pm: pluggy.PluginManager, registry: Registry, infos: dict[str, PluginInfo]) -> None:
    """Call each registration hook plugin by plugin, so errors are attributed.

    A plugin whose registration fails contributes nothing: what it added before the error
    is taken back and it is unregistered (so it adds no commands either).
    """
    hooks = ("vt_register_devices", "vt_register_transports", "vt_register_frame_modules",
             "vt_register_secure_modes")
    impls = {
        hook: {i.plugin_name: i.function for i in getattr(pm.hook, hook).get_hookimpls()}
        for hook in hooks
    }
    trace = sys.stderr.write if os.environ.get(TRACE_ENV) else None
    for name, _plugin in list(pm.list_name_plugin()):
        registry.current_plugin = name
        for hook in hooks:
            impl = impls[hook].get(name)
            if impl is None:
                continue
            if trace:
                trace(f"vt hook: {hook}(registry) -> {name}\n")
            try:
                impl(registry=registry)
            except Exception as exc:  # RegistryError (a duplicate) or a bug in the plugin
                _forget(registry, name)
                pm.unregister(name=name)
                info = infos.get(name)
                if info is not None:
                    info.status = "error"
                    info.error = f"{type(exc).__name__}: {exc}"
                break
    registry.current_plugin = ""


def _forget(registry: Registry, plugin: str) -> None:
    tables = {"device": registry.devices, "transport": registry.transports,
              "frame module": registry.frame_modules, "secure mode": registry.secure_modes}
    for (kind, item), owner in list(registry.owner.items()):
        if owner == plugin:
            del tables[kind][item]
            del registry.owner[(kind, item)]
