"""Autopay: issuing an invoice of a contract marked for it charges the default card off-session,
once per invoice, through the outbox; a charge that needs the customer to authenticate, a
decline, or no card at all is shown on the dashboard and the invoice, and the Finance Managers
are emailed (once) a link to pay on-session."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from portal.core.db import get_database, utcnow
from portal.features.billing.models import BillingContract, InvoiceState
from portal.features.billing.services import documents as billing_documents
from portal.features.payments.models import AttemptKind, AttemptState
from portal.features.payments.services import pay as payments
from portal.features.tenancy.models import Partner
from portal.integrations.payments import AUTHENTICATION_REQUIRED
from portal.integrations.results import TechnicalFailure
from portal.outbox.items import run_item
from portal.outbox.models import OutboxItem, OutboxState
from tests.conftest import Mailbox
from tests.integration.invoice_pages_support import Line, contract, invoice
from tests.integration.payments_support import (
    ALWAYS_AUTHENTICATE,
    DECLINED_LATER,
    SUCCEEDS,
    TODAY,
    attempts_of,
    back_to_portal,
    card_form,
    demo_gateway,
    gateway_payments,
    ledger_of,
    pay,
    payments_app,
    signed_in,
)
from tests.integration.test_payments_cards import add_card
from tests.support import HttpsClient, Tenant

FINANCE = "finance_manager@a.alpha.example"


@pytest.fixture
def app(payment_apps: Callable[..., Flask]) -> Flask:
    return payments_app(payment_apps)


@pytest.fixture
def finance(app: Flask, tenant: Tenant) -> HttpsClient:
    return signed_in(app)


def draft_for(app: Flask, tenant: Tenant, *, autocharge: bool = True, amount: int = 5_000) -> int:
    """A draft invoice of a contract with (or without) autopay."""
    contract_id = contract(app, tenant, "a", name=f"Contract {amount} {autocharge}")
    with app.app_context(), get_database(app).sessions() as s:
        s.get_one(BillingContract, contract_id).autocharge = autocharge
        s.commit()
    return invoice(
        app,
        tenant,
        contract_id,
        number=None,
        period=(TODAY.replace(day=1), TODAY.replace(day=1) + timedelta(days=31)),
        lines=[Line("Seats", "5", "10.00", amount)],
        state=InvoiceState.DRAFT,
    )


def issue(app: Flask, tenant: Tenant, invoice_id: int) -> None:
    """Staff issue the draft (the billing service), as after their review."""
    with app.app_context(), get_database(app).sessions() as s:
        partner = s.get_one(Partner, tenant.partner.id)
        issued = billing_documents.issue_invoices(s, partner, [invoice_id], "staff:1")
        assert [i.id for i in issued] == [invoice_id]
        s.commit()


def items(app: Flask, kind: str) -> list[OutboxItem]:
    with app.app_context(), get_database(app).sessions() as s:
        return list(s.scalars(sa.select(OutboxItem).where(OutboxItem.kind == kind)))


def run_all(app: Flask, kind: str) -> list[str]:
    """Run the outbox items of ``kind`` (as a worker would), making them due first."""
    with app.app_context(), get_database(app).sessions() as s:
        s.execute(
            sa.update(OutboxItem)
            .where(OutboxItem.kind == kind, OutboxItem.state == OutboxState.PENDING)
            .values(available_at=utcnow() - timedelta(seconds=1))
        )
        s.commit()
    with app.app_context():
        return [run_item(app, item.id) for item in items(app, kind)]


def test_issuing_an_autopay_invoice_charges_the_default_card_once(
    app: Flask, tenant: Tenant, finance: HttpsClient, mailbox: Mailbox
) -> None:
    add_card(finance, SUCCEEDS)
    invoice_id = draft_for(app, tenant, amount=7_500)
    issue(app, tenant, invoice_id)
    (item,) = items(app, billing_documents.AUTOPAY_KIND)
    assert item.payload == {"invoice_id": invoice_id}
    assert run_all(app, billing_documents.AUTOPAY_KIND) == ["done"]
    (attempt,) = attempts_of(app, invoice_id)
    assert (attempt.kind, attempt.number, attempt.state) == (
        AttemptKind.AUTOPAY,
        0,
        AttemptState.SUCCEEDED,
    )
    assert [(p.amount_minor, p.gateway_reference) for p in ledger_of(app, invoice_id)] == [
        (7_500, attempt.payment_ref)
    ]
    page = finance.get(f"/invoices/{invoice_id}").get_data(as_text=True)
    assert 'id="invoice-status">Paid<' in page
    # the outbox delivering the item again, or a second item for the same invoice: no charge
    with app.app_context(), get_database(app).sessions() as s:
        billing_documents.enqueue_autopay(s, [invoice_id], app=app)
        s.commit()
        s.execute(sa.update(OutboxItem).values(state=OutboxState.PENDING, attempts=0))
        s.commit()
    assert set(run_all(app, billing_documents.AUTOPAY_KIND)) == {"done"}
    assert len(gateway_payments(app, invoice_id)) == 1
    assert len(ledger_of(app, invoice_id)) == 1
    assert len(attempts_of(app, invoice_id)) == 1
    assert not [m for m in mailbox.messages if "did not go through" in m["Subject"]]


def test_contracts_without_autopay_are_not_charged(
    app: Flask, tenant: Tenant, finance: HttpsClient
) -> None:
    add_card(finance, SUCCEEDS)
    invoice_id = draft_for(app, tenant, autocharge=False)
    issue(app, tenant, invoice_id)
    assert items(app, billing_documents.AUTOPAY_KIND) == []
    assert attempts_of(app, invoice_id) == []


@pytest.mark.parametrize(
    ("card", "code", "says"),
    [
        (
            ALWAYS_AUTHENTICATE,
            AUTHENTICATION_REQUIRED,
            "Your bank asked you to confirm this payment, so it could not be made automatically.",
        ),
        (DECLINED_LATER, "card_declined", "The card was declined: Your card was declined."),
        (None, payments.NO_CARD, "No card was saved to charge automatically."),
    ],
)
def test_a_charge_that_fails_is_shown_and_mailed_once_with_a_link_to_pay(
    app: Flask,
    tenant: Tenant,
    finance: HttpsClient,
    mailbox: Mailbox,
    card: str | None,
    code: str,
    says: str,
) -> None:
    if card is not None:
        add_card(finance, card)
    invoice_id = draft_for(app, tenant, amount=5_000)
    issue(app, tenant, invoice_id)
    mailbox.messages.clear()
    assert run_all(app, billing_documents.AUTOPAY_KIND) == ["done"]
    (attempt,) = attempts_of(app, invoice_id)
    assert (attempt.state, attempt.failure_code) == (AttemptState.FAILED, code)
    assert ledger_of(app, invoice_id) == []
    # the Finance Managers are told, once, with a link to pay on-session
    assert run_all(app, payments.AUTOPAY_FAILED_KIND) == ["done"]
    run_all(app, payments.AUTOPAY_FAILED_KIND)
    told = [m for m in mailbox.messages if m["To"] == FINANCE]
    assert len(told) == 1
    number = finance.get(f"/invoices/{invoice_id}").get_data(as_text=True)
    body = Mailbox.body(told[0])
    assert told[0]["Subject"].startswith("Automatic payment of invoice INV-")
    assert says in body and f"/invoices/{invoice_id}" in body and "$50.00" in body
    # the dashboard and the invoice show it, with the way to pay
    dashboard = finance.get("/").get_data(as_text=True)
    assert 'data-testid="failed-charges"' in dashboard and says in dashboard
    assert f'href="/invoices/{invoice_id}#pay"' in dashboard
    assert 'data-testid="failed-autopay"' in number and says in number
    # paid on-session: the failed charge is no longer shown
    started = pay(finance, invoice_id)
    back_to_portal(finance, card_form(finance, started.headers["Location"], SUCCEEDS))
    assert 'data-testid="failed-charges"' not in finance.get("/").get_data(as_text=True)
    assert 'data-testid="failed-autopay"' not in finance.get(f"/invoices/{invoice_id}").get_data(
        as_text=True
    )


def test_a_gateway_that_does_not_answer_is_retried_with_the_same_key(
    app: Flask, tenant: Tenant, finance: HttpsClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The charge went through at the gateway but its answer was lost (A6): the retry sends
    the same key, and the card is charged once."""
    add_card(finance, SUCCEEDS)
    invoice_id = draft_for(app, tenant)
    issue(app, tenant, invoice_id)
    gateway = demo_gateway(app)
    real = gateway.charge_saved_card

    def charged_but_lost(charge: Any) -> Any:
        real(charge)
        return TechnicalFailure("read timed out")

    monkeypatch.setattr(gateway, "charge_saved_card", charged_but_lost)
    assert run_all(app, billing_documents.AUTOPAY_KIND) == ["retry"]
    monkeypatch.setattr(gateway, "charge_saved_card", real)
    assert run_all(app, billing_documents.AUTOPAY_KIND) == ["done"]
    (attempt,) = attempts_of(app, invoice_id)
    (charge,) = gateway_payments(app, invoice_id)
    assert charge.idempotency_key == attempt.idempotency_key and charge.off_session
    assert attempt.state is AttemptState.SUCCEEDED
    assert len(ledger_of(app, invoice_id)) == 1


def test_an_invoice_paid_or_voided_before_the_charge_is_not_charged(
    app: Flask, tenant: Tenant, finance: HttpsClient
) -> None:
    add_card(finance, SUCCEEDS)
    paid = draft_for(app, tenant, amount=1_000)
    issue(app, tenant, paid)
    started = pay(finance, paid)
    back_to_portal(finance, card_form(finance, started.headers["Location"], SUCCEEDS))
    voided = draft_for(app, tenant, amount=2_000)
    issue(app, tenant, voided)
    with app.app_context(), get_database(app).sessions() as s:
        partner = s.get_one(Partner, tenant.partner.id)
        from portal.features.billing.models import Invoice

        billing_documents.void_invoice(s, partner, s.get_one(Invoice, voided), "staff:1", "error")
        s.commit()
    assert run_all(app, billing_documents.AUTOPAY_KIND) == ["done", "done"]
    assert [a.kind for a in attempts_of(app, paid)] == [AttemptKind.ON_SESSION]
    assert attempts_of(app, voided) == []
    assert len(ledger_of(app, paid)) == 1
