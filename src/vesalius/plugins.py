"""Plugins: Python modules found through the entry point group ``vesalius.plugins`` or
listed in the ``plugins`` setting, loaded once per process at start.

A plugin registers what it brings when it is imported (job kinds with
:func:`vesalius.jobs.job`, periodic jobs with :func:`vesalius.jobs.schedule`) and, when it
defines ``setup(container)``, is called with the process's open container.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

from vesalius.config import Settings

log = logging.getLogger(__name__)

GROUP = "vesalius.plugins"


class PluginError(Exception):
    """A plugin cannot be loaded; the message names it and says what is wrong."""


@dataclass(frozen=True)
class Plugin:
    name: str
    module: ModuleType
    source: str  # "entry point" or "settings"


def discover(settings: Settings) -> list[tuple[str, str, str]]:
    """(name, module path, source) of every plugin to load, entry points first."""
    found: list[tuple[str, str, str]] = []
    for point in entry_points(group=GROUP):
        found.append((point.name, point.value.split(":")[0], "entry point"))
    for module in settings.plugins:
        found.append((module.rsplit(".", 1)[-1], module, "settings"))
    seen: set[str] = set()
    unique = []
    for name, module, source in found:
        if module not in seen:
            seen.add(module)
            unique.append((name, module, source))
    return unique


def load(settings: Settings) -> list[Plugin]:
    """Import every plugin; raises PluginError naming the first that cannot be imported."""
    plugins = []
    for name, module_path, source in discover(settings):
        try:
            module = importlib.import_module(module_path)
        except Exception as exc:
            raise PluginError(
                f"plugin {name!r} ({module_path}, from the {source}) cannot be loaded: "
                f"{type(exc).__name__}: {exc}"
                + (
                    " (remove it from the plugins setting or install it)"
                    if source == "settings"
                    else ""
                )
            ) from exc
        plugins.append(Plugin(name, module, source))
    return plugins


def setup(plugins: list[Plugin], container: Any) -> None:
    """Call each plugin's ``setup(container)``; a plugin that raises here stops the start."""
    for plugin in plugins:
        hook = getattr(plugin.module, "setup", None)
        if hook is None:
            continue
        try:
            hook(container)
        except Exception as exc:
            raise PluginError(
                f"plugin {plugin.name!r} failed to set up: {type(exc).__name__}: {exc}"
            ) from exc
        log.info("plugin %s loaded (%s)", plugin.name, plugin.source)
