"""Per-partner theme folders: ``PORTAL_THEMES_DIR/<slug>/templates`` and ``/static``.

A theme's templates override the defaults through a Jinja overlay environment made for that
partner; an override can extend the original as ``{% extends "default:<name>" %}``. Staff
pages render with the app's own environment and a theme can never replace them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from flask import Flask, current_app, url_for
from flask.signals import before_render_template, template_rendered
from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    PrefixLoader,
    TemplateNotFound,
)

from portal.features.tenancy.branding.brand import Brand, current_brand

PROTECTED_PREFIXES = ("staff/",)
# a brand file uploaded by staff (the logo) is named ``uploaded/<name>`` and lives in
# ``PORTAL_BRAND_UPLOADS_DIR/<slug>/<name>``, served at ``/theme/uploaded/<name>`` like a
# theme file; a theme's own files never answer for that prefix
UPLOADED_PREFIX = "uploaded/"


class _PortalOnlyLoader(BaseLoader):
    """A theme's templates, minus anything under a protected prefix (the staff area)."""

    def __init__(self, path: Path) -> None:
        self._inner = FileSystemLoader(str(path))

    def get_source(
        self, environment: Environment, template: str
    ) -> tuple[str, str | None, Callable[[], bool] | None]:
        if template.startswith(PROTECTED_PREFIXES):
            raise TemplateNotFound(template)
        return self._inner.get_source(environment, template)

    def list_templates(self) -> list[str]:
        return [t for t in self._inner.list_templates() if not t.startswith(PROTECTED_PREFIXES)]


class Themes:
    def __init__(self, app: Flask) -> None:
        self.app = app
        configured = app.config["PORTAL_THEMES_DIR"]
        self.root = Path(configured).resolve() if configured else None
        self.uploads_root = uploads_root(app)
        self._environments: dict[str, Environment] = {}
        self._static_hits: dict[tuple[str, str], bool] = {}

    def theme_dir(self, slug: str) -> Path | None:
        if self.root is None:
            return None
        path = (self.root / slug).resolve()
        return path if path.is_dir() and path.parent == self.root else None

    def environment(self, slug: str) -> Environment:
        env = self._environments.get(slug)
        if env is None:
            env = self._build(slug)
            self._environments[slug] = env
        return env

    def _build(self, slug: str) -> Environment:
        base = self.app.jinja_env
        theme = self.theme_dir(slug)
        if theme is None or not (theme / "templates").is_dir():
            return base
        assert base.loader is not None
        loader = ChoiceLoader(
            [
                _PortalOnlyLoader(theme / "templates"),
                PrefixLoader({"default": base.loader}, delimiter=":"),
                base.loader,
            ]
        )
        return base.overlay(loader=loader)

    def static_path(self, slug: str, filename: str) -> Path | None:
        if filename.startswith(UPLOADED_PREFIX):
            return _inside(self.uploads_root / slug, filename.removeprefix(UPLOADED_PREFIX))
        theme = self.theme_dir(slug)
        if theme is None:
            return None
        return _inside(theme / "static", filename)

    def has_static(self, slug: str, filename: str) -> bool:
        key = (slug, filename)
        if key not in self._static_hits:
            self._static_hits[key] = self.static_path(slug, filename) is not None
        return self._static_hits[key]


def _inside(folder: Path, filename: str) -> Path | None:
    """``folder/filename`` when it is a file inside ``folder`` (no ``..`` escapes)."""
    root = folder.resolve()
    candidate = (root / filename).resolve()
    if root not in candidate.parents or not candidate.is_file():
        return None
    return candidate


def uploads_root(app: Flask) -> Path:
    """Where uploaded brand files live: ``PORTAL_BRAND_UPLOADS_DIR``, else ``<instance>/brands``."""
    configured = app.config.get("PORTAL_BRAND_UPLOADS_DIR")
    return Path(configured).resolve() if configured else Path(app.instance_path) / "brands"


def init_app(app: Flask) -> None:
    app.extensions["portal_themes"] = Themes(app)
    app.jinja_env.globals["brand_static"] = brand_static


def themes() -> Themes:
    return cast(Themes, current_app.extensions["portal_themes"])


def brand_static(filename: str) -> str:
    """URL of a static file, taken from the partner's theme when it has one of that name."""
    brand: Brand = current_brand()
    if themes().has_static(brand.slug, filename):
        return url_for("branding.theme_static", filename=filename)
    return url_for("static", filename=filename)


def render_page(template_name: str, **context: Any) -> str:
    """Render a customer-facing page through the current partner's theme."""
    app = cast(Flask, current_app._get_current_object())  # type: ignore[attr-defined]
    env = themes().environment(current_brand().slug)
    template = env.get_or_select_template(template_name)
    app.update_template_context(context)
    before_render_template.send(
        app, _async_wrapper=app.ensure_sync, template=template, context=context
    )
    rendered = template.render(context)
    template_rendered.send(app, _async_wrapper=app.ensure_sync, template=template, context=context)
    return rendered
