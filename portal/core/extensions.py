"""Flask extensions, created unbound and attached to an app in :func:`init_app`: sign-in
and Babel, with the request's language and time zone, and :func:`rendering_in` (a mail in
another language). The rate limiter and CSRF protection are web plumbing's
(:mod:`portal.web.rate_limits`, :mod:`portal.web.csrf`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask, g, has_request_context, request, session
from flask_babel import Babel, force_locale, get_locale, get_translations
from flask_login import LoginManager
from jinja2 import pass_eval_context
from jinja2.nodes import EvalContext
from markupsafe import Markup

SUPPORTED_LOCALES = ("en", "es")

login_manager = LoginManager()
babel = Babel()


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
