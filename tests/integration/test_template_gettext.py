"""Templates' ``_``, ``gettext`` and ``ngettext`` are direct functions over the catalogue cached
for the request; they must give exactly what Jinja's own newstyle gettext gives (escaping of
the values, "%%", plurals and ``num``), follow the language switch, and serve theme templates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from jinja2 import Environment
from markupsafe import Markup

from portal.core.extensions import _request_translations, rendering_in
from tests.support import HttpsClient, Tenant

SOURCES = [
    "{{ _('Account') }}",
    "{{ gettext('Account') }}",
    "{{ _('Welcome, %(name)s', name=name) }}",
    "{{ _('Welcome, %(name)s', name=safe) }}",
    "{{ _('not in the catalogue: 100%%') }}",
    "{{ _('not in the catalogue: 100%% of %(name)s', name=name) }}",
    "{{ _('not in the catalogue: <b>bold</b> & more') }}",
    "{{ ngettext('%(num)d day', '%(num)d days', 1) }}",
    "{{ ngettext('%(num)d day', '%(num)d days', days) }}",
    "{{ ngettext('%(num)d day', '%(num)d days', days, num=7) }}",
    "{{ ngettext('%(num)d day for %(name)s', '%(num)d days for %(name)s', 2, name=name) }}",
    "{{ _('Welcome, %(name)s', name=name)|length }}",
    "{% autoescape false %}{{ _('Welcome, %(name)s', name=name) }}{% endautoescape %}",
    "{% autoescape false %}{{ ngettext('%(num)d day', '%(num)d days', 2) }}{% endautoescape %}",
]
CONTEXT: dict[str, Any] = {
    "name": "<script>alert('x')</script> & Sons",
    "safe": Markup("<em>Ana</em>"),
    "days": 30,
}


def _jinja_newstyle(app: Flask) -> Environment:
    """Jinja's own i18n extension, newstyle, over the same cached catalogue."""
    reference = Environment(autoescape=True, extensions=["jinja2.ext.i18n"])
    reference.install_gettext_callables(  # type: ignore[attr-defined]
        lambda message: _request_translations().ugettext(message),
        lambda singular, plural, n: _request_translations().ungettext(singular, plural, n),
        newstyle=True,
    )
    return reference


@pytest.mark.parametrize("language", ["en", "es"])
@pytest.mark.parametrize("source", SOURCES)
def test_template_gettext_renders_as_jinja_newstyle_gettext(
    app: Flask, tenant: Tenant, language: str, source: str
) -> None:
    reference = _jinja_newstyle(app)
    headers = {"Host": tenant.host, "Accept-Language": language}
    with app.test_request_context("/", headers=headers):
        ours = app.jinja_env.from_string(source).render(CONTEXT)
        theirs = reference.from_string(source).render(CONTEXT)
    assert ours == theirs


def test_values_are_escaped_and_spanish_is_used(app: Flask, tenant: Tenant) -> None:
    headers = {"Host": tenant.host, "Accept-Language": "es"}
    with app.test_request_context("/", headers=headers):
        template = app.jinja_env.from_string(
            "{{ _('Welcome, %(name)s', name=name) }}|"
            "{{ ngettext('%(num)d day', '%(num)d days', 2) }}"
        )
        html = template.render(name="<b>Ana</b>")
    assert html == "Hola, &lt;b&gt;Ana&lt;/b&gt;|2 días"


def test_rendering_in_another_language_and_back(app: Flask, tenant: Tenant) -> None:
    headers = {"Host": tenant.host, "Accept-Language": "en"}
    template = "{{ _('Account') }}"
    with app.test_request_context("/", headers=headers):
        assert app.jinja_env.from_string(template).render() == "Account"
        with rendering_in("es"):
            assert app.jinja_env.from_string(template).render() == "Cuenta"
        assert app.jinja_env.from_string(template).render() == "Account"


def test_theme_templates_translate_through_the_overlay(
    app_factory: Any, tmp_path: Path, tenant: Tenant
) -> None:
    templates = tmp_path / "alpha" / "templates" / "auth"
    templates.mkdir(parents=True)
    (templates / "login.html").write_text(
        '{% extends "default:auth/login.html" %}'
        "{% block card %}<p class=\"theme-note\">{{ _('Account') }} · "
        "{{ ngettext('%(num)d day', '%(num)d days', 7) }}</p>{{ super() }}{% endblock %}"
    )
    app = app_factory(PORTAL_THEMES_DIR=str(tmp_path))
    client: HttpsClient = app.test_client()
    spanish = client.get("/login", headers={"Accept-Language": "es"}).get_data(as_text=True)
    assert '<p class="theme-note">Cuenta · 7 días</p>' in spanish
    assert "Iniciar sesión" in spanish
    english = client.get("/login", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert '<p class="theme-note">Account · 7 days</p>' in english
