"""The Stripe gateway's real SDK client against the fake Stripe on 127.0.0.1.

Nothing is mocked: every test drives ``StripeGateway`` (``stripe.StripeClient`` with its
``api`` base address at the fake) over HTTP to :class:`stripe_payments.fake.FakeStripe`, and
webhooks are signed exactly as Stripe signs them.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from portal.config import ROOT

# importable like an installed distribution (make installs it editable; the portal's loader
# puts the folder on sys.path the same way when it is not installed)
if importlib.util.find_spec("stripe_payments") is None:
    sys.path.insert(0, str(ROOT / "plugins" / "stripe_payments"))

from stripe_payments import EXTENSION, StripeGateway, StripeSettings
from stripe_payments.fake import FakeStripe

from portal.db import get_database
from portal.models.billing import (
    BillingContract,
    ContractFrequency,
    Invoice,
    InvoicePayment,
    InvoiceState,
    PaymentKind,
)
from portal.testing.support import SeededPartner

SECRET_KEY = "sk_test_portal_fake_0123456789"
WEBHOOK_SECRET = "whsec_portal_fake_test_secret"
INVOICE_TOTAL = 10_000


def settings_for(fake: FakeStripe, **overrides: str) -> dict[str, str]:
    return {
        "SECRET_KEY": SECRET_KEY,
        "WEBHOOK_SECRET": fake.webhook_secret,
        "API_BASE": fake.url,
        "TIMEOUT_SECONDS": "5",
        **overrides,
    }


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with FakeStripe(webhook_secret=WEBHOOK_SECRET) as server:
        yield server
    assert not server.errors, "the fake Stripe failed:\n" + "\n".join(server.errors)


@pytest.fixture
def gateway(fake: FakeStripe) -> StripeGateway:
    """The adapter, pointed at the fake."""
    return StripeGateway(StripeSettings.from_settings(settings_for(fake)))


# -- a portal with the plugin ------------------------------------------------------------------


@pytest.fixture
def portal_plugins() -> list[str]:
    return ["stripe"]


@pytest.fixture
def portal_config(fake: FakeStripe) -> dict[str, Any]:
    return {
        "PORTAL_PLUGIN_SETTINGS": {"stripe": settings_for(fake)},
        "PORTAL_PAYMENT_GATEWAY": "stripe",
        "PORTAL_BROKER_URL": "memory://",
    }


@pytest.fixture
def app_gateway(portal_app: Flask) -> StripeGateway:
    found = portal_app.extensions[EXTENSION]
    assert isinstance(found, StripeGateway)
    return found


def make_invoice(
    app: Flask,
    partner: SeededPartner,
    total: int = INVOICE_TOTAL,
    currency: str = "USD",
    *,
    state: InvoiceState = InvoiceState.ISSUED,
) -> int:
    """An issued invoice of ``total`` for the partner's customer (no lines: the ledger and the
    status need only the total)."""
    with app.app_context(), get_database(app).sessions() as s:
        contract = s.scalars(
            select(BillingContract).where(BillingContract.customer_id == partner.customer_id)
        ).first()
        if contract is None:
            contract = BillingContract(
                partner_id=partner.partner_id,
                customer_id=partner.customer_id,
                name="Main",
                currency=currency,
                frequency=ContractFrequency.MONTHLY,
                anchor_on=date(2026, 1, 1),
            )
            s.add(contract)
            s.flush()
        count = s.scalar(select(func.count()).select_from(Invoice)) or 0
        start = date(2026, 1, 1) + timedelta(days=31 * count)
        invoice = Invoice(
            partner_id=partner.partner_id,
            customer_id=partner.customer_id,
            billing_contract_id=contract.id,
            number=f"INV-{count + 1:06d}" if state is InvoiceState.ISSUED else None,
            state=state,
            period_start=start,
            period_end=start + timedelta(days=30),
            currency=currency,
            subtotal_minor=total,
            tax_minor=0,
            total_minor=total,
            issued_on=start if state is InvoiceState.ISSUED else None,
            due_on=start + timedelta(days=30) if state is InvoiceState.ISSUED else None,
        )
        s.add(invoice)
        s.commit()
        return invoice.id


def ledger(app: Flask, invoice_id: int | None = None) -> list[tuple[PaymentKind, int, str]]:
    """The ledger rows (kind, amount, reference), in the order recorded."""
    with app.app_context(), get_database(app).sessions() as s:
        query = select(InvoicePayment).order_by(InvoicePayment.id)
        if invoice_id is not None:
            query = query.where(InvoicePayment.invoice_id == invoice_id)
        return [(p.kind, p.amount_minor, p.gateway_reference) for p in s.scalars(query)]


def paid(app: Flask, invoice_id: int) -> int:
    return sum(-a if k is PaymentKind.REFUND else a for k, a, _ in ledger(app, invoice_id))


Deliver = Callable[[dict[str, Any]], Any]


def now() -> datetime:
    return datetime.now(UTC)
