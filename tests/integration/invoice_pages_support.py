"""Seeding invoices as a billing run and the payment ledger leave them, for the invoice pages'
tests: a contract, issued (or draft, or void) invoices with their printed lines, credit notes
and payments, written straight to the tables so each test states exactly what is stored."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from flask import Flask
from pypdf import PdfReader

from portal.core.db import get_database
from portal.core.money import apply_rate
from portal.features.billing.models import (
    BillingContract,
    CreditNote,
    CreditNoteKind,
    CreditNoteLine,
    CreditNoteState,
    Invoice,
    InvoiceLine,
    InvoicePayment,
    InvoiceState,
    PaymentKind,
    rate_to_ppm,
)
from portal.features.billing.rules.invoicing import ContractFrequency, LineKind
from tests.support import Tenant


@dataclass(frozen=True)
class Line:
    description: str
    quantity: str
    unit_price: str  # major units
    amount_minor: int
    kind: LineKind = LineKind.ADVANCE
    days: int | None = None
    total_days: int | None = None


@dataclass
class Seeded:
    contracts: dict[str, int] = field(default_factory=dict)
    invoices: dict[str, int] = field(default_factory=dict)


def contract(
    app: Flask,
    tenant: Tenant,
    customer_key: str,
    *,
    currency: str = "USD",
    frequency: ContractFrequency = ContractFrequency.MONTHLY,
    name: str = "Main contract",
    terms_days: int = 30,
    tax_rate: str = "0",
) -> int:
    customer = tenant.customers[customer_key]
    with app.app_context(), get_database(app).sessions() as s:
        row = BillingContract(
            partner_id=tenant.partner.id,
            customer_id=customer.id,
            name=name,
            currency=currency,
            frequency=frequency,
            anchor_on=date(2025, 1, 1),
            payment_terms_days=terms_days,
            tax_rate_ppm=rate_to_ppm(Decimal(tax_rate)),
        )
        s.add(row)
        s.commit()
        return row.id


def invoice(
    app: Flask,
    tenant: Tenant,
    contract_id: int,
    *,
    number: str | None,
    period: tuple[date, date],
    lines: list[Line],
    issued_on: date | None = None,
    due_on: date | None = None,
    tax_rate: str = "0",
    state: InvoiceState = InvoiceState.ISSUED,
    currency: str = "USD",
    void_reason: str | None = None,
) -> int:
    """An invoice with its printed lines; totals are the sum of the lines plus tax on it."""
    subtotal = sum(line.amount_minor for line in lines)
    tax = apply_rate(subtotal, Decimal(tax_rate))
    with app.app_context(), get_database(app).sessions() as s:
        found = s.get_one(BillingContract, contract_id)
        row = Invoice(
            partner_id=tenant.partner.id,
            customer_id=found.customer_id,
            billing_contract_id=contract_id,
            number=number,
            state=state,
            period_start=period[0],
            period_end=period[1],
            currency=currency,
            subtotal_minor=subtotal,
            tax_minor=tax,
            total_minor=subtotal + tax,
            tax_rate_ppm=rate_to_ppm(Decimal(tax_rate)),
            issued_on=issued_on if state is not InvoiceState.DRAFT else None,
            due_on=due_on if state is not InvoiceState.DRAFT else None,
            issued_by="seed" if state is not InvoiceState.DRAFT else None,
            void_reason=void_reason,
            voided_by="staff:1" if state is InvoiceState.VOID else None,
            voided_at=datetime(2026, 1, 1, tzinfo=UTC) if state is InvoiceState.VOID else None,
            lines=[
                InvoiceLine(
                    partner_id=tenant.partner.id,
                    customer_id=found.customer_id,
                    position=position,
                    kind=line.kind,
                    description=line.description,
                    period_start=period[0],
                    period_end=period[1],
                    quantity=Decimal(line.quantity),
                    unit_price=Decimal(line.unit_price),
                    unit_price_minor=None,
                    days=line.days,
                    total_days=line.total_days,
                    amount_minor=line.amount_minor,
                )
                for position, line in enumerate(lines, start=1)
            ],
        )
        s.add(row)
        s.commit()
        return row.id


def credit_note(
    app: Flask,
    invoice_id: int,
    *,
    number: str,
    issued_on: date,
    lines: list[Line],
    kind: CreditNoteKind = CreditNoteKind.REDUCTION,
    reason: str = "",
) -> int:
    with app.app_context(), get_database(app).sessions() as s:
        found = s.get_one(Invoice, invoice_id)
        subtotal = sum(line.amount_minor for line in lines)
        tax = apply_rate(subtotal, found.tax_rate)
        row = CreditNote(
            partner_id=found.partner_id,
            customer_id=found.customer_id,
            invoice_id=invoice_id,
            kind=kind,
            state=CreditNoteState.ISSUED,
            number=number,
            reason=reason,
            currency=found.currency,
            subtotal_minor=subtotal,
            tax_minor=tax,
            total_minor=subtotal + tax,
            issued_on=issued_on,
            created_by="seed",
            lines=[
                CreditNoteLine(
                    partner_id=found.partner_id,
                    customer_id=found.customer_id,
                    position=position,
                    kind=line.kind,
                    description=line.description,
                    period_start=found.period_start,
                    period_end=found.period_end,
                    quantity=Decimal(line.quantity),
                    unit_price=Decimal(line.unit_price),
                    unit_price_minor=None,
                    days=line.days,
                    total_days=line.total_days,
                    amount_minor=line.amount_minor,
                )
                for position, line in enumerate(lines, start=1)
            ],
        )
        s.add(row)
        s.commit()
        return row.id


def payment(
    app: Flask,
    invoice_id: int,
    amount_minor: int,
    *,
    reference: str,
    received: date,
    kind: PaymentKind = PaymentKind.PAYMENT,
) -> None:
    with app.app_context(), get_database(app).sessions() as s:
        found = s.get_one(Invoice, invoice_id)
        s.add(
            InvoicePayment(
                partner_id=found.partner_id,
                customer_id=found.customer_id,
                invoice_id=invoice_id,
                kind=kind,
                amount_minor=amount_minor,
                currency=found.currency,
                gateway_key="demo",
                gateway_reference=reference,
                received_at=datetime.combine(received, datetime.min.time(), tzinfo=UTC)
                + timedelta(hours=10),
                recorded_by="seed",
            )
        )
        s.commit()


def pdf_text(data: bytes) -> str:
    """The text of every page of a PDF, as pypdf extracts it."""
    reader = PdfReader(io.BytesIO(data))
    return "\n".join(page.extract_text() or "" for page in reader.pages)
