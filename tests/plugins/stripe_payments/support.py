"""Invoices and the ledger for the Stripe tests (here and in tests/reliability)."""

from __future__ import annotations

from datetime import date, timedelta

from flask import Flask
from sqlalchemy import func, select

from portal.core.db import get_database
from portal.features.billing.models import (
    BillingContract,
    Invoice,
    InvoicePayment,
    InvoiceState,
    PaymentKind,
)
from portal.features.billing.rules.invoicing import ContractFrequency
from portal.testing.support import SeededPartner

INVOICE_TOTAL = 10_000


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
