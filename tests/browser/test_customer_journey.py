"""A customer's journey in a real browser: sign in, see the partner's brand, switch to Spanish,
invite a colleague (and the mail arrives), sign out, and find the old cookie refused."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, expect
from pytest_playwright.pytest_playwright import CreateContextCallback

from portal.demo import DEMO_PASSWORD
from tests.browser.conftest import LiveServer
from tests.conftest import Mailbox

pytestmark = pytest.mark.browser

ADMIN_EMAIL = "admin@fabrikam.example"
INVITEE = "new.person@fabrikam.example"
PRIMARY_RGB = "rgb(11, 92, 173)"  # the demo partner's primary colour, #0b5cad
SESSION_COOKIE = "portal_session"

BRAND_CSS_PRIMARY = """() => {
    const sheet = [...document.styleSheets].find(s => s.href && s.href.includes('/brand.css'));
    if (!sheet) return null;
    const root = [...sheet.cssRules].find(r => r.selectorText === ':root');
    return root ? root.style.getPropertyValue('--portal-primary').trim() : null;
}"""


def path_of(page: Page) -> str:
    return urlsplit(page.url).path


def test_customer_journey(
    page: Page,
    new_context: CreateContextCallback,
    demo_portal: LiveServer,
    screenshots: Path,
) -> None:
    mailbox = demo_portal.mailbox

    # 1. the portal's front door is the partner-branded sign-in page
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login(\?|$)"))
    expect(page.get_by_role("heading", name="Sign in to Contoso Cloud")).to_be_visible()
    page.get_by_label("Email").fill(ADMIN_EMAIL)
    page.get_by_label("Password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Sign in").click()

    # 2. the dashboard, in the partner's name and colour
    expect(page.get_by_role("heading", name="Welcome, Alex Admin")).to_be_visible()
    assert path_of(page) == "/"
    header = page.locator("header.portal-header")
    expect(header.locator(".brand-name")).to_have_text("Contoso Cloud")
    expect(header.get_by_test_id("account-name")).to_have_text("Fabrikam Ltd")
    expect(page.locator(".brand-mark")).to_have_css("background-color", PRIMARY_RGB)
    # the colour comes from the partner's /brand.css, not only from the default theme
    assert page.evaluate(BRAND_CSS_PRIMARY) == "#0b5cad"
    page.screenshot(path=screenshots / "journey-dashboard.png", full_page=True)

    # 3. the footer's language switch
    footer = page.get_by_role("contentinfo")
    footer.get_by_label("Language").select_option(label="Español")
    footer.get_by_role("button", name="Change").click()
    expect(page.locator("html")).to_have_attribute("lang", "es")
    expect(header.get_by_role("link", name="Panel", exact=True)).to_be_visible()
    expect(header.get_by_role("link", name="Cuenta", exact=True)).to_be_visible()
    expect(page.get_by_role("heading", name="Hola, Alex Admin")).to_be_visible()
    expect(header.get_by_role("button", name="Cerrar sesión")).to_be_visible()
    expect(footer.get_by_label("Idioma")).to_have_value("es")
    assert path_of(page) == "/"
    page.screenshot(path=screenshots / "journey-spanish.png", full_page=True)

    # 4. invite a colleague, still in Spanish
    header.get_by_role("link", name="Cuenta", exact=True).click()
    invite = page.get_by_role("region", name="Invitar a un usuario")
    invite.get_by_label("Correo electrónico", exact=True).fill(INVITEE)
    invite.get_by_label("Rol", exact=True).select_option(label="Gestor de suscripciones")
    invite.get_by_role("button", name="Enviar invitación").click()
    expect(page.get_by_role("status").filter(has_text="Invitación enviada a")).to_have_text(
        f"Invitación enviada a {INVITEE}."
    )
    waiting = page.get_by_role("region", name="Invitar a un usuario").get_by_role("listitem")
    expect(waiting).to_have_count(1)
    expect(waiting).to_contain_text(INVITEE)
    expect(waiting).to_contain_text("Gestor de suscripciones")
    mail = mailbox.last_to(INVITEE)
    assert re.search(r"http://127\.0\.0\.1:\d+/invitations/[\w-]{20,}", Mailbox.body(mail))
    page.screenshot(path=screenshots / "journey-invited.png", full_page=True)

    # 5. keep the signed-in cookies, prove they work elsewhere, then sign out
    saved_cookies = page.context.cookies()
    session_cookie = next(c for c in saved_cookies if c["name"] == SESSION_COOKIE)
    assert session_cookie["httpOnly"] and session_cookie["sameSite"] == "Lax"
    assert not session_cookie["secure"]  # plain-http development relaxation
    control = new_context()
    control.add_cookies(saved_cookies)
    control_page = control.new_page()
    control_page.goto("/")
    expect(control_page.get_by_role("heading", name="Hola, Alex Admin")).to_be_visible()
    control.close()

    header.get_by_role("button", name="Cerrar sesión").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    expect(page.get_by_role("heading", name=re.compile("Contoso Cloud"))).to_be_visible()
    expect(page.locator("input[type=password]")).to_be_visible()
    assert session_cookie["value"] not in {c["value"] for c in page.context.cookies()}
    page.screenshot(path=screenshots / "journey-signed-out.png", full_page=True)

    # 6. replaying the pre-sign-out cookie in a fresh browser gets the sign-in page
    replay = new_context()
    replay.add_cookies(saved_cookies)
    replay_page = replay.new_page()
    replay_page.goto("/")
    expect(replay_page).to_have_url(re.compile(r"/login(\?|$)"))
    assert path_of(replay_page) == "/login"
    expect(replay_page.get_by_role("heading", name=re.compile("Contoso Cloud"))).to_be_visible()
    expect(replay_page.get_by_text("Your session has ended. Please sign in again.")).to_be_visible()
    expect(replay_page.get_by_text("Alex Admin")).to_have_count(0)
    replay_page.screenshot(path=screenshots / "journey-replay-refused.png", full_page=True)
