"""Plugins: Python modules found through the entry point group ``vesalius.plugins`` or listed
in the ``plugins`` setting, loaded once per process.

A plugin is a module with a ``setup(plugin)`` function; *plugin* is a :class:`PluginContext`
through which it subscribes to events, filters incoming instances, adds HTTP routes under
``/plugins/<name>/`` (behind the permission table), adds study hooks, and reaches the
container. Job kinds and periodic jobs are registered with :mod:`vesalius.jobs` (at import or
in ``setup``). A module attribute ``cli`` (a ``typer.Typer``) becomes ``vesalius <name> ...``.

Shipped with Vesalius and loaded first: ``vesalius.auth.audit_plugin`` (the audit trail:
writes every ``Accessed`` event), ``vesalius.records.plugin`` (a new study gives its research
subject an imaging session) and ``vesalius.routing`` (``[[route]]`` forwarding and study
completeness). See ``docs/plugins.md`` for a complete example.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

from vesalius.config import Settings

log = logging.getLogger(__name__)

GROUP = "vesalius.plugins"
BUILTIN = (
    ("audit", "vesalius.auth.audit_plugin"),
    ("records", "vesalius.records.plugin"),
    ("routing", "vesalius.routing"),
)
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class PluginError(Exception):
    """A plugin cannot be loaded or set up; the message names it and says what is wrong."""


@dataclass
class PluginContext:
    """What a plugin's ``setup`` receives."""

    name: str
    container: Any
    routers: list[Any] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return self.container.settings  # type: ignore[no-any-return]

    def subscribe(
        self, event_type: type, handler: Callable[[Any], Any], *, inline: bool = False
    ) -> None:
        """Call *handler* after commit with every event of *event_type* (isolated); *inline*:
        in the publisher's thread, never dropped (see ``EventBus.subscribe``)."""
        label = f"{self.name}.{getattr(handler, '__name__', 'handler')}"
        self.container.events.subscribe(event_type, handler, label, inline=inline)

    def add_filter(self, instance_filter: Callable[[Any], Any]) -> None:
        """Call *instance_filter* before each instance is stored (accept, Reject, Replace)."""
        self.container.archive.add_filter(self.name, instance_filter)

    def add_study_hook(self, hook: Callable[[Any, Any], None]) -> None:
        """Run *hook(session, new_study)* in the transaction of each new study's first
        instance (isolated in a savepoint; a failure is replayed as a job)."""
        self.container.archive.add_study_hook(self.name, hook)

    def add_routes(
        self,
        router: Any,
        *,
        read: Any = None,
        write: Any = None,
        action: str | None = None,
    ) -> None:
        """Serve *router* (a FastAPI ``APIRouter``) under ``/plugins/<name>``.

        *read* is the permission for GET and HEAD, *write* for POST, PUT, PATCH and DELETE
        (``vesalius.auth.permissions.Permission``); a method without one is refused to
        everyone. *action* names the audit event the requests write.
        """
        from vesalius.auth.permissions import add_plugin_rule

        prefix = f"/plugins/{self.name}"
        for pattern in (prefix, prefix + "/*"):
            if read is not None:
                add_plugin_rule("GET HEAD", pattern, read, action)
            if write is not None:
                add_plugin_rule("POST PUT PATCH DELETE", pattern, write, action)
        self.routers.append((prefix, router))


def discover(settings: Settings) -> list[tuple[str, str, str]]:
    """(name, module, source) of every plugin to load: shipped, entry points, settings,
    less those the ``disabled_plugins`` setting names."""
    found: list[tuple[str, str, str]] = [(name, module, "shipped") for name, module in BUILTIN]
    for point in entry_points(group=GROUP):
        found.append((point.name, point.value.split(":")[0], "entry point"))
    for module in settings.plugins:
        found.append((module.rsplit(".", 1)[-1], module, "settings"))
    disabled = {name.lower() for name in settings.disabled_plugins}
    seen: set[str] = set()
    unique = []
    for name, module, source in found:
        name = name.lower().replace(".", "-")
        if module not in seen and name not in disabled:
            seen.add(module)
            unique.append((name, module, source))
    return unique


@dataclass(frozen=True)
class Plugin:
    name: str
    module: ModuleType
    source: str


def load(settings: Settings) -> list[Plugin]:
    """Import every plugin; raises PluginError naming the first that cannot be imported."""
    plugins = []
    for name, module_path, source in discover(settings):
        if not _NAME.match(name):
            raise PluginError(
                f"plugin name {name!r} ({module_path}) must be lower-case letters, digits, "
                "- and _ (it is part of URLs and commands)"
            )
        try:
            module = importlib.import_module(module_path)
        except Exception as exc:
            hint = (
                " (remove it from the plugins setting, or install it)"
                if source == "settings"
                else " (reinstall or uninstall the package that declares it)"
            )
            raise PluginError(
                f"plugin {name!r} ({module_path}, from the {source}) cannot be loaded: "
                f"{type(exc).__name__}: {exc}{hint}"
            ) from exc
        plugins.append(Plugin(name, module, source))
    return plugins


def setup(plugins: list[Plugin], container: Any) -> list[PluginContext]:
    """Call each plugin's ``setup(context)``; a plugin that raises here stops the start."""
    contexts = []
    for plugin in plugins:
        context = PluginContext(plugin.name, container)
        hook = getattr(plugin.module, "setup", None)
        if hook is not None:
            try:
                hook(context)
            except Exception as exc:
                raise PluginError(
                    f"plugin {plugin.name!r} failed to set up: {type(exc).__name__}: {exc}"
                ) from exc
        contexts.append(context)
        log.info("plugin %s loaded (%s)", plugin.name, plugin.source)
    container.plugins = contexts
    return contexts


def load_and_setup(container: Any) -> list[PluginContext]:
    """Load every plugin of the container's settings and set it up (once per container)."""
    return setup(load(container.settings), container)


def cli_apps(settings: Settings) -> list[tuple[str, Any]]:
    """(name, typer app) of plugins that bring commands; plugins that fail are skipped."""
    apps = []
    for name, module_path, _source in discover(settings):
        try:
            module = importlib.import_module(module_path)
        except Exception as exc:
            log.warning("plugin %s cannot be loaded: %s", name, exc)
            continue
        app = getattr(module, "cli", None)
        if app is not None:
            apps.append((name, app))
    return apps
