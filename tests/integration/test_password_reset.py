"""Password reset by a single-use emailed link, valid 30 minutes at most."""

from __future__ import annotations

import re
from datetime import timedelta

import time_machine
from flask import Flask

from tests.conftest import Mailbox
from tests.support import HttpsClient, Tenant, csrf_token, post_form, sign_in

NEW_PASSWORD = "a brand new passphrase 2026"


def _reset_link(mailbox: Mailbox, email: str) -> str:
    body = mailbox.body(mailbox.last_to(email))
    match = re.search(r"https://portal-a\.test(/(?:staff/)?reset-password/[\w-]+)", body)
    assert match, body
    return match.group(1)


def _ask(client: HttpsClient, email: str, staff: bool = False) -> str:
    url = "/staff/forgot-password" if staff else "/forgot-password"
    return post_form(client, url, {"email": email}).get_data(as_text=True)


def test_reset_by_emailed_link(client: HttpsClient, tenant: Tenant, mailbox: Mailbox) -> None:
    page = _ask(client, "administrator@a.alpha.example")
    assert "a link to reset its password is on its way" in page
    message = mailbox.last_to("administrator@a.alpha.example")
    assert message["Subject"] == "Reset your Alpha Cloud password"
    assert "Alpha Cloud" in message["From"] and message["Reply-To"] == "help@alpha.example"
    link = _reset_link(mailbox, "administrator@a.alpha.example")
    response = post_form(client, link, {"password": NEW_PASSWORD})
    assert response.status_code == 302 and response.location == "/login"
    assert sign_in(client, "administrator@a.alpha.example").status_code == 200  # old one is dead
    assert sign_in(client, "administrator@a.alpha.example", NEW_PASSWORD).status_code == 302


def test_unknown_email_gets_the_same_page_and_no_mail(
    client: HttpsClient, tenant: Tenant, mailbox: Mailbox
) -> None:
    page = _ask(client, "stranger@a.alpha.example")
    assert "a link to reset its password is on its way" in page
    assert mailbox.messages == []


def test_link_works_once(client: HttpsClient, tenant: Tenant, mailbox: Mailbox) -> None:
    _ask(client, "administrator@a.alpha.example")
    link = _reset_link(mailbox, "administrator@a.alpha.example")
    assert post_form(client, link, {"password": NEW_PASSWORD}).status_code == 302
    again = client.get(link)
    assert again.status_code == 400
    assert "This link is not valid any more" in again.get_data(as_text=True)


def test_link_expires_after_30_minutes(
    client: HttpsClient, tenant: Tenant, mailbox: Mailbox
) -> None:
    with time_machine.travel("2026-11-22 10:00:00+00:00", tick=False) as clock:
        _ask(client, "administrator@a.alpha.example")
        link = _reset_link(mailbox, "administrator@a.alpha.example")
        clock.shift(timedelta(minutes=29))
        assert client.get(link).status_code == 200
        clock.shift(timedelta(minutes=2))
        assert client.get(link).status_code == 400


def test_a_newer_link_voids_the_older(
    client: HttpsClient, tenant: Tenant, mailbox: Mailbox
) -> None:
    _ask(client, "administrator@a.alpha.example")
    first = _reset_link(mailbox, "administrator@a.alpha.example")
    _ask(client, "administrator@a.alpha.example")
    second = _reset_link(mailbox, "administrator@a.alpha.example")
    assert first != second
    assert client.get(first).status_code == 400
    assert client.get(second).status_code == 200


def test_weak_password_is_refused_with_reasons_and_the_link_survives(
    client: HttpsClient, tenant: Tenant, mailbox: Mailbox
) -> None:
    _ask(client, "administrator@a.alpha.example")
    link = _reset_link(mailbox, "administrator@a.alpha.example")
    for weak, reason in [
        ("short", "Use at least 12 characters."),
        ("password1234", "This password is too common."),
        ("administrator-2026-x", "Do not use your email address"),
    ]:
        page = post_form(client, link, {"password": weak}).get_data(as_text=True)
        assert reason in page, weak
    assert post_form(client, link, {"password": NEW_PASSWORD}).status_code == 302


def test_reset_signs_the_account_out_everywhere(
    app: Flask, tenant: Tenant, mailbox: Mailbox
) -> None:
    laptop: HttpsClient = app.test_client()  # type: ignore[assignment]
    sign_in(laptop, "administrator@a.alpha.example")
    assert laptop.get("/").status_code == 200
    phone: HttpsClient = app.test_client()  # type: ignore[assignment]
    _ask(phone, "administrator@a.alpha.example")
    post_form(
        phone, _reset_link(mailbox, "administrator@a.alpha.example"), {"password": NEW_PASSWORD}
    )
    assert laptop.get("/").status_code == 302


def test_another_partners_link_is_useless_here(
    app: Flask, tenant: Tenant, other_tenant: Tenant, mailbox: Mailbox
) -> None:
    beta: HttpsClient = app.test_client()  # type: ignore[assignment]
    beta.host = "portal-b.test"
    _ask(beta, "administrator@a.beta.example")
    body = mailbox.body(mailbox.last_to("administrator@a.beta.example"))
    path = re.search(r"https://portal-b\.test(/reset-password/[\w-]+)", body)
    assert path
    alpha: HttpsClient = app.test_client()  # type: ignore[assignment]
    assert alpha.get(path.group(1)).status_code == 400


def test_staff_reset(client: HttpsClient, tenant: Tenant, mailbox: Mailbox) -> None:
    _ask(client, "finance@staff.alpha.example", staff=True)
    link = _reset_link(mailbox, "finance@staff.alpha.example")
    assert link.startswith("/staff/reset-password/")
    # a staff link is not a customer link
    assert client.get(link.removeprefix("/staff")).status_code == 400
    assert post_form(client, link, {"password": NEW_PASSWORD}).location == "/staff/login"
    assert (
        sign_in(client, "finance@staff.alpha.example", NEW_PASSWORD, staff=True).status_code == 302
    )


def test_reset_form_needs_csrf(client: HttpsClient, tenant: Tenant, mailbox: Mailbox) -> None:
    _ask(client, "administrator@a.alpha.example")
    link = _reset_link(mailbox, "administrator@a.alpha.example")
    assert client.post(link, data={"password": NEW_PASSWORD}).status_code == 400
    csrf_token(client.get(link).data)  # the link still works
