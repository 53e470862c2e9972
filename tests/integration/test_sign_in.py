"""Signing in and out: server-side sessions, rotation, revocation, timeouts, cookie flags."""

from __future__ import annotations

from datetime import timedelta

import time_machine
from flask import Flask

from tests.support import HttpsClient, Tenant, csrf_token, post_form, sign_in

COOKIE = "__Host-portal_session"


def session_cookie(client: HttpsClient) -> str | None:
    cookie = client.get_cookie(COOKIE, domain=client.host)
    return cookie.value if cookie else None


def test_sign_in_shows_the_dashboard(client: HttpsClient, tenant: Tenant) -> None:
    response = sign_in(client, "administrator@a.alpha.example")
    assert response.status_code == 302 and response.location == "/"
    page = client.get("/").get_data(as_text=True)
    assert "Welcome, Administrator A" in page
    assert "alpha customer a" in page


def test_wrong_password_says_so_and_signs_nobody_in(client: HttpsClient, tenant: Tenant) -> None:
    response = sign_in(client, "administrator@a.alpha.example", "not the password at all")
    assert response.status_code == 200
    assert "That email and password do not match an account." in response.get_data(as_text=True)
    assert client.get("/").status_code == 302


def test_unknown_email_gets_the_same_answer(client: HttpsClient, tenant: Tenant) -> None:
    response = sign_in(client, "nobody@alpha.example", "whatever password 1")
    assert "That email and password do not match an account." in response.get_data(as_text=True)


def test_cookie_is_host_prefixed_secure_httponly_lax(client: HttpsClient, tenant: Tenant) -> None:
    response = sign_in(client, "administrator@a.alpha.example")
    header = next(h for h in response.headers.getlist("Set-Cookie") if h.startswith(COOKIE))
    assert "Secure" in header and "HttpOnly" in header and "SameSite=Lax" in header
    assert "Path=/" in header and "Domain" not in header


def test_sign_in_issues_a_new_session_id(client: HttpsClient, tenant: Tenant) -> None:
    client.get("/login")  # an anonymous session exists once the CSRF token is stored
    before = session_cookie(client)
    assert before is not None
    sign_in(client, "administrator@a.alpha.example")
    after = session_cookie(client)
    assert after is not None and after != before
    # the pre-login id is dead: a fixated cookie gets nothing
    attacker = HttpsClient(client.application, client.response_wrapper)
    attacker.set_cookie(COOKIE, before, domain=client.host)
    assert attacker.get("/").status_code == 302


def test_replayed_cookie_after_sign_out_gets_nothing(client: HttpsClient, tenant: Tenant) -> None:
    sign_in(client, "administrator@a.alpha.example")
    stolen = session_cookie(client)
    assert stolen
    token = csrf_token(client.get("/").data)
    response = client.post("/logout", data={"csrf_token": token})
    assert response.status_code == 302
    assert session_cookie(client) != stolen  # at most a new anonymous id carrying the flash
    replay = HttpsClient(client.application, client.response_wrapper)
    replay.set_cookie(COOKIE, stolen, domain=client.host)
    response = replay.get("/")
    assert response.status_code == 302 and response.location.startswith("/login")


def test_logout_needs_csrf(client: HttpsClient, tenant: Tenant) -> None:
    sign_in(client, "administrator@a.alpha.example")
    assert client.post("/logout").status_code == 400
    assert client.get("/").status_code == 200


def test_idle_timeout_ends_the_session(client: HttpsClient, tenant: Tenant) -> None:
    with time_machine.travel("2026-11-22 09:00:00+00:00", tick=False) as clock:
        sign_in(client, "administrator@a.alpha.example")
        clock.shift(timedelta(minutes=29))
        assert client.get("/").status_code == 200
        clock.shift(timedelta(minutes=29))  # active 29 minutes ago: still alive
        assert client.get("/").status_code == 200
        clock.shift(timedelta(minutes=31))
        response = client.get("/")
        assert response.status_code == 302
        assert "Your session has ended" in client.get("/login").get_data(as_text=True)


def test_absolute_timeout_ends_even_an_active_session(client: HttpsClient, tenant: Tenant) -> None:
    with time_machine.travel("2026-11-22 08:00:00+00:00", tick=False) as clock:
        sign_in(client, "administrator@a.alpha.example")
        for _ in range(35):  # busy all day, every 20 minutes: 11h40m
            clock.shift(timedelta(minutes=20))
            assert client.get("/").status_code == 200
        clock.shift(timedelta(minutes=25))  # 12h05m after sign-in, idle only 25 minutes
        assert client.get("/").status_code == 302


def test_next_redirect_stays_on_site(client: HttpsClient, tenant: Tenant) -> None:
    page = client.get("/login?next=/account/")
    token = csrf_token(page.data)
    response = client.post(
        "/login",
        data={
            "csrf_token": token,
            "next": "/account/",
            "email": "administrator@a.alpha.example",
            "password": "correct horse battery staple",
        },
    )
    assert response.location == "/account/"


OPEN_REDIRECTS = [
    "https://evil.example/",
    "//evil.example",
    "/\\evil.example",
    "\\/evil.example",
    "javascript:alert(1)",
    "/%2F%2Fevil.example",
    "%2F%2Fevil.example",
    "http:/evil.example",
    "/%5Cevil.example",
    "////evil.example",
    "https:evil.example",
    " //evil.example",
    "/\t/evil.example",
    "/%09/evil.example",
    "data:text/html,hi",
    "evil.example",
]


def test_open_redirect_payloads_end_on_the_dashboard(app: Flask, tenant: Tenant) -> None:
    app.config["PORTAL_RATELIMIT_LOGIN_ACCOUNT"] = "1000 per minute"
    for target in OPEN_REDIRECTS:
        client: HttpsClient = app.test_client()  # type: ignore[assignment]
        token = csrf_token(client.get("/login").data)
        response = client.post(
            "/login",
            data={
                "csrf_token": token,
                "next": target,
                "email": "administrator@a.alpha.example",
                "password": "correct horse battery staple",
            },
        )
        assert response.location == "/", target


def test_staff_cannot_use_the_customer_sign_in(client: HttpsClient, tenant: Tenant) -> None:
    response = sign_in(client, "admin@staff.alpha.example")
    assert "do not match an account" in response.get_data(as_text=True)


def test_customer_cannot_use_the_staff_sign_in(client: HttpsClient, tenant: Tenant) -> None:
    response = post_form(
        client,
        "/staff/login",
        {"email": "administrator@a.alpha.example", "password": "correct horse battery staple"},
    )
    assert "do not match a staff account" in response.get_data(as_text=True)


def test_signing_in_as_someone_else_replaces_the_first_sign_in(
    client: HttpsClient, tenant: Tenant
) -> None:
    # regression: the lookup ran under the first user's customer scope and found nobody
    sign_in(client, "administrator@a.alpha.example")
    assert sign_in(client, "administrator@b.alpha.example").status_code == 302
    assert "alpha customer b" in client.get("/").get_data(as_text=True)


def test_sign_out_says_so_and_keeps_the_language(client: HttpsClient, tenant: Tenant) -> None:
    sign_in(client, "administrator@a.alpha.example")
    token = csrf_token(client.get("/").data)
    client.post("/language", data={"csrf_token": token, "locale": "es", "next": "/"})
    signed_in_cookie = session_cookie(client)
    token = csrf_token(client.get("/").data)
    page = client.post("/logout", data={"csrf_token": token}, follow_redirects=True)
    html = page.get_data(as_text=True)
    assert "Has cerrado sesión." in html and '<html lang="es">' in html
    assert session_cookie(client) not in (None, signed_in_cookie)  # a new, anonymous id
    assert client.get("/").status_code == 302
