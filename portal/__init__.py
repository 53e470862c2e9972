"""CSP Portal: the Flask app factory."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from portal.core import config as portal_config
from portal.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["create_app", "hookimpl"]


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the portal. ``config`` overrides what the environment says (tests use it)."""
    app = Flask(
        __name__,
        template_folder=str(portal_config.ROOT / "templates"),
        static_folder=str(portal_config.ROOT / "static"),
        instance_path=str(portal_config.INSTANCE_DIR),
    )
    app.config.update(portal_config.load())
    if config:
        app.config.update(config)
    portal_config.finalise(app.config)
    _configure_flask(app)

    from portal import cli, plugins
    from portal.core import db, extensions
    from portal.features.identity import audit, login
    from portal.features.identity.session_store import DatabaseSessionInterface
    from portal.features.tenancy.branding import brand, themes
    from portal.web import access, csrf, errors, filters, rate_limits, security_headers

    db.init_app(app)
    app.session_interface = DatabaseSessionInterface(
        idle=timedelta(minutes=app.config["PORTAL_SESSION_IDLE_MINUTES"]),
        absolute=timedelta(hours=app.config["PORTAL_SESSION_ABSOLUTE_HOURS"]),
    )
    extensions.init_app(app)
    csrf.init_app(app)
    brand.init_app(app)
    audit.init_app(app)
    access.init_app(app)
    login.init_app(app)
    security_headers.init_app(app)
    errors.init_app(app)
    filters.init_app(app)
    _register_blueprints(app)
    plugins.init_app(app)
    rate_limits.init_rate_limits(app)
    themes.init_app(app)
    cli.init_app(app)
    access.check_every_route_declares_access(app)
    if app.config["PORTAL_TRUSTED_PROXIES"]:
        hops = app.config["PORTAL_TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]
    return app


def _configure_flask(app: Flask) -> None:
    insecure = bool(app.config["PORTAL_INSECURE_COOKIES"])
    app.config.update(
        # __Host- demands Secure and Path=/ with no Domain; plain-http development drops both
        SESSION_COOKIE_NAME="portal_session" if insecure else "__Host-portal_session",
        SESSION_COOKIE_SECURE=not insecure,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_PATH="/",
        SESSION_COOKIE_DOMAIN=None,
        REMEMBER_COOKIE_DURATION=timedelta(0),
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the (bounded) server session
        WTF_CSRF_SSL_STRICT=True,
        BABEL_DEFAULT_LOCALE="en",
        BABEL_TRANSLATION_DIRECTORIES=str(portal_config.ROOT / "translations"),
        MAX_CONTENT_LENGTH=2 * 1024 * 1024,
        PREFERRED_URL_SCHEME="https" if not insecure else "http",
    )


def _register_blueprints(app: Flask) -> None:
    from portal.features.billing.contract_views import bp as staff_contracts_bp
    from portal.features.billing.staff_views import bp as staff_billing_bp
    from portal.features.billing.views import bp as invoices_bp
    from portal.features.catalogue.staff_views import bp as staff_catalogue_bp
    from portal.features.identity.account_views import bp as account_bp
    from portal.features.identity.staff_views import bp as staff_auth_bp
    from portal.features.identity.views import bp as auth_bp
    from portal.features.licences.staff_views import bp as staff_licences_bp
    from portal.features.licences.views import bp as subscriptions_bp
    from portal.features.onboarding.staff_views import bp as staff_onboarding_bp
    from portal.features.payments.views import bp as payments_bp
    from portal.features.payments.views import links as card_links_bp
    from portal.features.tenancy.branding.views import bp as branding_bp
    from portal.features.tenancy.staff_views import bp as staff_settings_bp
    from portal.home.staff_views import bp as staff_bp
    from portal.home.views import bp as pages_bp

    for blueprint in (
        branding_bp,
        auth_bp,
        pages_bp,
        account_bp,
        subscriptions_bp,
        invoices_bp,
        payments_bp,
        card_links_bp,
        staff_auth_bp,
        staff_bp,
        staff_catalogue_bp,
        staff_licences_bp,
        staff_billing_bp,
        staff_contracts_bp,
        staff_onboarding_bp,
        staff_settings_bp,
    ):
        app.register_blueprint(blueprint)
