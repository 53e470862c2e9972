"""Building the plugin manager of one app.

Core defaults are always registered. Other plugins load only when named in ``PORTAL_PLUGINS``:
first-party ones from the repository's ``plugins/`` folder (and any folder in
``PORTAL_PLUGIN_PATHS``), third-party ones from the entry-point group ``portal.plugins``. A
plugin that is installed but not named is never imported.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import pluggy
from flask import Blueprint, Flask, current_app

from portal.core.config import ROOT
from portal.hookspecs import PROJECT, accounting, notifications, payments, providers
from portal.hookspecs import app as app_hooks
from portal.integrations.registry import Integrations, PluginError, _as_list, _results
from portal.outbox.handlers import Wiring, wire

ENTRY_POINT_GROUP = "portal.plugins"
FIRST_PARTY_DIR = ROOT / "plugins"
# the core's own hook implementations, registered in every app like any plugin
CORE_PLUGINS: tuple[str, ...] = (
    "portal.default_plugin.schedule",
    "portal.default_plugin.outbox_kinds",
    "portal.default_plugin.payments",
)
# What a plugin may import of the portal, the one list (docs/plugins.md says the same, and a
# test holds every first-party plugin to it). "x.*" is a package and everything in it.
PUBLIC_SURFACE: tuple[str, ...] = (
    "portal",  # hookimpl
    "portal.hookspecs",
    "portal.integrations.*",  # the adapters' contracts, events, results, the registry
    "portal.testing.*",  # fixtures, fake servers, contract suites for the plugin's tests
    "portal.plugins",  # plugin_settings
    "portal.web.access",  # the access decorators a plugin's blueprint needs
    "portal.outbox.*",  # enqueue, the handler contract, OutboxItem
    "portal.core.db",  # Base, the session, column types
    "portal.core.config",
    "portal.core.roles",  # Permission, for nav items and access decorators
    "portal.core.money",
    "portal.features.tenancy.branding",  # render_page: a page in the partner's theme
)
# every module of hook specifications
SPEC_MODULES: tuple[ModuleType, ...] = (app_hooks, providers, payments, accounting, notifications)
NAME = re.compile(r"[a-z][a-z0-9_]*")
SECRET_NAME = re.compile(r"secret|key|token|password|dsn", re.IGNORECASE)


@dataclass(frozen=True)
class PluginInfo:
    """What ``flask portal plugins`` shows of a loaded plugin."""

    name: str
    version: str
    source: str
    module: str
    hooks: tuple[str, ...]
    settings: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Candidate:
    name: str
    source: str
    load: Callable[[], ModuleType]
    version: Callable[[], str]


def enabled_names(raw: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """``PORTAL_PLUGINS`` as a list: names separated by commas or spaces, each at most once."""
    if not raw:
        return []
    names = [n for n in re.split(r"[,\s]+", raw) if n] if isinstance(raw, str) else list(raw)
    for name in names:
        if not NAME.fullmatch(name):
            raise PluginError(f"PORTAL_PLUGINS: {name!r} is not a plugin name (a-z, 0-9, _)")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise PluginError(f"PORTAL_PLUGINS names {', '.join(duplicates)} more than once")
    return names


def _folder_candidates(folder: Path) -> dict[str, _Candidate]:
    found: dict[str, _Candidate] = {}
    if not folder.is_dir():
        return found
    for project in sorted(folder.iterdir()):
        package = project / project.name / "__init__.py"
        if not (project / "pyproject.toml").is_file() or not package.is_file():
            continue
        found[project.name] = _Candidate(
            project.name,
            f"first-party ({project})",
            load=partial(_import_from, project),
            version=partial(_project_version, project),
        )
    return found


def _import_from(project: Path) -> ModuleType:
    if str(project) not in sys.path:
        sys.path.insert(0, str(project))
    return importlib.import_module(project.name)


def _project_version(project: Path) -> str:
    data = tomllib.loads((project / "pyproject.toml").read_text())
    return str(data.get("project", {}).get("version", "unknown"))


def _entry_point_candidates() -> dict[str, _Candidate]:
    found: dict[str, _Candidate] = {}
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = entry.dist
        found[entry.name] = _Candidate(
            entry.name,
            f"entry point ({dist.name if dist else entry.value})",
            load=partial(_load_entry_point, entry),
            version=partial(_distribution_version, dist),
        )
    return found


def _load_entry_point(entry: importlib.metadata.EntryPoint) -> ModuleType:
    return cast(ModuleType, entry.load())


def _distribution_version(dist: importlib.metadata.Distribution | None) -> str:
    return dist.version if dist else "unknown"


def discover(extra_paths: str = "") -> dict[str, _Candidate]:
    """Every plugin that could be loaded, by name. Nothing is imported here."""
    candidates = _folder_candidates(FIRST_PARTY_DIR)
    for folder in filter(None, extra_paths.split(os.pathsep)):
        candidates.update(_folder_candidates(Path(folder)))
    # an installed distribution (first-party ones are installed editable) wins: it has metadata
    candidates.update(_entry_point_candidates())
    return candidates


def build_plugin_manager(app: Flask) -> pluggy.PluginManager:
    pm = pluggy.PluginManager(PROJECT)
    for module in SPEC_MODULES:
        pm.add_hookspecs(module)
    for dotted in CORE_PLUGINS:
        pm.register(importlib.import_module(dotted), name=f"core:{dotted.rsplit('.', 1)[-1]}")
    names = enabled_names(app.config.get("PORTAL_PLUGINS"))
    available = discover(app.config.get("PORTAL_PLUGIN_PATHS", ""))
    infos: dict[str, PluginInfo] = {}
    for name in names:
        candidate = available.get(name)
        if candidate is None:
            known = ", ".join(sorted(available)) or "none"
            raise PluginError(
                f"PORTAL_PLUGINS names {name!r}, which is not installed (available: {known})"
            )
        module = candidate.load()
        pm.register(module, name=name)
        infos[name] = PluginInfo(
            name=name,
            version=candidate.version(),
            source=candidate.source,
            module=module.__name__,
            hooks=tuple(sorted(h.name for h in pm.get_hookcallers(module) or [])),
            settings=masked(plugin_settings(app, name)),
        )
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as error:
        raise PluginError(f"a plugin implements a hook that does not exist: {error}") from error
    app.extensions["portal_plugin_infos"] = infos
    return pm


def init_app(app: Flask) -> Integrations:
    pm = build_plugin_manager(app)
    app.extensions["portal_plugin_manager"] = pm
    integrations = Integrations.collect(pm, app)
    app.extensions["portal_integrations"] = integrations
    wire(
        app,
        Wiring(
            handlers=integrations.outbox_handlers,
            beat_schedule=integrations.beat_schedule,
            periodic_jobs=integrations.periodic_jobs,
        ),
    )
    _mount_blueprints(app, pm)
    pm.hook.portal_startup(app=app)
    return integrations


def _mount_blueprints(app: Flask, pm: pluggy.PluginManager) -> None:
    for plugin, result in _results(pm, "portal_blueprints", app=app):
        for blueprint in _as_list(result):
            if not isinstance(blueprint, Blueprint):
                raise PluginError(
                    f"plugin {plugin!r} returned {blueprint!r} from "
                    "portal_blueprints; expected a Flask Blueprint"
                )
            app.register_blueprint(blueprint, url_prefix=f"/p/{plugin}")


def plugin_settings(app: Flask | None, name: str) -> dict[str, str]:
    """``PORTAL_<NAME>_*`` variables (and test overrides) as ``{"<SETTING>": value}``."""
    config = (app or current_app).config
    prefix = f"PORTAL_{name.upper()}_"
    settings = {k.removeprefix(prefix): v for k, v in os.environ.items() if k.startswith(prefix)}
    settings.update(config.get("PORTAL_PLUGIN_SETTINGS", {}).get(name, {}))
    return settings


def masked(settings: Mapping[str, Any]) -> dict[str, str]:
    return {k: ("••••••" if SECRET_NAME.search(k) and v else str(v)) for k, v in settings.items()}


def plugin_infos(app: Flask | None = None) -> dict[str, PluginInfo]:
    return cast(dict[str, PluginInfo], (app or current_app).extensions["portal_plugin_infos"])


def is_public(module: str) -> bool:
    """Whether a plugin may import ``module`` (see :data:`PUBLIC_SURFACE`)."""
    for entry in PUBLIC_SURFACE:
        if entry.endswith(".*"):
            package = entry.removesuffix(".*")
            if module == package or module.startswith(f"{package}."):
                return True
        elif module == entry:
            return True
    return False
