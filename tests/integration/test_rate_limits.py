"""Sign-in, reset and invitation routes are rate-limited per account and per address, in the
configured store (Redis in production and in CI)."""

from __future__ import annotations

import os

import pytest
from flask import Flask

from tests.support import HttpsClient, csrf_token, post_form, sign_in

REDIS_URL = os.environ.get("PORTAL_TEST_REDIS_URL", "")
STORES = ["memory://"] + ([REDIS_URL] if REDIS_URL else [])


@pytest.fixture(params=STORES, ids=lambda url: url.split(":")[0])
def limited_app(request: pytest.FixtureRequest, app_factory) -> Flask:  # type: ignore[no-untyped-def]
    return app_factory(  # type: ignore[no-any-return]
        PORTAL_RATELIMIT_STORAGE_URL=request.param,
        PORTAL_RATELIMIT_LOGIN_ACCOUNT="3 per 5 minutes",
        PORTAL_RATELIMIT_LOGIN_IP="6 per minute",
        PORTAL_RATELIMIT_RESET_ACCOUNT="2 per hour",
        PORTAL_RATELIMIT_RESET_IP="4 per minute",
    )


def _attempt(client: HttpsClient, email: str, password: str = "wrong password guess") -> int:
    token = csrf_token(client.get("/login").data)
    return client.post(
        "/login", data={"csrf_token": token, "email": email, "password": password}
    ).status_code


def test_one_account_is_limited(limited_app: Flask) -> None:
    from tests.support import seed_partner

    seed_partner(limited_app, "alpha", "portal-a.test")
    client: HttpsClient = limited_app.test_client()  # type: ignore[assignment]
    assert [_attempt(client, "administrator@a.alpha.example") for _ in range(3)] == [200] * 3
    response_status = _attempt(
        client, "administrator@a.alpha.example", "correct horse battery staple"
    )
    assert response_status == 429  # even the right password waits
    page = client.post(
        "/login",
        data={
            "csrf_token": csrf_token(client.get("/login").data),
            "email": "administrator@a.alpha.example",
            "password": "x",
        },
    )
    assert "Too many attempts" in page.get_data(as_text=True)
    # another account from the same address is not locked out by the first
    assert _attempt(client, "finance_manager@a.alpha.example") == 200


def test_one_address_is_limited_across_accounts(limited_app: Flask) -> None:
    from tests.support import seed_partner

    seed_partner(limited_app, "alpha", "portal-a.test")
    client: HttpsClient = limited_app.test_client()  # type: ignore[assignment]
    statuses = [_attempt(client, f"person{i}@a.alpha.example") for i in range(7)]
    assert statuses[:6] == [200] * 6 and statuses[6] == 429


def test_password_reset_is_limited_too(limited_app: Flask, mailbox) -> None:  # type: ignore[no-untyped-def]
    from tests.support import seed_partner

    seed_partner(limited_app, "alpha", "portal-a.test")
    client: HttpsClient = limited_app.test_client()  # type: ignore[assignment]
    statuses = [
        post_form(
            client, "/forgot-password", {"email": "administrator@a.alpha.example"}
        ).status_code
        for _ in range(3)
    ]
    assert statuses == [200, 200, 429]
    assert len(mailbox.messages) == 2
    # the reset confirmation route is limited as well (FOSSBilling CVE-2026-43926)
    codes = [client.get("/reset-password/guess-" + str(i)).status_code for i in range(5)]
    assert codes[-1] == 429


def test_staff_sign_in_is_limited(limited_app: Flask) -> None:
    from tests.support import seed_partner

    seed_partner(limited_app, "alpha", "portal-a.test")
    client: HttpsClient = limited_app.test_client()  # type: ignore[assignment]
    statuses = [
        sign_in(client, "admin@staff.alpha.example", "wrong password guess", staff=True).status_code
        for _ in range(4)
    ]
    assert statuses == [200, 200, 200, 429]
