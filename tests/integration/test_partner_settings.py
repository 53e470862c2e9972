"""Partner settings (staff Admin): the brand, the logo, the host names and the invoice details,
seen by customers on their next page and on invoices (page and PDF); every refusal with its
message and no change, in English and Spanish; only Admins; every save audited."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from datetime import date, timedelta
from html import unescape
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from pypdf import PdfReader
from sqlalchemy import select

from portal.core.db import get_database, utcnow
from portal.features.identity.models import AuditEvent
from portal.features.tenancy.models import Partner, PartnerHost
from tests.integration.invoice_pages_support import Line, contract, invoice, pdf_text
from tests.support import HttpsClient, Tenant, csrf_token, post_form, sign_in

SETTINGS = "/staff/settings"
ADMIN = "admin@staff.alpha.example"
FINANCE = "finance_manager@a.alpha.example"
SPANISH = {"Accept-Language": "es"}
PNG_1PX = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'


def text(html: str) -> str:
    """The page's words, tags dropped and whitespace squeezed, as someone reads them."""
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html))).replace("\xa0", " ").strip()


def brand_form(**overrides: str) -> dict[str, str]:
    return {
        "name": "Contoso IT",
        "primary_colour": "#8A1538",
        "secondary_colour": "#102a43",
        "support_email": "support@contoso-it.example",
        "support_phone": "+34 910 000 000",
        "terms_url": "https://contoso-it.example/terms",
        "privacy_url": "https://contoso-it.example/privacy",
        "timezone": "Europe/Madrid",
        "default_currency": "eur",
        **overrides,
    }


INVOICE_DETAILS = {
    "legal_name": "Contoso IT Services S.L.",
    "address": "Calle Mayor 1\r\n28013 Madrid\r\nSpain",
    "tax_id": "ESB12345678",
    "footer": "Bank transfer to ES91 2100 0418 4502 0005 1332.",
}


@pytest.fixture
def app(app_factory: Any, tmp_path: Path) -> Flask:
    """The app with its uploaded brand files in the test's own folder."""
    return app_factory(PORTAL_BRAND_UPLOADS_DIR=str(tmp_path / "brands"))  # type: ignore[no-any-return]


@pytest.fixture
def admin(app: Flask, tenant: Tenant) -> HttpsClient:
    client: HttpsClient = app.test_client()  # type: ignore[assignment]
    sign_in(client, ADMIN, staff=True)
    return client


@pytest.fixture
def customer(app: Flask, tenant: Tenant) -> HttpsClient:
    client: HttpsClient = app.test_client()  # type: ignore[assignment]
    sign_in(client, FINANCE)
    return client


def partner_row(app: Flask, tenant: Tenant) -> dict[str, Any]:
    with app.app_context(), get_database(app).sessions() as s:
        partner = s.get_one(Partner, tenant.partner.id)
        values = {c.name: getattr(partner, c.name) for c in Partner.__table__.columns}
        values["hosts"] = sorted(
            s.scalars(select(PartnerHost.host).where(PartnerHost.partner_id == partner.id))
        )
        return values


def audit_actions(app: Flask, tenant: Tenant) -> list[tuple[str, dict[str, Any]]]:
    with app.app_context(), get_database(app).sessions() as s:
        events = s.scalars(
            select(AuditEvent)
            .where(AuditEvent.partner_id == tenant.partner.id, AuditEvent.action.like("settings.%"))
            .order_by(AuditEvent.id)
        )
        return [(event.action, dict(event.detail)) for event in events]


def upload(client: HttpsClient, data: bytes, name: str, **kwargs: Any) -> Any:
    token = csrf_token(client.get(SETTINGS).data)
    return client.post(
        f"{SETTINGS}/logo",
        data={"csrf_token": token, "logo": (BytesIO(data), name)},
        content_type="multipart/form-data",
        **kwargs,
    )


def an_invoice(app: Flask, tenant: Tenant) -> int:
    today = utcnow().date()
    return invoice(
        app,
        tenant,
        contract(app, tenant, "a"),
        number="INV-0077",
        period=(date(2026, 5, 1), date(2026, 6, 1)),
        lines=[Line("Seats", "1", "10.00", 1_000)],
        issued_on=today,
        due_on=today + timedelta(days=30),
    )


# -- saving ---------------------------------------------------------------------------------------


def test_admin_saves_the_brand_and_customers_see_it_at_once(
    app: Flask, admin: HttpsClient, customer: HttpsClient, tenant: Tenant
) -> None:
    page = admin.get(SETTINGS)
    assert page.status_code == 200
    words = text(page.get_data(as_text=True))
    assert "Settings" in words and "Brand name" in words and "Invoice details" in words
    assert "Buttons: white text on #0b5cad, contrast 6.6" in words
    assert 'href="/staff/settings"' in page.get_data(as_text=True)  # in the staff navigation
    before = customer.get("/").get_data(as_text=True)  # the brand is cached for this host now
    assert "Alpha Cloud" in before

    response = post_form(admin, SETTINGS, brand_form())
    assert response.status_code == 302
    saved = admin.get(SETTINGS).get_data(as_text=True)
    assert "The settings are saved. Customers see them on their next page." in text(saved)
    assert "Buttons: white text on #8a1538, contrast" in text(saved)

    dashboard = customer.get("/").get_data(as_text=True)
    words = text(dashboard)
    assert "Contoso IT" in words and "Alpha Cloud" not in words
    assert "support@contoso-it.example" in words and "+34 910 000 000" in words
    assert 'href="https://contoso-it.example/terms"' in dashboard
    assert 'href="https://contoso-it.example/privacy"' in dashboard
    css_link = re.search(r'href="(/brand\.css\?v=[^"]+)"', dashboard)
    assert css_link and css_link.group(1) not in before
    css = customer.get("/brand.css").get_data(as_text=True)
    assert "--portal-primary: #8a1538;" in css and "--portal-secondary: #102a43;" in css
    row = partner_row(app, tenant)
    assert row["timezone"] == "Europe/Madrid" and row["default_currency"] == "EUR"
    assert row["primary_colour"] == "#8a1538"
    [(action, detail)] = audit_actions(app, tenant)
    assert action == "settings.brand_updated"
    assert detail["name"] == "Alpha Cloud → Contoso IT"
    assert detail["default_currency"] == "USD → EUR"
    assert "staff:" in str(audit_actor(app, tenant))


def audit_actor(app: Flask, tenant: Tenant) -> list[str]:
    with app.app_context(), get_database(app).sessions() as s:
        return list(s.scalars(select(AuditEvent.actor).where(AuditEvent.action.like("settings.%"))))


def test_saving_the_same_values_changes_and_records_nothing(
    app: Flask, admin: HttpsClient, tenant: Tenant
) -> None:
    assert post_form(admin, SETTINGS, brand_form()).status_code == 302
    assert post_form(admin, SETTINGS, brand_form()).status_code == 302
    assert "Nothing changed." in text(admin.get(SETTINGS).get_data(as_text=True))
    assert len(audit_actions(app, tenant)) == 1


def test_the_settings_page_speaks_spanish(
    app: Flask, admin: HttpsClient, customer: HttpsClient, tenant: Tenant
) -> None:
    words = text(admin.get(SETTINGS, headers=SPANISH).get_data(as_text=True))
    assert "Ajustes" in words and "Nombre de la marca" in words and "Datos de factura" in words
    assert "Botones: texto blanco sobre #0b5cad, contraste 6,6" in words
    response = post_form(admin, SETTINGS, brand_form(), headers=SPANISH)
    assert response.status_code == 302
    saved = text(admin.get(SETTINGS, headers=SPANISH).get_data(as_text=True))
    assert "Los ajustes están guardados." in saved
    dashboard = text(customer.get("/", headers=SPANISH).get_data(as_text=True))
    assert "Contoso IT" in dashboard and "Condiciones" in dashboard and "Privacidad" in dashboard


def test_invoice_details_show_on_the_invoice_page_and_pdf(
    app: Flask, admin: HttpsClient, customer: HttpsClient, tenant: Tenant
) -> None:
    invoice_id = an_invoice(app, tenant)
    before = text(customer.get(f"/invoices/{invoice_id}").get_data(as_text=True))
    assert "Contoso IT Services" not in before and "Tax id" not in before

    response = post_form(admin, f"{SETTINGS}/invoice", INVOICE_DETAILS, page=SETTINGS)
    assert response.status_code == 302
    page = customer.get(f"/invoices/{invoice_id}").get_data(as_text=True)
    seller = re.search(r'<address class="invoice-seller[^>]*>(.*?)</address>', page, re.S)
    assert seller is not None
    assert text(seller.group(1)) == (
        "Contoso IT Services S.L. Calle Mayor 1 28013 Madrid Spain Tax id: ESB12345678"
    )
    assert "Bank transfer to ES91 2100 0418 4502 0005 1332." in text(page)
    words = re.sub(r"\s+", " ", pdf_text(customer.get(f"/invoices/{invoice_id}/pdf").get_data()))
    for expected in (
        "Contoso IT Services S.L.",
        "Calle Mayor 1",
        "28013 Madrid",
        "Tax id: ESB12345678",
        "Bank transfer to ES91 2100 0418 4502 0005 1332.",
    ):
        assert expected in words, expected
    spanish = text(customer.get(f"/invoices/{invoice_id}", headers=SPANISH).get_data(as_text=True))
    assert "NIF: ESB12345678" in spanish
    spanish_pdf = customer.get(f"/invoices/{invoice_id}/pdf", headers=SPANISH).get_data()
    assert "NIF: ESB12345678" in re.sub(r"\s+", " ", pdf_text(spanish_pdf))
    [(action, detail)] = audit_actions(app, tenant)
    assert action == "settings.invoice_details_updated"
    assert detail["invoice_address"] == "— → Calle Mayor 1\n28013 Madrid\nSpain"
    assert partner_row(app, tenant)["invoice_address"] == "Calle Mayor 1\n28013 Madrid\nSpain"


def test_a_logo_is_stored_served_and_shown(
    app: Flask, admin: HttpsClient, customer: HttpsClient, tenant: Tenant, tmp_path: Path
) -> None:
    customer.get("/")  # the brand is cached for this host now
    response = upload(admin, PNG_1PX, "logo.png")
    assert response.status_code == 302
    assert "The logo is saved." in text(admin.get(SETTINGS).get_data(as_text=True))
    filename = partner_row(app, tenant)["logo_filename"]
    assert re.fullmatch(r"uploaded/logo-[0-9a-f]{20}\.png", filename)
    stored = tmp_path / "brands" / "alpha" / filename.removeprefix("uploaded/")
    assert stored.read_bytes() == PNG_1PX
    dashboard = customer.get("/").get_data(as_text=True)
    assert f'src="/theme/{filename}"' in dashboard
    served = customer.get(f"/theme/{filename}")
    assert served.status_code == 200 and served.mimetype == "image/png"
    assert served.get_data() == PNG_1PX
    invoice_id = an_invoice(app, tenant)
    reader = PdfReader(BytesIO(customer.get(f"/invoices/{invoice_id}/pdf").get_data()))
    assert len(reader.pages[0].images) == 1
    [(action, detail)] = audit_actions(app, tenant)
    assert (
        action == "settings.logo_set"
        and detail["type"] == "png"
        and detail["bytes"] == len(PNG_1PX)
    )
    # removing it brings the name back
    assert post_form(admin, f"{SETTINGS}/logo/remove", {}, page=SETTINGS).status_code == 302
    assert 'class="brand-logo"' not in customer.get("/").get_data(as_text=True)
    assert [a for a, _ in audit_actions(app, tenant)][-1] == "settings.logo_removed"


def test_another_partners_uploads_are_not_served(
    app: Flask, admin: HttpsClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    assert upload(admin, PNG_1PX, "logo.png").status_code == 302
    filename = partner_row(app, tenant)["logo_filename"]
    beta: HttpsClient = app.test_client()  # type: ignore[assignment]
    beta.host = "portal-b.test"
    assert beta.get(f"/theme/{filename}").status_code == 404
    assert beta.get("/theme/uploaded/../alpha/" + filename.split("/")[1]).status_code == 404


def test_host_names_are_added_and_removed(
    app: Flask, admin: HttpsClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    response = post_form(
        admin, f"{SETTINGS}/hosts", {"host": " Billing.Alpha.TEST "}, page=SETTINGS
    )
    assert response.status_code == 302
    assert "The portal now also answers on billing.alpha.test." in text(
        admin.get(SETTINGS).get_data(as_text=True)
    )
    assert partner_row(app, tenant)["hosts"] == ["billing.alpha.test", "portal-a.test"]
    visitor: HttpsClient = app.test_client()  # type: ignore[assignment]
    visitor.host = "billing.alpha.test"
    assert "Sign in to Alpha Cloud" in visitor.get("/login").get_data(as_text=True)

    with app.app_context(), get_database(app).sessions() as s:
        added = s.scalars(select(PartnerHost).where(PartnerHost.host == "billing.alpha.test")).one()
    response = post_form(
        admin, f"{SETTINGS}/hosts/remove", {"host_id": str(added.id)}, page=SETTINGS
    )
    assert response.status_code == 302
    assert "The portal no longer answers on billing.alpha.test." in text(
        admin.get(SETTINGS).get_data(as_text=True)
    )
    assert visitor.get("/login").status_code == 404  # two partners: an unknown host is not found
    assert [a for a, _ in audit_actions(app, tenant)] == [
        "settings.host_added",
        "settings.host_removed",
    ]


# -- refusals -------------------------------------------------------------------------------------

BRAND_REFUSALS = [
    pytest.param(
        {"primary_colour": "red"},
        "Enter a colour as # and six hex digits, like #0b5cad.",
        "Escribe un color como # y seis dígitos hexadecimales, como #0b5cad.",
        id="bad-colour",
    ),
    pytest.param(
        {"secondary_colour": "#cccccc"},
        "The header's light text on #cccccc reaches a contrast of only 1.52:1; WCAG AA needs "
        "4.5:1. Choose a darker colour.",
        "El texto claro de la cabecera sobre #cccccc solo alcanza un contraste de 1,52:1; "
        "WCAG AA exige 4,5:1. Elige un color más oscuro.",
        id="failing-contrast",
    ),
    pytest.param(
        {"timezone": "Mars/Olympus_Mons"},
        "Choose a time zone from the list, like Europe/Madrid or UTC.",
        "Elige una zona horaria de la lista, como Europe/Madrid o UTC.",
        id="bad-time-zone",
    ),
    pytest.param(
        {"timezone": "../../etc/passwd"},
        "Choose a time zone from the list, like Europe/Madrid or UTC.",
        "Elige una zona horaria de la lista, como Europe/Madrid o UTC.",
        id="time-zone-path",
    ),
    pytest.param(
        {"default_currency": "ABC"},
        "Enter a three-letter ISO 4217 code, like USD.",
        "Introduce un código ISO 4217 de tres letras, como USD.",
        id="bad-currency",
    ),
    pytest.param(
        {"terms_url": "http://contoso-it.example/terms"},
        "Enter a full https:// address, like https://example.com/terms.",
        "Escribe una dirección https:// completa, como https://example.com/terms.",
        id="http-legal-link",
    ),
    pytest.param(
        {"privacy_url": "javascript:alert(1)"},
        "Enter a full https:// address, like https://example.com/terms.",
        "Escribe una dirección https:// completa, como https://example.com/terms.",
        id="script-legal-link",
    ),
    pytest.param(
        {"name": "  "},
        "Enter the brand's name.",
        "Escribe el nombre de la marca.",
        id="no-name",
    ),
    pytest.param(
        {"support_email": "not an email"},
        "Enter a valid email address.",
        "Introduce una dirección de correo electrónico válida.",
        id="bad-email",
    ),
]


@pytest.mark.parametrize(("change", "english", "spanish"), BRAND_REFUSALS)
def test_a_refused_brand_says_why_and_changes_nothing(
    app: Flask,
    admin: HttpsClient,
    tenant: Tenant,
    change: dict[str, str],
    english: str,
    spanish: str,
) -> None:
    before = partner_row(app, tenant)
    for headers, message in (({}, english), (SPANISH, spanish)):
        response = post_form(admin, SETTINGS, brand_form(**change), headers=headers)
        assert response.status_code == 422
        html = response.get_data(as_text=True)
        assert message in text(html)
        assert 'id="error-summary"' in html and 'aria-invalid="true"' in html
        value = next(iter(change.values()))
        if value.strip():
            assert f'value="{value}"' in unescape(html)  # the entered value is kept
    assert partner_row(app, tenant) == before
    assert audit_actions(app, tenant) == []


def test_every_mistake_of_the_brand_form_is_reported_at_once(
    admin: HttpsClient, tenant: Tenant
) -> None:
    response = post_form(
        admin,
        SETTINGS,
        brand_form(primary_colour="#12", timezone="Nowhere", default_currency="XX"),
    )
    assert response.status_code == 422
    words = text(response.get_data(as_text=True))
    assert "Enter a colour as # and six hex digits" in words
    assert "Choose a time zone from the list" in words
    assert "Enter a three-letter ISO 4217 code" in words


HOST_REFUSALS = [
    pytest.param(
        "https://portal.alpha.test/",
        "Enter the host name alone, like portal.example.com: no https://, port or path.",
        "Escribe solo el nombre de host, como portal.example.com: sin https://, puerto ni ruta.",
        id="url",
    ),
    pytest.param(
        "portal.alpha.test:8443",
        "Enter the host name alone, like portal.example.com: no https://, port or path.",
        "Escribe solo el nombre de host, como portal.example.com: sin https://, puerto ni ruta.",
        id="port",
    ),
    pytest.param(
        "bad_host!.test",
        "bad_host!.test is not a valid host name: use letters, digits, hyphens and dots, "
        "like portal.example.com.",
        "bad_host!.test no es un nombre de host válido: usa letras, dígitos, guiones y puntos, "
        "como portal.example.com.",
        id="characters",
    ),
    pytest.param(
        "portal-b.test",
        "portal-b.test is already in use by a portal.",
        "portal-b.test ya lo usa un portal.",
        id="another-partners",
    ),
    pytest.param(
        "PORTAL-A.test",
        "portal-a.test is already in use by a portal.",
        "portal-a.test ya lo usa un portal.",
        id="own",
    ),
]


@pytest.mark.parametrize(("host", "english", "spanish"), HOST_REFUSALS)
def test_a_refused_host_name_says_why_and_changes_nothing(
    app: Flask,
    admin: HttpsClient,
    tenant: Tenant,
    other_tenant: Tenant,
    host: str,
    english: str,
    spanish: str,
) -> None:
    before = partner_row(app, tenant)
    for headers, message in (({}, english), (SPANISH, spanish)):
        response = post_form(
            admin, f"{SETTINGS}/hosts", {"host": host}, page=SETTINGS, headers=headers
        )
        assert response.status_code == 422
        assert message in text(response.get_data(as_text=True))
    assert partner_row(app, tenant) == before
    assert audit_actions(app, tenant) == []


def test_the_last_host_name_cannot_be_removed(
    app: Flask, admin: HttpsClient, tenant: Tenant
) -> None:
    with app.app_context(), get_database(app).sessions() as s:
        host_id = str(s.scalars(select(PartnerHost.id)).one())
    before = partner_row(app, tenant)
    page = admin.get(SETTINGS).get_data(as_text=True)
    assert "Remove portal-a.test" not in page  # no button for the only host name
    for headers, message in (
        ({}, "portal-a.test is the portal's only host name and cannot be removed."),
        (SPANISH, "portal-a.test es el único nombre de host del portal y no se puede quitar."),
    ):
        response = post_form(
            admin, f"{SETTINGS}/hosts/remove", {"host_id": host_id}, page=SETTINGS, headers=headers
        )
        assert response.status_code == 422
        assert message in text(response.get_data(as_text=True))
    response = post_form(admin, f"{SETTINGS}/hosts/remove", {"host_id": "x"}, page=SETTINGS)
    assert response.status_code == 422
    assert "That host name is not one of this portal's." in text(response.get_data(as_text=True))
    assert partner_row(app, tenant) == before
    assert audit_actions(app, tenant) == []


def test_another_partners_host_cannot_be_removed(
    app: Flask, admin: HttpsClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    post_form(admin, f"{SETTINGS}/hosts", {"host": "second.alpha.test"}, page=SETTINGS)
    with app.app_context(), get_database(app).sessions() as s:
        beta_host = s.scalars(select(PartnerHost.id).where(PartnerHost.host == "portal-b.test"))
        beta_id = str(beta_host.one())
    response = post_form(admin, f"{SETTINGS}/hosts/remove", {"host_id": beta_id}, page=SETTINGS)
    assert response.status_code == 422
    assert partner_row(app, other_tenant)["hosts"] == ["portal-b.test"]


LOGO_REFUSALS = [
    pytest.param(
        b"just some text, renamed\n",
        "logo.png",
        "The file is not a PNG, JPEG or WebP image. SVG is not accepted.",
        "El archivo no es una imagen PNG, JPEG o WebP. No se aceptan SVG.",
        id="renamed-text",
    ),
    pytest.param(
        SVG,
        "logo.svg",
        "The file is not a PNG, JPEG or WebP image. SVG is not accepted.",
        "El archivo no es una imagen PNG, JPEG o WebP. No se aceptan SVG.",
        id="svg",
    ),
    pytest.param(
        SVG,
        "logo.png",
        "The file is not a PNG, JPEG or WebP image. SVG is not accepted.",
        "El archivo no es una imagen PNG, JPEG o WebP. No se aceptan SVG.",
        id="svg-renamed",
    ),
    pytest.param(
        PNG_1PX + b"\0" * (600 * 1024),
        "logo.png",
        "The file is 601 KB; a logo can be at most 512 KB.",
        "El archivo ocupa 601 KB; un logotipo puede ocupar como máximo 512 KB.",
        id="too-big",
    ),
    pytest.param(
        b"",
        "",
        "Choose an image file to upload.",
        "Elige un archivo de imagen para subir.",
        id="no-file",
    ),
]


@pytest.mark.parametrize(("data", "name", "english", "spanish"), LOGO_REFUSALS)
def test_a_refused_logo_says_why_and_changes_nothing(
    app: Flask,
    admin: HttpsClient,
    tenant: Tenant,
    tmp_path: Path,
    data: bytes,
    name: str,
    english: str,
    spanish: str,
) -> None:
    before = partner_row(app, tenant)
    for headers, message in (({}, english), (SPANISH, spanish)):
        response = upload(admin, data, name, headers=headers)
        assert response.status_code == 422
        assert message in text(response.get_data(as_text=True))
    assert partner_row(app, tenant) == before
    assert audit_actions(app, tenant) == []
    assert not list((tmp_path / "brands").rglob("logo-*"))


def test_a_logo_over_the_request_limit_is_refused_without_a_server_error(
    admin: HttpsClient, app: Flask, tenant: Tenant
) -> None:
    before = partner_row(app, tenant)
    response = upload(admin, PNG_1PX + b"\0" * (3 * 1024 * 1024), "logo.png")
    assert response.status_code == 413
    assert partner_row(app, tenant) == before


def test_too_long_invoice_details_are_refused(
    app: Flask, admin: HttpsClient, tenant: Tenant
) -> None:
    before = partner_row(app, tenant)
    for headers, message in (
        ({}, "Keep the tax id to 64 characters or fewer."),
        (SPANISH, "El identificador fiscal puede tener como máximo 64 caracteres."),
    ):
        response = post_form(
            admin,
            f"{SETTINGS}/invoice",
            {**INVOICE_DETAILS, "tax_id": "X" * 65},
            page=SETTINGS,
            headers=headers,
        )
        assert response.status_code == 422
        assert message in text(response.get_data(as_text=True))
    assert partner_row(app, tenant) == before
    assert audit_actions(app, tenant) == []


# -- who may ------------------------------------------------------------------------------------


@pytest.fixture
def every_post() -> Iterator[list[tuple[str, dict[str, str]]]]:
    yield [
        (SETTINGS, brand_form()),
        (f"{SETTINGS}/invoice", INVOICE_DETAILS),
        (f"{SETTINGS}/logo", {}),
        (f"{SETTINGS}/logo/remove", {}),
        (f"{SETTINGS}/hosts", {"host": "x.alpha.test"}),
        (f"{SETTINGS}/hosts/remove", {"host_id": "1"}),
    ]


@pytest.mark.parametrize("staff_role", ["service", "finance", "sales"])
def test_only_staff_admins_open_the_settings(
    app: Flask,
    tenant: Tenant,
    staff_role: str,
    every_post: list[tuple[str, dict[str, str]]],
) -> None:
    client: HttpsClient = app.test_client()  # type: ignore[assignment]
    sign_in(client, f"{staff_role}@staff.alpha.example", staff=True)
    assert client.get(SETTINGS).status_code == 403
    home = client.get("/staff/")
    assert home.status_code == 200 and 'href="/staff/settings"' not in home.get_data(as_text=True)
    token = csrf_token(home.data)
    before = partner_row(app, tenant)
    for url, data in every_post:
        assert client.post(url, data={"csrf_token": token, **data}).status_code == 403, url
    assert partner_row(app, tenant) == before
    assert audit_actions(app, tenant) == []


def test_customers_and_visitors_are_sent_to_the_staff_sign_in(
    app: Flask, customer: HttpsClient, tenant: Tenant
) -> None:
    response = customer.get(SETTINGS)
    assert response.status_code == 302 and "/staff/login" in response.headers["Location"]
    visitor: HttpsClient = app.test_client()  # type: ignore[assignment]
    assert "/staff/login" in visitor.get(SETTINGS).headers["Location"]


@pytest.mark.parametrize(
    ("colour", "english", "spanish"),
    [
        (
            "#ffd700",
            "Buttons: dark text on #ffd700, contrast 11.",
            "Botones: texto oscuro sobre #ffd700, contraste 11,",
        ),
        (
            "#3a8fd9",
            "Buttons: white text on #2e73af, a darker shade of your colour, contrast 5.01:1",
            "texto blanco sobre #2e73af, un tono más oscuro de tu color, contraste 5,01:1",
        ),
    ],
)
def test_a_hard_to_read_primary_colour_gets_readable_buttons_and_the_page_says_so(
    app: Flask,
    admin: HttpsClient,
    customer: HttpsClient,
    tenant: Tenant,
    colour: str,
    english: str,
    spanish: str,
) -> None:
    assert post_form(admin, SETTINGS, brand_form(primary_colour=colour)).status_code == 302
    assert english in text(admin.get(SETTINGS).get_data(as_text=True))
    assert spanish in text(admin.get(SETTINGS, headers=SPANISH).get_data(as_text=True))
    css = customer.get("/brand.css").get_data(as_text=True)
    assert "--portal-on-primary:" in css and partner_row(app, tenant)["primary_colour"] == colour
