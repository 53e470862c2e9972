"""``POST /p/stripe/webhook`` in a portal with the plugin: deliveries signed by the fake Stripe
exactly as Stripe signs them, recorded once, with their effect on the ledger in the same
transaction; refunds, disputes, events for no invoice, the receipt and the accounting event."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy import select
from stripe_payments import StripeGateway
from stripe_payments.fake import DECLINE, SUCCEED, FakeStripe

from portal.core.db import get_database
from portal.features.billing.models import InvoiceState, PaymentKind
from portal.features.payments.models import PaymentDispute, PaymentWebhookEvent, WebhookResult
from portal.features.payments.services import events as payment_events
from portal.hookspecs import hookimpl
from portal.integrations.delivery import DELIVER_KIND
from portal.integrations.events import PaymentRecorded
from portal.integrations.payments import PaymentRequest
from portal.integrations.results import Succeeded
from portal.outbox.items import run_item
from portal.outbox.models import OutboxItem, OutboxState
from portal.testing.support import PortalClient, SeededPartner
from tests.plugins.stripe_payments.support import ledger, make_invoice, paid

WEBHOOK = "/p/stripe/webhook"


def post(client: PortalClient, fake: FakeStripe, event: dict[str, Any], **kwargs: Any) -> Any:
    body, headers = fake.delivery(event, **kwargs)
    return client.post(WEBHOOK, data=body, headers=headers)


def pay(fake: FakeStripe, invoice_id: int, partner: SeededPartner, amount: int) -> dict[str, Any]:
    return fake.add_succeeded_payment(
        amount, "usd", invoice_ref=str(invoice_id), customer_ref=str(partner.customer_id)
    )


def event(fake: FakeStripe, type_: str, object_id: str) -> dict[str, Any]:
    return next(e for e in fake.events_of(type_) if e["data"]["object"]["id"] == object_id)


def row_counts(app: Flask) -> dict[str, int]:
    engine = get_database(app).engine
    with engine.connect() as conn:
        names = sa.inspect(conn).get_table_names()
        return {
            name: conn.scalar(sa.text(f'SELECT count(*) FROM "{name}"'))  # noqa: S608
            for name in names
        }


def test_a_payment_is_recorded_once_however_often_it_is_delivered(
    portal_app: Flask, portal_partner: SeededPartner, portal_client: PortalClient, fake: FakeStripe
) -> None:
    invoice = make_invoice(portal_app, portal_partner)
    intent = pay(fake, invoice, portal_partner, 4_000)
    succeeded = event(fake, "payment_intent.succeeded", intent["id"])
    first = post(portal_client, fake, succeeded)
    assert first.status_code == 200, first.data
    assert first.json == {"received": succeeded["id"], "duplicate": False}
    again = post(portal_client, fake, succeeded)  # freshly signed, as Stripe's retries are
    assert (again.status_code, again.json["duplicate"]) == (200, True)
    assert ledger(portal_app) == [(PaymentKind.PAYMENT, 4_000, intent["id"])]
    with portal_app.app_context(), get_database(portal_app).sessions() as s:
        kinds = [item.kind for item in s.scalars(select(OutboxItem))]
        assert kinds == [payment_events.RECEIPT_KIND]
        stored = s.scalars(select(PaymentWebhookEvent)).one()
        assert (stored.event_id, stored.result, stored.invoice_id) == (
            succeeded["id"],
            WebhookResult.RECORDED,
            invoice,
        )
        assert stored.payment_ref == intent["id"]


def test_checkout_completed_and_the_intent_announce_one_payment(
    portal_app: Flask,
    portal_partner: SeededPartner,
    portal_client: PortalClient,
    fake: FakeStripe,
    app_gateway: StripeGateway,
) -> None:
    invoice = make_invoice(portal_app, portal_partner)
    started = app_gateway.start_payment(
        PaymentRequest(
            "pay-1", str(invoice), str(portal_partner.customer_id), 2_500, "USD", "INV", "/x"
        )
    )
    assert isinstance(started, Succeeded)
    intent = fake.complete_checkout(started.value.gateway_ref, SUCCEED)
    completed = event(fake, "checkout.session.completed", started.value.gateway_ref)
    succeeded = event(fake, "payment_intent.succeeded", intent["id"])
    assert post(portal_client, fake, completed).json["duplicate"] is False
    assert post(portal_client, fake, succeeded).json["duplicate"] is False
    assert ledger(portal_app) == [(PaymentKind.PAYMENT, 2_500, intent["id"])]
    with portal_app.app_context(), get_database(portal_app).sessions() as s:
        results = sorted(e.result for e in s.scalars(select(PaymentWebhookEvent)))
        assert results == [WebhookResult.NO_EFFECT, WebhookResult.RECORDED]


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda body, headers: (body + b" ", headers), id="body changed"),
        pytest.param(
            lambda body, headers: (body, {**headers, "Stripe-Signature": "t=1,v1=00"}),
            id="wrong signature",
        ),
        pytest.param(lambda body, headers: (body, {}), id="no signature"),
    ],
)
def test_a_delivery_that_does_not_verify_is_400_and_writes_nothing(
    portal_app: Flask,
    portal_partner: SeededPartner,
    portal_client: PortalClient,
    fake: FakeStripe,
    spoil: Any,
) -> None:
    invoice = make_invoice(portal_app, portal_partner)
    intent = pay(fake, invoice, portal_partner, 4_000)
    body, headers = spoil(*fake.delivery(event(fake, "payment_intent.succeeded", intent["id"])))
    before = row_counts(portal_app)
    response = portal_client.post(WEBHOOK, data=body, headers=headers)
    assert response.status_code == 400
    assert row_counts(portal_app) == before


def test_a_payment_failure_changes_no_ledger_and_is_kept(
    portal_app: Flask,
    portal_partner: SeededPartner,
    portal_client: PortalClient,
    fake: FakeStripe,
    app_gateway: StripeGateway,
) -> None:
    invoice = make_invoice(portal_app, portal_partner)
    started = app_gateway.start_payment(
        PaymentRequest(
            "pay-2", str(invoice), str(portal_partner.customer_id), 900, "USD", "I", "/x"
        )
    )
    assert isinstance(started, Succeeded)
    intent = fake.complete_checkout(started.value.gateway_ref, DECLINE)
    failed = event(fake, "payment_intent.payment_failed", intent["id"])
    assert post(portal_client, fake, failed).status_code == 200
    assert ledger(portal_app) == []
    with portal_app.app_context(), get_database(portal_app).sessions() as s:
        stored = s.scalars(select(PaymentWebhookEvent)).one()
        assert (stored.kind, stored.result) == ("payment_failed", WebhookResult.NO_EFFECT)


def test_refunds_are_ledger_rows_once_each_even_before_their_payment(
    portal_app: Flask, portal_partner: SeededPartner, portal_client: PortalClient, fake: FakeStripe
) -> None:
    invoice = make_invoice(portal_app, portal_partner)
    intent = pay(fake, invoice, portal_partner, 6_000)
    first = fake.refund(intent["id"], 1_000)
    second = fake.refund(intent["id"], 500)
    refunded = fake.events_of("charge.refunded")
    # the second refund's event (listing both) arrives first, before the payment's own event
    assert post(portal_client, fake, refunded[1]).status_code == 200
    assert post(portal_client, fake, refunded[0]).status_code == 200
    assert post(portal_client, fake, event(fake, "payment_intent.succeeded", intent["id"]))
    assert sorted(ledger(portal_app)) == sorted(
        [
            (PaymentKind.PAYMENT, 6_000, intent["id"]),
            (PaymentKind.REFUND, 1_000, first["id"]),
            (PaymentKind.REFUND, 500, second["id"]),
        ]
    )
    assert paid(portal_app, invoice) == 4_500
    for created in fake.events_of("refund.created"):
        assert post(portal_client, fake, created).status_code == 200
    assert len(ledger(portal_app)) == 3


def test_a_refund_event_without_its_list_asks_stripe(
    portal_app: Flask, portal_partner: SeededPartner, portal_client: PortalClient, fake: FakeStripe
) -> None:
    invoice = make_invoice(portal_app, portal_partner)
    intent = pay(fake, invoice, portal_partner, 6_000)
    refund = fake.refund(intent["id"], 2_000)
    thin = json.loads(json.dumps(fake.events_of("charge.refunded")[0]))
    del thin["data"]["object"]["refunds"]  # API versions since 2022-11-15 leave it out
    assert post(portal_client, fake, thin).status_code == 200
    assert sorted(ledger(portal_app)) == sorted(
        [(PaymentKind.PAYMENT, 6_000, intent["id"]), (PaymentKind.REFUND, 2_000, refund["id"])]
    )


def test_a_dispute_is_recorded_once_against_the_invoice(
    portal_app: Flask, portal_partner: SeededPartner, portal_client: PortalClient, fake: FakeStripe
) -> None:
    invoice = make_invoice(portal_app, portal_partner)
    intent = pay(fake, invoice, portal_partner, 6_000)
    dispute = fake.dispute(intent["id"])
    opened = event(fake, "charge.dispute.created", dispute["id"])
    for _ in range(2):
        assert post(portal_client, fake, opened).status_code == 200
    with portal_app.app_context(), get_database(portal_app).sessions() as s:
        found = s.scalars(select(PaymentDispute)).one()
        assert (found.invoice_id, found.dispute_ref, found.payment_ref) == (
            invoice,
            dispute["id"],
            intent["id"],
        )
        assert (found.amount_minor, found.currency, found.reason) == (6_000, "USD", "fraudulent")
        assert [d.id for d in payment_events.disputes_of(s, invoice)] == [found.id]
    # the dispute came first: the payment it disputes was read from Stripe and recorded
    assert ledger(portal_app) == [(PaymentKind.PAYMENT, 6_000, intent["id"])]


@pytest.mark.parametrize(
    "problem", ["no invoice", "void invoice", "other currency", "other customer"]
)
def test_money_for_no_invoice_it_can_pay_is_kept_for_staff(
    portal_app: Flask,
    portal_partner: SeededPartner,
    portal_client: PortalClient,
    fake: FakeStripe,
    problem: str,
) -> None:
    invoice = make_invoice(
        portal_app,
        portal_partner,
        currency="EUR" if problem == "other currency" else "USD",
        state=InvoiceState.VOID if problem == "void invoice" else InvoiceState.ISSUED,
    )
    intent = fake.add_succeeded_payment(
        3_000,
        "usd",
        invoice_ref="999999" if problem == "no invoice" else str(invoice),
        customer_ref="424242" if problem == "other customer" else str(portal_partner.customer_id),
    )
    response = post(portal_client, fake, event(fake, "payment_intent.succeeded", intent["id"]))
    assert response.status_code == 200  # Stripe must not deliver it for three days
    assert ledger(portal_app) == []
    with portal_app.app_context(), get_database(portal_app).sessions() as s:
        stored = s.scalars(select(PaymentWebhookEvent)).one()
        assert stored.result is WebhookResult.UNMATCHED
        assert stored.note


def test_the_receipt_goes_to_the_finance_manager_and_the_event_to_plugins(
    portal_app: Flask,
    portal_partner: SeededPartner,
    portal_client: PortalClient,
    fake: FakeStripe,
    capsys: pytest.CaptureFixture[str],
) -> None:
    heard: list[PaymentRecorded] = []

    class Accounting:
        @hookimpl
        def portal_on_payment_recorded(self, event: PaymentRecorded) -> None:
            heard.append(event)

    portal_app.extensions["portal_plugin_manager"].register(Accounting(), name="accounting")
    invoice = make_invoice(portal_app, portal_partner)
    intent = pay(fake, invoice, portal_partner, 4_000)
    post(portal_client, fake, event(fake, "payment_intent.succeeded", intent["id"]))
    capsys.readouterr()
    with portal_app.app_context():  # as in the worker: the receipt and the plugin's delivery
        with get_database(portal_app).sessions() as s:
            queued = {item.kind: item.id for item in s.scalars(select(OutboxItem))}
        assert set(queued) == {payment_events.RECEIPT_KIND, DELIVER_KIND}
        assert run_item(portal_app, queued[payment_events.RECEIPT_KIND]) == "done"
        assert run_item(portal_app, queued[DELIVER_KIND]) == "done"
        with get_database(portal_app).sessions() as s:
            states = {item.kind: item.state for item in s.scalars(select(OutboxItem))}
        assert states == {
            payment_events.RECEIPT_KIND: OutboxState.DONE,
            DELIVER_KIND: OutboxState.DONE,  # one delivery: one subscribing plugin
        }
    mail = capsys.readouterr().err
    assert f"To: {portal_partner.users['finance_manager']}" in mail
    assert "Payment received for invoice INV-" in mail
    assert "$40.00" in mail and "Still to pay on this invoice: $60.00." in mail
    assert intent["id"] in mail
    [recorded] = heard
    assert (recorded.invoice_id, recorded.amount_minor, recorded.currency) == (
        invoice,
        4_000,
        "USD",
    )
    assert recorded.customer.id == portal_partner.customer_id
    assert (recorded.kind, recorded.gateway_key, recorded.gateway_reference) == (
        "payment",
        "stripe",
        intent["id"],
    )


def test_reconciliation_records_what_no_webhook_did_once(
    portal_app: Flask, portal_partner: SeededPartner, fake: FakeStripe
) -> None:
    invoices = [make_invoice(portal_app, portal_partner) for _ in range(3)]
    intents = [
        pay(fake, invoice, portal_partner, 1_000 * (n + 1)) for n, invoice in enumerate(invoices)
    ]
    refund = fake.refund(intents[0]["id"], 300)
    runner = portal_app.test_cli_runner()
    first = runner.invoke(args=["portal", "payments", "reconcile", "--days", "2"])
    assert first.exit_code == 0, first.output
    assert "3 payments listed, 3 succeeded, 3 recorded now, 1 refunds recorded now" in first.output
    assert paid(portal_app, invoices[0]) == 700
    assert (PaymentKind.REFUND, 300, refund["id"]) in ledger(portal_app)
    second = runner.invoke(args=["portal", "payments", "reconcile"])
    assert second.exit_code == 0, second.output
    assert "0 recorded now, 0 refunds recorded now, 0 unmatched" in second.output
    assert len(ledger(portal_app)) == 4


def test_reconciliation_reports_a_gateway_that_fails(
    portal_app: Flask, portal_partner: SeededPartner, fake: FakeStripe
) -> None:
    from stripe_payments.fake import Fault

    fake.inject(Fault.server_error(503, path="/v1/payment_intents"), times=10)
    result = portal_app.test_cli_runner().invoke(args=["portal", "payments", "reconcile"])
    assert result.exit_code != 0
    assert "gateway stripe failed" in result.output


def test_the_webhook_skips_the_hooks_for_people_and_keeps_the_security_headers(
    portal_app: Flask, portal_partner: SeededPartner, fake: FakeStripe
) -> None:
    """A signed machine-to-machine POST: no session row or cookie, no partner from the host
    (Stripe's deliveries name their invoice, whose partner is the one recorded), the rate
    limiter skipped, CSRF exempt for this view alone; security headers as on every response."""
    from flask import g, request_finished
    from stripe_payments.views import bp

    from portal.web.access import is_machine_request
    from portal.web.csrf import csrf

    invoice = make_invoice(portal_app, portal_partner)
    intent = pay(fake, invoice, portal_partner, 4_000)
    body, headers = fake.delivery(event(fake, "payment_intent.succeeded", intent["id"]))
    # a host no partner names: the webhook needs no brand
    client = portal_app.test_client()
    seen: dict[str, Any] = {}

    def look(_: Flask, **__: Any) -> None:
        seen.update(machine=is_machine_request(), brand=g.get("brand"))

    with request_finished.connected_to(look, portal_app):
        response = client.post(
            WEBHOOK, data=body, headers=headers, base_url="https://hooks.elsewhere.test"
        )
    assert response.status_code == 200, response.data
    assert seen == {"machine": True, "brand": None}
    assert "Set-Cookie" not in response.headers
    assert "Cookie" not in response.headers.get("Vary", "")
    assert "X-RateLimit-Limit" not in response.headers
    assert response.headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"
    counts = row_counts(portal_app)
    assert counts["web_session"] == 0
    assert ledger(portal_app) == [(PaymentKind.PAYMENT, 4_000, intent["id"])]
    with portal_app.app_context(), get_database(portal_app).sessions() as s:
        item = s.scalars(select(OutboxItem)).one()
        assert (item.partner_id, item.customer_id) == (
            portal_partner.partner_id,
            portal_partner.customer_id,
        )
    # the exemption names this one view, not the plugin's blueprint
    assert bp not in csrf._exempt_blueprints
    exempt = {
        endpoint
        for endpoint, view in portal_app.view_functions.items()
        if f"{view.__module__}.{view.__name__}" in csrf._exempt_views
    }
    assert exempt == {"stripe_payments.webhook"}
    with portal_app.test_request_context("/", base_url="https://portal.test"):
        assert not is_machine_request()


def test_a_signed_body_that_is_not_json_is_400_and_writes_nothing(
    portal_app: Flask, portal_partner: SeededPartner, portal_client: PortalClient, fake: FakeStripe
) -> None:
    body = b"not json, but signed"
    headers = {"Stripe-Signature": fake.signature(body)}
    before = row_counts(portal_app)
    response = portal_client.post(WEBHOOK, data=body, headers=headers)
    assert response.status_code == 400
    assert row_counts(portal_app) == before
