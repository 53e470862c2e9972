"""Flask extensions, created unbound and attached to an app in :func:`init_app`.

The rate limiter is the exception: Flask-Limiter keeps its storage and key prefix on the
instance, so each app gets its own (see :func:`init_rate_limits`). Views declare their limits
with :func:`rate_limited`, naming the setting that holds the rate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import Flask, current_app, g, has_request_context, request, session
from flask_babel import Babel, force_locale, get_locale, get_translations
from flask_limiter import Limiter
from flask_login import LoginManager
from flask_wtf import CSRFProtect
from jinja2 import pass_eval_context
from jinja2.nodes import EvalContext
from markupsafe import Markup

SUPPORTED_LOCALES = ("en", "es")
RATE_LIMITS_ATTR = "portal_rate_limits"
F = TypeVar("F", bound=Callable[..., Any])

login_manager = LoginManager()
csrf = CSRFProtect()
babel = Babel()


def client_ip() -> str:
    # ProxyFix (PORTAL_TRUSTED_PROXIES) has already put the client's address here.
    return request.remote_addr or "unknown"


def account_key() -> str:
    """The account named in the submitted form, hashed (no email addresses in the limiter)."""
    email = request.form.get("email", "").strip().lower()
    brand = g.get("brand")
    digest = hashlib.sha256(f"{brand.id if brand else 0}:{email}".encode()).hexdigest()[:32]
    return f"account:{digest}"


KEY_FUNCTIONS: dict[str, Callable[[], str]] = {"ip": client_ip, "account": account_key}


@dataclass(frozen=True)
class RateLimit:
    setting: str
    per: str = "ip"
    methods: tuple[str, ...] | None = None


def rate_limited(
    setting: str, per: str = "ip", methods: tuple[str, ...] | None = None
) -> Callable[[F], F]:
    """Limit a view to the rate in config ``setting``, counted per client address or account."""
    if per not in KEY_FUNCTIONS:
        raise ValueError(f"unknown rate-limit key {per!r}")

    def decorator(view: F) -> F:
        limits = [*getattr(view, RATE_LIMITS_ATTR, ()), RateLimit(setting, per, methods)]
        setattr(view, RATE_LIMITS_ATTR, limits)
        return view

    return decorator


def init_rate_limits(app: Flask) -> Limiter:
    """A limiter for this app, wrapped around every view that declared limits."""
    limiter = Limiter(
        key_func=client_ip,
        app=app,
        storage_uri=app.config["PORTAL_RATELIMIT_STORAGE_URL"],
        key_prefix=app.config.get("RATELIMIT_KEY_PREFIX", "portal"),
        headers_enabled=True,
    )
    from portal.web.access import is_machine_request

    # a signed machine-to-machine route has no limits of its own: skip the limiter's per-request
    # bookkeeping for it (its caller is authenticated by the view, before anything is written)
    limiter.request_filter(is_machine_request)
    for endpoint, view in list(app.view_functions.items()):
        limited: Any = view
        for spec in getattr(view, RATE_LIMITS_ATTR, ()):
            limited = limiter.limit(
                _rate_from(spec.setting),
                key_func=KEY_FUNCTIONS[spec.per],
                methods=list(spec.methods) if spec.methods else None,
            )(limited)
        app.view_functions[endpoint] = limited
    app.extensions["portal_limiter"] = limiter
    return limiter


def _rate_from(setting: str) -> Callable[[], str]:
    return lambda: str(current_app.config[setting])


def select_locale() -> str | None:
    if not has_request_context():
        return None  # a worker or the CLI: the default language, unless forced for a mail
    chosen = session.get("locale")
    if chosen in SUPPORTED_LOCALES:
        return str(chosen)
    return request.accept_languages.best_match(SUPPORTED_LOCALES) or "en"


def _request_translations() -> Any:
    translations = g.get("_portal_translations")
    if translations is None:
        translations = g._portal_translations = get_translations()
    return translations


@contextmanager
def rendering_in(locale: str) -> Iterator[None]:
    """Render in another language for a moment (an email to someone else), then switch back."""
    saved = g.pop("_portal_translations", None)
    try:
        with force_locale(locale):
            yield
    finally:
        g.pop("_portal_translations", None)
        if saved is not None:
            g._portal_translations = saved


# Templates call these directly as ``_``, ``gettext`` and ``ngettext``. Jinja's own newstyle
# callables reach the catalogue through three ``Context.call``s and a ``resolve`` per string
# (``_`` -> "gettext" -> wrapper -> function), about 60 Python calls; these do in one call what
# the wrappers do: look the string up, mark it safe under autoescape, then format it with the
# keyword arguments (always, as newstyle gettext does, so "%%" reads "%" with or without them).


@pass_eval_context
def _template_gettext(eval_ctx: EvalContext, message: str, /, **variables: Any) -> str:
    translated: str = _request_translations().ugettext(message)
    if eval_ctx.autoescape:
        translated = Markup(translated)  # noqa: S704  (our catalogue, as Jinja's i18n does)
    if not variables and "%" not in translated:
        return translated  # what "% {}" would give, without the formatting machinery
    return translated % variables  # a Markup escapes the values


@pass_eval_context
def _template_ngettext(
    eval_ctx: EvalContext, singular: str, plural: str, number: int, /, **variables: Any
) -> str:
    variables.setdefault("num", number)
    translated: str = _request_translations().ungettext(singular, plural, number)
    if eval_ctx.autoescape:
        translated = Markup(translated)  # noqa: S704  (our catalogue, as Jinja's i18n does)
    return translated % variables  # a Markup escapes the values


def select_timezone() -> str:
    """Times are shown in the partner's time zone, the one its invoices and periods use."""
    brand = g.get("brand")
    return str(brand.timezone) if brand else "UTC"


def init_app(app: Flask) -> None:
    login_manager.init_app(app)
    # our server-side sessions already rotate at sign-in and die at sign-out
    login_manager.session_protection = None
    csrf.init_app(app)
    babel.init_app(app, locale_selector=select_locale, timezone_selector=select_timezone)
    # Flask-Babel's template gettext resolves context, domain and locale on every string; a
    # page has dozens, so templates look the catalogue up once per request and locale instead
    # (theme overlays share these globals). pgettext and npgettext stay Flask-Babel's.
    app.jinja_env.newstyle_gettext = True  # type: ignore[attr-defined]
    app.jinja_env.globals.update(
        _=_template_gettext, gettext=_template_gettext, ngettext=_template_ngettext
    )

    @app.context_processor
    def _locale_context() -> dict[str, str]:
        return {"current_locale": str(get_locale() or "en")}
