"""Flask extensions, created unbound and attached to an app in :func:`init_app`."""

from __future__ import annotations

from flask import Flask, request, session
from flask_babel import Babel, get_locale
from flask_limiter import Limiter
from flask_login import LoginManager
from flask_wtf import CSRFProtect

SUPPORTED_LOCALES = ("en", "es")


def client_ip() -> str:
    # ProxyFix (PORTAL_TRUSTED_PROXIES) has already put the client's address here.
    return request.remote_addr or "unknown"


login_manager = LoginManager()
csrf = CSRFProtect()
babel = Babel()
limiter = Limiter(key_func=client_ip, default_limits=[], headers_enabled=True)


def select_locale() -> str | None:
    chosen = session.get("locale")
    if chosen in SUPPORTED_LOCALES:
        return str(chosen)
    return request.accept_languages.best_match(SUPPORTED_LOCALES) or "en"


def init_app(app: Flask) -> None:
    login_manager.init_app(app)
    # our server-side sessions already rotate at sign-in and die at sign-out
    login_manager.session_protection = None
    csrf.init_app(app)
    babel.init_app(app, locale_selector=select_locale)
    app.config["RATELIMIT_STORAGE_URI"] = app.config["PORTAL_RATELIMIT_STORAGE_URL"]
    app.config.setdefault("RATELIMIT_ENABLED", True)
    limiter.init_app(app)

    @app.context_processor
    def _locale_context() -> dict[str, str]:
        return {"current_locale": str(get_locale() or "en")}
