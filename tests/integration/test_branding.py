"""Branding: the partner comes from the Host header; colours become CSS variables; a theme folder
overrides customer templates (and may extend the default), never staff ones."""

from __future__ import annotations

from pathlib import Path

from flask import Flask

from portal.core.db import get_database
from portal.features.tenancy.models import Partner
from tests.support import HttpsClient, Tenant, sign_in


def _client(app: Flask, host: str) -> HttpsClient:
    client: HttpsClient = app.test_client()  # type: ignore[assignment]
    client.host = host
    return client


def test_two_partners_are_told_apart_by_host(
    app: Flask, tenant: Tenant, other_tenant: Tenant
) -> None:
    alpha = _client(app, "portal-a.test").get("/login").get_data(as_text=True)
    beta = _client(app, "portal-b.test").get("/login").get_data(as_text=True)
    assert "Sign in to Alpha Cloud" in alpha and "Beta Cloud" not in alpha
    assert "Sign in to Beta Cloud" in beta and "Alpha Cloud" not in beta
    assert "help@alpha.example" in alpha and "help@beta.example" in beta


def test_brand_colours_are_css_custom_properties(
    app: Flask, tenant: Tenant, other_tenant: Tenant
) -> None:
    beta = _client(app, "portal-b.test")
    page = beta.get("/login").get_data(as_text=True)
    assert '<link rel="stylesheet" href="/brand.css?v=' in page
    css = beta.get("/brand.css")
    assert css.mimetype == "text/css"
    assert "--portal-primary: #8a1538;" in css.get_data(as_text=True)
    assert "--bs-primary-rgb: 138, 21, 56;" in css.get_data(as_text=True)
    assert "#8a1538" not in _client(app, "portal-a.test").get("/brand.css").get_data(as_text=True)


def test_a_pale_brand_colour_gets_readable_button_text(app: Flask, tenant: Tenant) -> None:
    with app.app_context(), get_database(app).sessions() as s:
        s.get_one(Partner, tenant.partner.id).primary_colour = "#ffd700"
        s.commit()
    css = _client(app, "portal-a.test").get("/brand.css").get_data(as_text=True)
    assert "--portal-on-primary: #1b1f24;" in css  # dark text on gold passes AA; white does not


def test_unknown_host_with_several_partners_is_not_found(
    app: Flask, tenant: Tenant, other_tenant: Tenant
) -> None:
    assert _client(app, "unknown.test").get("/login").status_code == 404


def test_a_single_partner_answers_on_any_host(app: Flask, tenant: Tenant) -> None:
    page = _client(app, "anything.test").get("/login").get_data(as_text=True)
    assert "Sign in to Alpha Cloud" in page


def test_configured_default_partner_answers_unknown_hosts(
    app_factory,
    tenant: Tenant,
    other_tenant: Tenant,  # type: ignore[no-untyped-def]
) -> None:
    app = app_factory(PORTAL_DEFAULT_PARTNER="beta")
    page = _client(app, "unknown.test").get("/login").get_data(as_text=True)
    assert "Sign in to Beta Cloud" in page


def test_branding_text_is_data_never_template_source(app: Flask, tenant: Tenant) -> None:
    with app.app_context(), get_database(app).sessions() as s:
        s.get_one(Partner, tenant.partner.id).name = "{{7*7}}{{config}}<script>alert(1)</script>"
        s.commit()
    page = _client(app, "portal-a.test").get("/login").get_data(as_text=True)
    assert "{{7*7}}{{config}}&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "49" not in page and "<script>alert(1)" not in page
    assert app.config["SECRET_KEY"] not in page


def _theme(root: Path, slug: str) -> Path:
    theme = root / slug
    (theme / "templates" / "auth").mkdir(parents=True)
    (theme / "templates" / "staff").mkdir(parents=True)
    (theme / "static" / "img").mkdir(parents=True)
    (theme / "templates" / "auth" / "login.html").write_text(
        '{% extends "default:auth/login.html" %}'
        '{% block card %}<p class="theme-banner">Welcome to the {{ brand.name }} theme</p>'
        "{{ super() }}{% endblock %}"
    )
    (theme / "templates" / "staff" / "login.html").write_text("HIJACKED STAFF PAGE")
    (theme / "static" / "img" / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    return theme


def test_theme_overrides_and_extends_customer_templates(
    app_factory,
    tmp_path: Path,
    tenant: Tenant,
    other_tenant: Tenant,  # type: ignore[no-untyped-def]
) -> None:
    _theme(tmp_path, "alpha")
    app = app_factory(PORTAL_THEMES_DIR=str(tmp_path))
    alpha = _client(app, "portal-a.test").get("/login").get_data(as_text=True)
    assert "Welcome to the Alpha Cloud theme" in alpha
    assert "Sign in to Alpha Cloud" in alpha  # the original, extended through default:
    beta = _client(app, "portal-b.test").get("/login").get_data(as_text=True)
    assert "theme-banner" not in beta


def test_theme_cannot_override_staff_templates(
    app_factory,
    tmp_path: Path,
    tenant: Tenant,  # type: ignore[no-untyped-def]
) -> None:
    _theme(tmp_path, "alpha")
    app = app_factory(PORTAL_THEMES_DIR=str(tmp_path))
    page = _client(app, "portal-a.test").get("/staff/login").get_data(as_text=True)
    assert "HIJACKED" not in page and "Staff sign in" in page


def test_theme_static_files_and_logo(
    app_factory,
    tmp_path: Path,
    tenant: Tenant,  # type: ignore[no-untyped-def]
) -> None:
    _theme(tmp_path, "alpha")
    app = app_factory(PORTAL_THEMES_DIR=str(tmp_path))
    with app.app_context(), get_database(app).sessions() as s:
        s.get_one(Partner, tenant.partner.id).logo_filename = "img/logo.png"
        s.commit()
    client = _client(app, "portal-a.test")
    sign_in(client, "administrator@a.alpha.example")
    page = client.get("/").get_data(as_text=True)
    assert '<img src="/theme/img/logo.png" alt="Alpha Cloud"' in page
    assert client.get("/theme/img/logo.png").data.startswith(b"\x89PNG")
    assert client.get("/theme/../alpha/templates/auth/login.html").status_code == 404
    assert client.get("/theme/img/missing.png").status_code == 404
