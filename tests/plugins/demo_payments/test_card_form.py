"""The demo gateway's test card form and authentication step, driven like a browser."""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import pytest
from demo_payments.gateway import DemoPaymentGateway

from portal.integrations.payments import PaymentSession, PaymentStatus
from portal.integrations.results import Succeeded
from portal.testing.support import PortalClient, csrf_token

Start = Callable[..., PaymentSession]


def status_of(
    gateway: DemoPaymentGateway, session: PaymentSession
) -> tuple[PaymentStatus, str | None]:
    result = gateway.get_payment(session.gateway_ref)
    assert isinstance(result, Succeeded)
    return result.value.status, result.value.failure_reason


def assert_back_at_the_portal(location: str, session: PaymentSession) -> None:
    parts = urlsplit(location)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "portal.test", "/invoices/7")
    assert parse_qs(parts.query) == {"tab": ["pay"], "payment": [session.gateway_ref]}


def pay(client: PortalClient, session: PaymentSession, card: str):  # type: ignore[no-untyped-def]
    return client.post_form(session.redirect_url, {"card_number": card})


def test_the_form_shows_the_amount_the_test_cards_and_a_labelled_field(
    portal_client: PortalClient, start: Start
) -> None:
    session = start(12_34, "USD")
    assert session.redirect_url == f"/p/demo_payments/pay/{session.gateway_ref}"
    page = portal_client.get(session.redirect_url)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Pay $12.34" in html and "Invoice INV-7" in html
    assert re.search(r'<label[^>]*for="card_number"[^>]*>Card number</label>', html)
    assert 'name="csrf_token"' in html
    for card in ("4242 4242 4242 4242", "4000 0000 0000 0002", "4000 0025 0000 3155"):
        assert card in html
    assert 'class="btn btn-primary w-100"' in html
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]


def test_amounts_show_in_the_currency_s_own_minor_units(
    portal_client: PortalClient, start: Start
) -> None:
    assert "¥1,234" in portal_client.get(start(1_234, "JPY").redirect_url).get_data(as_text=True)
    kwd = portal_client.get(start(1_234, "KWD").redirect_url).get_data(as_text=True)
    assert "1.234" in kwd


def test_the_succeeding_card_pays_and_returns_to_the_portal(
    portal_client: PortalClient, gateway: DemoPaymentGateway, start: Start
) -> None:
    session = start()
    response = pay(portal_client, session, "4242 4242 4242 4242")
    assert response.status_code == 302
    assert_back_at_the_portal(response.headers["Location"], session)
    assert status_of(gateway, session) == (PaymentStatus.SUCCEEDED, None)
    # coming back to the form of a finished payment goes straight back, it never pays twice
    again = portal_client.get(session.redirect_url)
    assert again.status_code == 302
    assert_back_at_the_portal(again.headers["Location"], session)


def test_the_declined_card_fails_the_payment_with_its_reason(
    portal_client: PortalClient, gateway: DemoPaymentGateway, start: Start
) -> None:
    session = start()
    response = pay(portal_client, session, "4000-0000-0000-0002")
    assert response.status_code == 302
    assert_back_at_the_portal(response.headers["Location"], session)
    assert status_of(gateway, session) == (PaymentStatus.FAILED, "Your card was declined.")


@pytest.mark.parametrize(
    ("button", "expected"),
    [
        ("approve", (PaymentStatus.SUCCEEDED, None)),
        ("fail", (PaymentStatus.FAILED, "The payment was not authenticated.")),
    ],
)
def test_the_authentication_card_asks_to_approve_or_fail(
    portal_client: PortalClient,
    gateway: DemoPaymentGateway,
    start: Start,
    button: str,
    expected: tuple[PaymentStatus, str | None],
) -> None:
    session = start()
    response = pay(portal_client, session, "4000002500003155")
    step = f"/p/demo_payments/pay/{session.gateway_ref}/authenticate"
    assert response.status_code == 302 and response.headers["Location"] == step
    assert status_of(gateway, session) == (PaymentStatus.REQUIRES_ACTION, None)
    # the card form now leads to the authentication step
    assert portal_client.get(session.redirect_url).headers["Location"] == step
    page = portal_client.get(step).get_data(as_text=True)
    assert "Authenticate this payment" in page
    assert 'value="Approve"' in page and 'value="Fail"' in page
    label = {"approve": "Approve", "fail": "Fail"}[button]
    finished = portal_client.post(step, data={"csrf_token": csrf_token(page), button: label})
    assert finished.status_code == 302
    assert_back_at_the_portal(finished.headers["Location"], session)
    assert status_of(gateway, session) == expected


def test_an_unknown_card_number_is_explained_and_changes_nothing(
    portal_client: PortalClient, gateway: DemoPaymentGateway, start: Start
) -> None:
    session = start()
    response = pay(portal_client, session, "5555 5555 5555 4444")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "This is not one of the demo test cards, so nothing was charged." in html
    assert 'class="form-control is-invalid"' in html
    assert 'aria-describedby="card_number-help card_number-error"' in html
    assert 'id="card_number-error" class="invalid-feedback"' in html
    assert status_of(gateway, session) == (PaymentStatus.PROCESSING, None)


@pytest.mark.parametrize(
    ("typed", "message"),
    [("", "Enter a card number."), ("4242 abcd", "Enter the card number as 12 to 19 digits")],
)
def test_a_malformed_card_number_is_explained_beside_the_field(
    portal_client: PortalClient,
    gateway: DemoPaymentGateway,
    start: Start,
    typed: str,
    message: str,
) -> None:
    session = start()
    response = pay(portal_client, session, typed)
    assert response.status_code == 200
    assert message in response.get_data(as_text=True)
    assert status_of(gateway, session) == (PaymentStatus.PROCESSING, None)


def test_paying_needs_the_form_s_csrf_token(
    portal_client: PortalClient, gateway: DemoPaymentGateway, start: Start
) -> None:
    session = start()
    forged = portal_client.post(session.redirect_url, data={"card_number": "4242424242424242"})
    assert forged.status_code == 400
    assert status_of(gateway, session) == (PaymentStatus.PROCESSING, None)
    pay(portal_client, session, "4000002500003155")
    step = f"/p/demo_payments/pay/{session.gateway_ref}/authenticate"
    forged = portal_client.post(step, data={"approve": "Approve"})
    assert forged.status_code == 400
    assert status_of(gateway, session) == (PaymentStatus.REQUIRES_ACTION, None)


def test_an_unknown_payment_ref_is_not_found(portal_client: PortalClient) -> None:
    assert portal_client.get("/p/demo_payments/pay/dp_nope").status_code == 404
    assert portal_client.get("/p/demo_payments/pay/dp_nope/authenticate").status_code == 404
