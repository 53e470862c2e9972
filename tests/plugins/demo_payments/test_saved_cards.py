"""The demo gateway's saved cards beyond the contract: the card-saving form and its
authentication step, a payment that keeps its card, off-session charges by test card, and the
typed webhook events."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import pytest
from demo_payments.gateway import DemoPaymentGateway

from portal.integrations.payments import (
    AUTHENTICATION_REQUIRED,
    CARD_DECLINED,
    CardSetupOutcome,
    CardSetupRequest,
    CustomerProfile,
    EventKind,
    PaymentRequest,
    PaymentSession,
    PaymentStatus,
    SavedCardCharge,
)
from portal.integrations.results import BusinessRejection, Succeeded
from portal.testing.support import PortalClient, csrf_token

RETURN = "https://portal.test/payment-methods/setups/3"


@pytest.fixture
def customer(gateway: DemoPaymentGateway) -> str:
    made = gateway.ensure_customer(
        CustomerProfile(f"key-{uuid.uuid4().hex}", "42", "Contoso Ltd", "ap@contoso.test")
    )
    assert isinstance(made, Succeeded)
    return made.value


@pytest.fixture
def setup(gateway: DemoPaymentGateway, customer: str) -> PaymentSession:
    started = gateway.start_card_setup(
        CardSetupRequest(f"setup-{uuid.uuid4().hex}", "42", customer, RETURN)
    )
    assert isinstance(started, Succeeded)
    return started.value


def read(gateway: DemoPaymentGateway, session: PaymentSession) -> CardSetupOutcome:
    result = gateway.get_card_setup(session.gateway_ref)
    assert isinstance(result, Succeeded)
    return result.value


def assert_back(location: str, session: PaymentSession) -> None:
    parts = urlsplit(location)
    assert (parts.scheme, parts.netloc, parts.path) == (
        "https",
        "portal.test",
        urlsplit(RETURN).path,
    )
    assert parse_qs(parts.query) == {"setup": [session.gateway_ref]}


def test_the_setup_form_lists_the_test_cards_and_what_charging_them_does(
    portal_client: PortalClient, setup: PaymentSession
) -> None:
    assert setup.redirect_url == f"/p/demo_payments/setup/{setup.gateway_ref}"
    page = portal_client.get(setup.redirect_url)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Save a card" in html and 'name="csrf_token"' in html
    for card in ("4242 4242 4242 4242", "4000 0027 6000 3184", "4000 0000 0000 0341"):
        assert card in html
    assert "charging it later is declined" in html


def test_a_card_saved_on_the_form_is_described_and_goes_back_to_the_portal(
    portal_client: PortalClient, gateway: DemoPaymentGateway, setup: PaymentSession, customer: str
) -> None:
    response = portal_client.post_form(setup.redirect_url, {"card_number": "4242 4242 4242 4242"})
    assert response.status_code == 302
    assert_back(response.headers["Location"], setup)
    outcome = read(gateway, setup)
    assert outcome.status is PaymentStatus.SUCCEEDED and outcome.customer_ref == "42"
    assert outcome.card is not None
    assert (outcome.card.brand, outcome.card.last4, outcome.card.exp_month) == ("visa", "4242", 12)
    assert outcome.card.gateway_customer_ref == customer
    # the finished form leads straight back, and saves nothing more
    assert portal_client.get(setup.redirect_url).status_code == 302
    listed = gateway.list_cards(customer)
    assert isinstance(listed, Succeeded) and len(listed.value) == 1


def test_a_declined_card_is_not_saved(
    portal_client: PortalClient, gateway: DemoPaymentGateway, setup: PaymentSession, customer: str
) -> None:
    response = portal_client.post_form(setup.redirect_url, {"card_number": "4000000000000002"})
    assert_back(response.headers["Location"], setup)
    outcome = read(gateway, setup)
    assert (outcome.status, outcome.card, outcome.failure_reason) == (
        PaymentStatus.FAILED,
        None,
        "Your card was declined.",
    )
    assert gateway.list_cards(customer) == Succeeded([])


@pytest.mark.parametrize(("button", "saved"), [("approve", True), ("fail", False)])
def test_a_card_that_needs_authentication_is_saved_only_when_approved(
    portal_client: PortalClient,
    gateway: DemoPaymentGateway,
    setup: PaymentSession,
    customer: str,
    button: str,
    saved: bool,
) -> None:
    response = portal_client.post_form(setup.redirect_url, {"card_number": "4000002760003184"})
    step = f"/p/demo_payments/setup/{setup.gateway_ref}/authenticate"
    assert response.headers["Location"] == step
    assert read(gateway, setup).status is PaymentStatus.REQUIRES_ACTION
    page = portal_client.get(step).get_data(as_text=True)
    assert "ending in 3184" in page
    label = {"approve": "Approve", "fail": "Fail"}[button]
    done = portal_client.post(step, data={"csrf_token": csrf_token(page), button: label})
    assert_back(done.headers["Location"], setup)
    outcome = read(gateway, setup)
    assert (outcome.status is PaymentStatus.SUCCEEDED) is saved
    cards = gateway.list_cards(customer)
    assert isinstance(cards, Succeeded) and len(cards.value) == (1 if saved else 0)


def test_an_unknown_number_on_the_setup_form_saves_nothing(
    portal_client: PortalClient, gateway: DemoPaymentGateway, setup: PaymentSession
) -> None:
    response = portal_client.post_form(setup.redirect_url, {"card_number": "5555555555554444"})
    assert response.status_code == 200
    assert "nothing was saved" in response.get_data(as_text=True)
    assert read(gateway, setup).status is PaymentStatus.PROCESSING


def test_a_setup_needs_a_known_customer_and_a_safe_return_url(
    gateway: DemoPaymentGateway, customer: str
) -> None:
    unknown = gateway.start_card_setup(CardSetupRequest("k-1", "42", "dcus_nobody", RETURN))
    assert isinstance(unknown, BusinessRejection) and unknown.code == "demo.no_such_customer"
    unsafe = gateway.start_card_setup(
        CardSetupRequest("k-2", "42", customer, "javascript:alert(1)")
    )
    assert isinstance(unsafe, BusinessRejection)
    missing = gateway.get_card_setup("dseti_nope")
    assert isinstance(missing, BusinessRejection) and missing.code == "demo.not_found"


def test_the_setup_form_of_an_unknown_ref_is_not_found(portal_client: PortalClient) -> None:
    assert portal_client.get("/p/demo_payments/setup/dseti_nope").status_code == 404
    assert portal_client.get("/p/demo_payments/setup/dseti_nope/authenticate").status_code == 404


def _pay(
    gateway: DemoPaymentGateway,
    make_request: Callable[..., PaymentRequest],
    customer: str,
) -> PaymentSession:
    started = gateway.start_payment(
        make_request(25_00, save_card=True, gateway_customer_ref=customer)
    )
    assert isinstance(started, Succeeded)
    return started.value


@pytest.mark.parametrize(
    ("card", "kept"),
    [("4242424242424242", True), ("4000000000000002", False), ("4000000000000341", False)],
)
def test_a_payment_asked_to_save_its_card_keeps_it_only_when_it_succeeds(
    portal_client: PortalClient,
    gateway: DemoPaymentGateway,
    make_request: Callable[..., PaymentRequest],
    customer: str,
    card: str,
    kept: bool,
) -> None:
    session = _pay(gateway, make_request, customer)
    page = portal_client.get(session.redirect_url).get_data(as_text=True)
    assert "The card will be saved for automatic payments" in page
    portal_client.post_form(session.redirect_url, {"card_number": card})
    outcome = gateway.get_payment(session.gateway_ref)
    assert isinstance(outcome, Succeeded)
    cards = gateway.list_cards(customer)
    assert isinstance(cards, Succeeded)
    if kept:
        assert outcome.value.card is not None and outcome.value.card.last4 == "4242"
        assert [c.card_ref for c in cards.value] == [outcome.value.card.card_ref]
    else:
        assert outcome.value.card is None and cards.value == []


def test_a_payment_that_saves_a_card_needs_the_gateway_customer(
    gateway: DemoPaymentGateway, make_request: Callable[..., PaymentRequest]
) -> None:
    refused = gateway.start_payment(make_request(save_card=True, gateway_customer_ref="dcus_x"))
    assert isinstance(refused, BusinessRejection) and refused.code == "demo.no_such_customer"


def _saved_card(
    portal_client: PortalClient, gateway: DemoPaymentGateway, customer: str, number: str
) -> str:
    started = gateway.start_card_setup(
        CardSetupRequest(f"s-{uuid.uuid4().hex}", "42", customer, RETURN)
    )
    assert isinstance(started, Succeeded)
    response = portal_client.post_form(started.value.redirect_url, {"card_number": number})
    if response.headers["Location"].endswith("/authenticate"):
        portal_client.post_form(response.headers["Location"], {"approve": "Approve"})
    outcome = read(gateway, started.value)
    assert outcome.card is not None
    return outcome.card.card_ref


@pytest.mark.parametrize(
    ("number", "status", "code"),
    [
        ("4242424242424242", PaymentStatus.SUCCEEDED, None),
        ("4000002500003155", PaymentStatus.SUCCEEDED, None),  # authenticated once, when saved
        ("4000002760003184", PaymentStatus.REQUIRES_ACTION, AUTHENTICATION_REQUIRED),
        ("4000000000000341", PaymentStatus.FAILED, CARD_DECLINED),
    ],
)
def test_off_session_charges_behave_as_the_saved_test_card_says(
    portal_client: PortalClient,
    gateway: DemoPaymentGateway,
    customer: str,
    number: str,
    status: PaymentStatus,
    code: str | None,
) -> None:
    card_ref = _saved_card(portal_client, gateway, customer, number)
    charge = SavedCardCharge(
        f"autopay-{uuid.uuid4().hex}", "7", "42", customer, card_ref, 12_34, "EUR", "Invoice 7"
    )
    result = gateway.charge_saved_card(charge)
    assert isinstance(result, Succeeded)
    outcome = result.value
    assert (outcome.status, outcome.failure_code) == (status, code)
    assert (outcome.invoice_ref, outcome.customer_ref) == ("7", "42")
    assert outcome.card is not None and outcome.card.card_ref == card_ref
    # the charge is a payment like any other: read back, listed, one per key
    assert gateway.get_payment(outcome.reference) == Succeeded(outcome)
    assert gateway.charge_saved_card(charge) == Succeeded(outcome)


def test_a_card_of_another_customer_cannot_be_charged(
    portal_client: PortalClient, gateway: DemoPaymentGateway, customer: str
) -> None:
    card_ref = _saved_card(portal_client, gateway, customer, "4242424242424242")
    other = gateway.ensure_customer(CustomerProfile(f"k-{uuid.uuid4().hex}", "43", "Fabrikam"))
    assert isinstance(other, Succeeded)
    charge = SavedCardCharge(
        f"c-{uuid.uuid4().hex}", "7", "43", other.value, card_ref, 100, "USD", "x"
    )
    refused = gateway.charge_saved_card(charge)
    assert isinstance(refused, BusinessRejection) and refused.code == "demo.no_such_card"


def test_webhooks_say_what_happened_in_the_portal_s_words(
    portal_client: PortalClient,
    gateway: DemoPaymentGateway,
    start: Callable[..., PaymentSession],
) -> None:
    session = start()
    body, headers = gateway.webhook_for(session.gateway_ref)
    assert gateway.parse_webhook(body, headers).kind is EventKind.PAYMENT_PENDING
    portal_client.post_form(session.redirect_url, {"card_number": "4242424242424242"})
    body, headers = gateway.webhook_for(session.gateway_ref)
    event = gateway.parse_webhook(body, headers)
    assert event.kind is EventKind.PAYMENT_SUCCEEDED and event.occurred_at is not None
    assert event.payment is not None and event.payment.invoice_ref == "INV-7"
