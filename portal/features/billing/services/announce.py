"""Billing's events for plugins, taken in the transaction that makes them true.

An issued invoice, an issued credit note and a ledger row are final: the event carries them as
this transaction sees them, and :func:`portal.integrations.delivery.publish` queues one delivery
per subscribing plugin, sent once the transaction commits. With no subscriber nothing is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.features.billing.models import (
    CreditNote,
    CreditNoteLine,
    Invoice,
    InvoiceLine,
    PaymentKind,
)
from portal.features.tenancy.services import parties
from portal.integrations.delivery import publish, subscribed
from portal.integrations.events import (
    CreditNoteIssued,
    CustomerRef,
    DocumentLine,
    InvoiceIssued,
    PartnerRef,
    PaymentRecorded,
)

if TYPE_CHECKING:
    from flask import Flask

INVOICE_HOOK = "portal_on_invoice_issued"
CREDIT_NOTE_HOOK = "portal_on_credit_note_issued"
PAYMENT_HOOK = "portal_on_payment_recorded"


def _line(line: InvoiceLine | CreditNoteLine) -> DocumentLine:
    return DocumentLine(
        position=line.position,
        kind=line.kind.value,
        description=line.description,
        period_start=line.period_start,
        period_end=line.period_end,
        quantity=line.quantity,
        unit_price=line.unit_price,
        amount_minor=line.amount_minor,
        subscription_id=line.subscription_id,
    )


def _lines(session: Session, model: Any, parent: Any, ids: Sequence[int]) -> dict[int, list[Any]]:
    found: dict[int, list[Any]] = {}
    rows = session.scalars(
        select(model)
        .where(parent.in_(list(ids)))
        .order_by(parent, model.position)
        .execution_options(unscoped=True)
    )
    for row in rows:
        found.setdefault(getattr(row, parent.key), []).append(row)
    return found


def invoices_issued(
    session: Session,
    partner_id: int,
    invoice_ids: Sequence[int],
    credit_note_ids: Sequence[int] = (),
    *,
    app: Flask | None = None,
) -> None:
    """``portal_on_invoice_issued`` for each of these invoices, just issued, and
    ``portal_on_credit_note_issued`` for the credit notes issued with them."""
    if invoice_ids and subscribed(INVOICE_HOOK, app):
        invoices = list(
            session.scalars(
                select(Invoice)
                .where(Invoice.id.in_(list(invoice_ids)), Invoice.partner_id == partner_id)
                .order_by(Invoice.id)
                .execution_options(unscoped=True, populate_existing=True)
            )
        )
        partner, customers = parties(session, partner_id, (i.customer_id for i in invoices))
        lines = _lines(session, InvoiceLine, InvoiceLine.invoice_id, [i.id for i in invoices])
        for invoice in invoices:
            _publish_invoice(session, invoice, partner, customers, lines.get(invoice.id, []), app)
    credit_notes_issued(session, partner_id, credit_note_ids, app=app)


def _publish_invoice(
    session: Session,
    invoice: Invoice,
    partner: PartnerRef,
    customers: dict[int, CustomerRef],
    lines: list[InvoiceLine],
    app: Flask | None,
) -> None:
    assert invoice.number and invoice.issued_on and invoice.due_on, "announced once issued"
    event = InvoiceIssued(
        invoice_id=invoice.id,
        number=invoice.number,
        partner=partner,
        customer=customers[invoice.customer_id],
        issued_on=invoice.issued_on,
        due_on=invoice.due_on,
        period_start=invoice.period_start,
        period_end=invoice.period_end,
        currency=invoice.currency,
        lines=tuple(_line(line) for line in lines),
        subtotal_minor=invoice.subtotal_minor,
        tax_minor=invoice.tax_minor,
        total_minor=invoice.total_minor,
    )
    publish(session, event, partner_id=partner.id, customer_id=invoice.customer_id, app=app)


def credit_notes_issued(
    session: Session, partner_id: int, credit_note_ids: Sequence[int], *, app: Flask | None = None
) -> None:
    """``portal_on_credit_note_issued`` for each of these credit notes, just issued."""
    if not credit_note_ids or not subscribed(CREDIT_NOTE_HOOK, app):
        return
    rows = session.execute(
        select(CreditNote, Invoice.number)
        .join(Invoice, Invoice.id == CreditNote.invoice_id)
        .where(CreditNote.id.in_(list(credit_note_ids)), CreditNote.partner_id == partner_id)
        .order_by(CreditNote.id)
        .execution_options(unscoped=True, populate_existing=True)
    ).all()
    partner, customers = parties(session, partner_id, (note.customer_id for note, _ in rows))
    lines = _lines(session, CreditNoteLine, CreditNoteLine.credit_note_id, [n.id for n, _ in rows])
    for note, invoice_number in rows:
        assert note.number and note.issued_on, "announced once issued"
        event = CreditNoteIssued(
            credit_note_id=note.id,
            number=note.number,
            kind=note.kind.value,
            reason=note.reason,
            invoice_id=note.invoice_id,
            invoice_number=invoice_number or "",
            partner=partner,
            customer=customers[note.customer_id],
            issued_on=note.issued_on,
            currency=note.currency,
            lines=tuple(_line(line) for line in lines.get(note.id, [])),
            subtotal_minor=note.subtotal_minor,
            tax_minor=note.tax_minor,
            total_minor=note.total_minor,
        )
        publish(session, event, partner_id=partner_id, customer_id=note.customer_id, app=app)


def payment_recorded(
    session: Session,
    *,
    payment_id: int,
    kind: PaymentKind,
    partner_id: int,
    customer_id: int,
    invoice_id: int,
    invoice_number: str | None,
    amount_minor: int,
    currency: str,
    gateway_key: str,
    gateway_reference: str,
    received_at: datetime,
    app: Flask | None = None,
) -> None:
    """``portal_on_payment_recorded`` for a ledger row just inserted."""
    if not subscribed(PAYMENT_HOOK, app):
        return
    partner, customers = parties(session, partner_id, [customer_id])
    event = PaymentRecorded(
        payment_id=payment_id,
        kind=kind.value,
        invoice_id=invoice_id,
        invoice_number=invoice_number or "",
        partner=partner,
        customer=customers[customer_id],
        amount_minor=amount_minor,
        currency=currency,
        gateway_key=gateway_key,
        gateway_reference=gateway_reference,
        received_at=received_at,
    )
    publish(session, event, partner_id=partner_id, customer_id=customer_id, app=app)
