"""The portal's payment pages with the Stripe plugin, against the fake Stripe on 127.0.0.1
through the real SDK: paying an invoice on Checkout (paid once, whichever of the return page and
the signed webhooks comes first), ten concurrent clicks making one Checkout Session, saving a
card on setup-mode Checkout, and autopay meeting ``authentication_required``."""

from __future__ import annotations

import importlib.util
import sys
import threading
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest
from flask import Flask

from portal.core.config import ROOT
from portal.features.payments.models import AttemptState
from tests.integration.payments_support import (
    ADMIN,
    attempts_of,
    cards_of,
    issued_invoice,
    ledger_of,
    signed_in,
)
from tests.integration.test_payments_autopay import draft_for, issue, run_all
from tests.integration.test_payments_pay import status_text
from tests.support import HttpsClient, Tenant, csrf_token

if importlib.util.find_spec("stripe_payments") is None:
    sys.path.insert(0, str(ROOT / "plugins" / "stripe_payments"))

from stripe_payments.fake import REQUIRE_AUTHENTICATION, SUCCEED, FakeStripe

from portal.features.billing.services import documents as billing_documents
from portal.integrations.registry import integrations

WEBHOOK_SECRET = "whsec_portal_payments_pages"


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with FakeStripe(webhook_secret=WEBHOOK_SECRET) as server:
        yield server
    assert not server.errors, "the fake Stripe failed:\n" + "\n".join(server.errors)


@pytest.fixture
def app(payment_apps: Callable[..., Flask], fake: FakeStripe) -> Flask:
    app: Flask = payment_apps(
        PORTAL_PLUGINS="stripe",
        PORTAL_PAYMENT_GATEWAY="stripe",
        PORTAL_BROKER_URL="memory://",
        PORTAL_PLUGIN_SETTINGS={
            "stripe": {
                "SECRET_KEY": "sk_test_portal_pages_0123456789",
                "WEBHOOK_SECRET": WEBHOOK_SECRET,
                "API_BASE": fake.url,
                "TIMEOUT_SECONDS": "5",
            }
        },
    )
    assert integrations(app).migration_locations == []  # the plugin has no tables
    return app


@pytest.fixture
def finance(app: Flask, tenant: Tenant) -> HttpsClient:
    return signed_in(app)


def session_id(location: str) -> str:
    parts = urlsplit(location)
    assert parts.netloc == "checkout.stripe.com", location
    return parts.path.rsplit("/", 1)[1]


def setup_return(app: Flask, session: str) -> str:
    """Where Stripe sends the customer back after the setup-mode Checkout ``session``."""
    import sqlalchemy as sa

    from portal.core.db import get_database
    from portal.features.payments.models import CardSetup

    with app.app_context(), get_database(app).sessions() as s:
        setup = s.scalars(sa.select(CardSetup).where(CardSetup.gateway_ref == session)).one()
    return f"/payment-methods/setups/{setup.id}?payment={session}"


def deliver(client: HttpsClient, fake: FakeStripe, type_: str) -> list[int]:
    """Post the fake's signed ``type_`` events to the portal's webhook endpoint."""
    statuses = []
    for event in fake.events_of(type_):
        body, headers = fake.delivery(event)
        statuses.append(client.post("/p/stripe/webhook", data=body, headers=headers).status_code)
    return statuses


def test_paying_on_stripe_checkout_is_pending_until_confirmed_then_paid_once(
    app: Flask, tenant: Tenant, finance: HttpsClient, fake: FakeStripe
) -> None:
    invoice_id = issued_invoice(app, tenant, amount_minor=25_000)
    page = finance.get(f"/invoices/{invoice_id}").get_data(as_text=True)
    started = finance.post(
        f"/invoices/{invoice_id}/pay",
        data={"csrf_token": csrf_token(page), "amount": "100.00"},  # part of it
    )
    assert started.status_code == 302
    session = session_id(started.headers["Location"])
    (attempt,) = attempts_of(app, invoice_id)
    assert attempt.gateway_ref == session and fake.effects(attempt.idempotency_key) == 1
    # back before paying (a forged ?payment= proves nothing): Processing, nothing recorded
    early = finance.get(f"/payments/{attempt.id}?payment={session}").get_data(as_text=True)
    assert status_text(early) == "Processing" and ledger_of(app, invoice_id) == []
    intent = fake.complete_checkout(session)
    # the webhooks and the return page both learn of it: one ledger row
    assert set(deliver(finance, fake, "checkout.session.completed")) == {200}
    paid = finance.get(f"/payments/{attempt.id}?payment={session}").get_data(as_text=True)
    assert status_text(paid) == "Paid"
    assert set(deliver(finance, fake, "payment_intent.succeeded")) == {200}
    (row,) = ledger_of(app, invoice_id)
    assert (row.amount_minor, row.gateway_key, row.gateway_reference) == (
        10_000,
        "stripe",
        intent["id"],
    )
    (attempt,) = attempts_of(app, invoice_id)
    assert attempt.state is AttemptState.SUCCEEDED and attempt.payment_ref == intent["id"]
    detail = finance.get(f"/invoices/{invoice_id}").get_data(as_text=True)
    assert 'id="invoice-status">Partially paid<' in detail
    assert 'id="invoice-balance">$150.00<' in detail


def test_ten_concurrent_clicks_make_one_checkout_session(
    app: Flask, tenant: Tenant, fake: FakeStripe
) -> None:
    invoice_id = issued_invoice(app, tenant)
    people = [signed_in(app), signed_in(app, ADMIN)]
    tokens = [csrf_token(c.get(f"/invoices/{invoice_id}").data) for c in people]
    barrier = threading.Barrier(10)
    locations: list[str] = []
    errors: list[BaseException] = []

    def click(n: int) -> None:
        try:
            barrier.wait()
            response = people[n % 2].post(
                f"/invoices/{invoice_id}/pay",
                data={"csrf_token": tokens[n % 2], "amount": "100.00"},
            )
            locations.append(response.headers["Location"])
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=click, args=(n,)) for n in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == [] and len(set(locations)) == 1 and len(locations) == 10
    (attempt,) = attempts_of(app, invoice_id)
    assert fake.effects(attempt.idempotency_key) == 1
    assert len(fake.sessions) == 1


def test_a_card_saved_on_setup_checkout_is_charged_by_autopay(
    app: Flask, tenant: Tenant, finance: HttpsClient, fake: FakeStripe
) -> None:
    token = csrf_token(finance.get("/payment-methods").data)
    started = finance.post("/payment-methods/add", data={"csrf_token": token})
    session = session_id(started.headers["Location"])
    fake.complete_setup(session, SUCCEED)
    back = finance.get(setup_return(app, session))
    assert back.headers["Location"] == "/payment-methods"
    html = finance.get("/payment-methods").get_data(as_text=True)
    assert "Visa ending in 4242 is saved." in html
    (card,) = cards_of(app, tenant.customers["a"].id)
    assert card.card_ref.startswith("pm_") and card.gateway_customer_ref.startswith("cus_")
    invoice_id = draft_for(app, tenant, amount=4_200)
    issue(app, tenant, invoice_id)
    assert run_all(app, billing_documents.AUTOPAY_KIND) == ["done"]
    (attempt,) = attempts_of(app, invoice_id)
    assert attempt.state is AttemptState.SUCCEEDED
    (row,) = ledger_of(app, invoice_id)
    assert row.gateway_reference == attempt.payment_ref and row.amount_minor == 4_200
    assert fake.effects(attempt.idempotency_key) == 1


def test_autopay_that_needs_authentication_asks_the_customer_to_pay(
    app: Flask, tenant: Tenant, finance: HttpsClient, fake: FakeStripe
) -> None:
    token = csrf_token(finance.get("/payment-methods").data)
    started = finance.post("/payment-methods/add", data={"csrf_token": token})
    session = session_id(started.headers["Location"])
    fake.complete_setup(session, REQUIRE_AUTHENTICATION)
    finance.get(setup_return(app, session))
    invoice_id = draft_for(app, tenant, amount=4_200)
    issue(app, tenant, invoice_id)
    assert run_all(app, billing_documents.AUTOPAY_KIND) == ["done"]
    (attempt,) = attempts_of(app, invoice_id)
    assert (attempt.state, attempt.failure_code) == (
        AttemptState.FAILED,
        "authentication_required",
    )
    assert ledger_of(app, invoice_id) == []
    dashboard = finance.get("/").get_data(as_text=True)
    assert "Your bank asked you to confirm this payment" in dashboard
