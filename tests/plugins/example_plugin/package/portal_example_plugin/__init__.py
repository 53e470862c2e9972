"""An example third-party plugin: a page at ``/p/example/hello`` for signed-in customers, an
entry for it in the main navigation, and a name for every template."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask
from flask_babel import lazy_gettext as _l

from portal.core.roles import Permission
from portal.features.tenancy.branding.themes import render_page
from portal.hookspecs import hookimpl
from portal.integrations.ui import NavItem
from portal.web.access import customer_required

bp = Blueprint("example", __name__, template_folder="templates")


@bp.route("/hello")
@customer_required(Permission.VIEW_DASHBOARD)
def hello() -> str:
    return render_page("example/hello.html")


@hookimpl
def portal_blueprints(app: Flask) -> Blueprint:
    return bp


@hookimpl
def portal_nav_items() -> list[NavItem]:
    return [NavItem(str(_l("Example")), "example.hello", Permission.VIEW_DASHBOARD)]


@hookimpl
def portal_template_context() -> dict[str, Any]:
    return {"example_greeting": "Hello from the example plugin"}
