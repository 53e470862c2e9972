"""English and Spanish: the browser's preference picks, the switch overrides, and every
user-visible string has a Spanish translation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from babel.messages.pofile import read_po

from tests.support import HttpsClient, Tenant, csrf_token, sign_in

ROOT = Path(__file__).resolve().parents[2]


def test_browser_preference_picks_spanish(client: HttpsClient, tenant: Tenant) -> None:
    page = client.get("/login", headers={"Accept-Language": "es-ES,es;q=0.9,en;q=0.5"})
    html = page.get_data(as_text=True)
    assert '<html lang="es">' in html
    assert "Iniciar sesión" in html


def test_unsupported_preference_falls_back_to_english(client: HttpsClient, tenant: Tenant) -> None:
    html = client.get("/login", headers={"Accept-Language": "de-DE"}).get_data(as_text=True)
    assert '<html lang="en">' in html and "Sign in to Alpha Cloud" in html


def test_switch_overrides_the_browser(client: HttpsClient, tenant: Tenant) -> None:
    sign_in(client, "administrator@a.alpha.example")
    english = {"Accept-Language": "en-US"}
    token = csrf_token(client.get("/", headers=english).data)
    response = client.post(
        "/language", data={"csrf_token": token, "locale": "es", "next": "/"}, headers=english
    )
    assert response.status_code == 302 and response.location == "/"
    html = client.get("/", headers=english).get_data(as_text=True)
    assert '<html lang="es">' in html
    assert "Panel" in html and "Cerrar sesión" in html and "Hola, Administrator A" in html
    assert "Tu cuenta" not in html  # no credit hold here


def test_spanish_amounts_and_plurals(client: HttpsClient, tenant: Tenant) -> None:
    sign_in(client, "administrator@a.alpha.example")
    html = client.get("/", headers={"Accept-Language": "es"}).get_data(as_text=True)
    assert "1000,00\xa0US$" in html or "1.000,00\xa0US$" in html  # credit limit 100000 minor
    assert "30 días" in html


def test_switch_ignores_unsupported_languages(client: HttpsClient, tenant: Tenant) -> None:
    token = csrf_token(client.get("/login").data)
    client.post("/language", data={"csrf_token": token, "locale": "xx", "next": "/login"})
    assert '<html lang="en">' in client.get("/login").get_data(as_text=True)


def test_every_user_visible_string_is_translated(tmp_path: Path) -> None:
    """Extract the strings from the code and templates now; each must be translated to Spanish."""
    pot = tmp_path / "messages.pot"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "babel.messages.frontend",
            "extract",
            "-F",
            "babel.cfg",
            "-k",
            "_l",
            "-k",
            "lazy_gettext",
            "-o",
            str(pot),
            "--no-location",
            "--omit-header",
            ".",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    with pot.open("rb") as handle:
        extracted = {m.id if isinstance(m.id, str) else m.id[0] for m in read_po(handle) if m.id}
    with (ROOT / "translations/es/LC_MESSAGES/messages.po").open("rb") as handle:
        catalogue = read_po(handle)
    translated = {}
    for message in catalogue:
        if not message.id or message.fuzzy:
            continue
        key = message.id if isinstance(message.id, str) else message.id[0]
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        if all(strings):
            translated[key] = strings
    missing = sorted(extracted - set(translated))
    assert not missing, f"untranslated (run `make messages`, then translate): {missing}"
    assert len(extracted) > 150


def test_a_mail_in_another_language_leaves_the_page_in_its_own(
    client: HttpsClient,
    tenant: Tenant,
    mailbox,  # type: ignore[no-untyped-def]
) -> None:
    spanish = {"Accept-Language": "es"}
    token = csrf_token(client.get("/forgot-password", headers=spanish).data)
    page = client.post(
        "/forgot-password",
        headers=spanish,
        data={"csrf_token": token, "email": "administrator@a.alpha.example"},
    )
    assert "Revisa tu correo" in page.get_data(as_text=True)  # the page: Spanish
    mail = mailbox.last_to("administrator@a.alpha.example")
    assert mail["Subject"] == "Reset your Alpha Cloud password"  # the mail: the user's (English)
