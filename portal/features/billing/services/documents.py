"""Invoices and credit notes once they exist: numbering, issuing, voiding, discarding a draft,
and recording payments in the ledger (DESIGN §4, Billing; reliability notes C7).

Numbers come from :class:`~portal.features.billing.models.InvoiceNumberCounter`, incremented in the
transaction that issues: ``UPDATE … RETURNING`` takes the counter row's lock until the commit,
so two issuers take turns, and a transaction that fails rolls its increment back with it, so
the sequence has no gaps. The caller's transaction is the issuing one: these functions never
commit. Each issued invoice gets an outbox item (``billing.invoice_issued``) in the same
transaction; its handler emails the customer's Finance Managers once the issue is committed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, cast

from flask import Flask, has_request_context, request
from sqlalchemy import Connection, Table, bindparam, delete, select, update
from sqlalchemy.orm import Session

from portal.core.db import insert_ignoring, utcnow
from portal.core.errors import ServiceError, _
from portal.core.proration import Period
from portal.features.billing.models import (
    BillingContract,
    BillingSettings,
    CreditNote,
    CreditNoteKind,
    CreditNoteLine,
    CreditNoteState,
    DocumentKind,
    Invoice,
    InvoiceNumberCounter,
    InvoicePayment,
    InvoiceState,
    PaymentKind,
)
from portal.features.billing.rules.invoicing import (
    DraftDocument,
    DraftLine,
    credit_for_void,
)
from portal.features.billing.services import announce
from portal.features.identity import audit
from portal.features.identity.services.people import finance_contacts
from portal.features.tenancy import mail
from portal.features.tenancy.models import Customer, Partner, PartnerHost
from portal.features.tenancy.services import local_today, portal_base_url
from portal.outbox.handlers import Done, Outcome
from portal.outbox.items import enqueue
from portal.outbox.models import OutboxItem

log = logging.getLogger(__name__)

ISSUED_KIND = "billing.invoice_issued"
NUMBER_DIGITS = 6
REASON_LIMIT = 1000

_INVOICE = cast(Table, Invoice.__table__)
_CREDIT_NOTE = cast(Table, CreditNote.__table__)
_COUNTER = cast(Table, InvoiceNumberCounter.__table__)
_PAYMENT = cast(Table, InvoicePayment.__table__)


class ConcurrentChange(ServiceError):
    """Someone else issued, voided or discarded the document meanwhile (answer 409)."""


# -- settings -------------------------------------------------------------------------------------


def billing_settings(db_session: Session, partner_id: int) -> BillingSettings:
    """The partner's billing settings: its row, or the defaults (review on) when it has none.
    The default object is not added to the session."""
    found = db_session.scalars(
        select(BillingSettings).where(BillingSettings.partner_id == partner_id)
    ).first()
    if found is not None:
        return found
    return BillingSettings(
        partner_id=partner_id, invoice_review=True, invoice_prefix="INV-", credit_note_prefix="CN-"
    )


def set_invoice_review(db_session: Session, partner: Partner, on: bool, by: str) -> None:
    """Switch the staff review step on (runs leave drafts) or off (runs issue at once)."""
    settings = billing_settings(db_session, partner.id)
    if settings.id is None:
        db_session.add(settings)
    if settings.invoice_review == on:
        return
    settings.invoice_review = on
    settings.updated_at = utcnow()
    settings.updated_by = by
    audit.record(
        db_session, partner_id=partner.id, actor=by, action="billing.review_changed", review=on
    )


# -- numbering ------------------------------------------------------------------------------------


_LEDGER_INSERTS: dict[str, Any] = {}
# billing.services.holds handles it: an account on automatic hold is reviewed after a payment
REVIEW_KIND = "billing.review_hold"


def queue_review_after_payment(db_session: Session, customer_id: int, partner_id: int) -> None:
    """With a payment recorded: an account on automatic hold is reviewed at once (its item
    runs after the payment commits); others need nothing, for one read."""
    held = db_session.scalar(
        select(Customer.credit_hold_automatic)
        .where(Customer.id == customer_id)
        .execution_options(unscoped=True)
    )
    if held:
        enqueue(
            db_session,
            REVIEW_KIND,
            {"customer_id": customer_id},
            partner_id=partner_id,
            customer_id=customer_id,
        )


def insert_ledger_row(
    db_session: Session,
    *,
    partner_id: int,
    customer_id: int,
    invoice_id: int,
    invoice_number: str | None,
    currency: str,
    kind: PaymentKind,
    amount_minor: int,
    gateway_key: str,
    gateway_reference: str,
    received_at: datetime,
    recorded_by: str,
) -> int | None:
    """The ledger row of one gateway transaction, and its audit entry, as Core statements;
    its id, or None when ``(gateway_key, gateway_reference)`` was already recorded. The caller
    has checked the payment against the invoice (:func:`record_payment`, or the webhook path,
    which runs once per delivery and stays clear of ORM round trips)."""
    connection = db_session.connection()
    statement = _LEDGER_INSERTS.get(connection.dialect.name)
    if statement is None:
        conflict = ("gateway_key", "gateway_reference")
        statement = insert_ignoring(connection, _PAYMENT, conflict).returning(_PAYMENT.c.id)
        _LEDGER_INSERTS[connection.dialect.name] = statement
    inserted = connection.execute(
        statement,
        {
            "partner_id": partner_id,
            "customer_id": customer_id,
            "invoice_id": invoice_id,
            "kind": kind,
            "amount_minor": amount_minor,
            "currency": currency,
            "gateway_key": gateway_key,
            "gateway_reference": gateway_reference[:255],
            "received_at": received_at,
            "recorded_at": utcnow(),
            "recorded_by": recorded_by,
        },
    ).scalar()
    if inserted is None:
        return None
    audit.insert_row(
        db_session,
        partner_id=partner_id,
        customer_id=customer_id,
        actor=recorded_by,
        action=f"invoice.{kind.value}_recorded",
        invoice=invoice_id,
        number=invoice_number,
        amount_minor=amount_minor,
        currency=currency,
        gateway=gateway_key,
        reference=gateway_reference,
    )
    announce.payment_recorded(
        db_session,
        payment_id=int(inserted),
        kind=kind,
        partner_id=partner_id,
        customer_id=customer_id,
        invoice_id=invoice_id,
        invoice_number=invoice_number,
        amount_minor=amount_minor,
        currency=currency,
        gateway_key=gateway_key,
        gateway_reference=gateway_reference[:255],
        received_at=received_at,
    )
    return int(inserted)


def next_numbers(connection: Connection, partner_id: int, kind: DocumentKind, count: int) -> range:
    """Take the next ``count`` numbers of the partner's ``kind`` sequence, in the caller's
    transaction (which holds the counter's row lock until it ends)."""
    if count <= 0:
        return range(0)
    connection.execute(
        insert_ignoring(connection, _COUNTER, ("partner_id", "kind")),
        {"partner_id": partner_id, "kind": kind, "last_number": 0},
    )
    last = connection.execute(
        update(_COUNTER)
        .where(_COUNTER.c.partner_id == partner_id, _COUNTER.c.kind == kind)
        .values(last_number=_COUNTER.c.last_number + count)
        .returning(_COUNTER.c.last_number)
    ).scalar_one()
    return range(last - count + 1, last + 1)


def document_number(prefix: str, number: int) -> str:
    return f"{prefix}{number:0{NUMBER_DIGITS}d}"


# -- issuing --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Draft:
    """What issuing one draft needs to know (read in bulk by the run, by the ORM otherwise)."""

    invoice_id: int
    customer_id: int
    payment_terms_days: int


def issue_drafts(
    db_session: Session,
    partner_id: int,
    drafts: Sequence[Draft],
    *,
    today: date,
    by: str,
    settings: BillingSettings,
    base_url: str | None = None,
    app: Flask | None = None,
    notify: bool = True,
) -> dict[int, str]:
    """Number and issue ``drafts`` (and their draft credit notes) in the caller's transaction;
    returns the invoice numbers by invoice id.

    Numbers follow the invoice ids' order. Each invoice becomes due ``payment_terms_days``
    after ``today`` and gets an outbox item that mails its Finance Managers after the commit.
    Every draft must still be a draft: one issued meanwhile by someone else raises
    :class:`ConcurrentChange` (the caller rolls back, and with it the numbers it took).
    ``notify`` False issues without mail (history loaded afterwards, such as the demo's).
    """
    if not drafts:
        return {}
    connection = db_session.connection()
    ordered = sorted(drafts, key=lambda draft: draft.invoice_id)
    numbers = next_numbers(connection, partner_id, DocumentKind.INVOICE, len(ordered))
    given = {
        draft.invoice_id: document_number(settings.invoice_prefix, number)
        for draft, number in zip(ordered, numbers, strict=True)
    }
    result = connection.execute(
        update(_INVOICE)
        .where(_INVOICE.c.id == bindparam("b_id"), _INVOICE.c.state == InvoiceState.DRAFT)
        .values(
            state=InvoiceState.ISSUED,
            number=bindparam("b_number"),
            issued_on=today,
            due_on=bindparam("b_due"),
            issued_by=by,
        ),
        [
            {
                "b_id": draft.invoice_id,
                "b_number": given[draft.invoice_id],
                "b_due": today + timedelta(days=draft.payment_terms_days),
            }
            for draft in ordered
        ],
    )
    if result.rowcount != len(ordered):
        raise ConcurrentChange(
            _("Someone else issued or changed these invoices meanwhile; nothing was issued.")
        )
    credit_note_ids = _issue_credit_notes(
        connection, partner_id, [draft.invoice_id for draft in ordered], today, settings
    )
    for draft in ordered if notify else ():
        payload: dict[str, Any] = {"invoice_id": draft.invoice_id}
        if base_url:
            payload["base_url"] = base_url
        enqueue(
            db_session,
            ISSUED_KIND,
            payload,
            partner_id=partner_id,
            customer_id=draft.customer_id,
            app=app,
        )
    if notify:
        # issue 6, autopay: invoices of autocharge contracts are charged to the saved card by
        # an outbox item enqueued here, in the issuing transaction
        # (portal.features.payments.services.pay)

        enqueue_autopay(db_session, [draft.invoice_id for draft in ordered], app=app)
        announce.invoices_issued(
            db_session, partner_id, [d.invoice_id for d in ordered], credit_note_ids, app=app
        )
    return given


def _issue_credit_notes(
    connection: Connection,
    partner_id: int,
    invoice_ids: Sequence[int],
    today: date,
    settings: BillingSettings,
) -> list[int]:
    """The draft credit notes of invoices being issued are issued with them; returns their
    ids."""
    ids = list(
        connection.scalars(
            select(_CREDIT_NOTE.c.id)
            .where(
                _CREDIT_NOTE.c.invoice_id.in_(list(invoice_ids)),
                _CREDIT_NOTE.c.state == CreditNoteState.DRAFT,
            )
            .order_by(_CREDIT_NOTE.c.invoice_id, _CREDIT_NOTE.c.id)
        )
    )
    numbers = next_numbers(connection, partner_id, DocumentKind.CREDIT_NOTE, len(ids))
    if ids:
        connection.execute(
            update(_CREDIT_NOTE)
            .where(_CREDIT_NOTE.c.id == bindparam("b_id"))
            .values(state=CreditNoteState.ISSUED, number=bindparam("b_number"), issued_on=today),
            [
                {"b_id": cid, "b_number": document_number(settings.credit_note_prefix, number)}
                for cid, number in zip(ids, numbers, strict=True)
            ],
        )
    return ids


def issue_invoices(
    db_session: Session,
    partner: Partner,
    invoice_ids: Sequence[int],
    by: str,
    today: date | None = None,
    *,
    notify: bool = True,
) -> list[Invoice]:
    """Issue the partner's drafts among ``invoice_ids`` (staff after review); the others (issued
    or discarded meanwhile) are left as they are. Returns the invoices issued, audited one by
    one; the caller commits, which sends the emails (unless ``notify`` is False)."""
    today = today or local_today(partner, utcnow())
    found = db_session.execute(
        select(Invoice.id, Invoice.customer_id, BillingContract.payment_terms_days)
        .join(BillingContract, BillingContract.id == Invoice.billing_contract_id)
        .where(
            Invoice.id.in_(sorted(set(invoice_ids))),
            Invoice.partner_id == partner.id,
            Invoice.state == InvoiceState.DRAFT,
        )
        .order_by(Invoice.id)
        .with_for_update(of=Invoice)
    ).all()
    drafts = [Draft(row[0], row[1], row[2]) for row in found]
    numbers = issue_drafts(
        db_session,
        partner.id,
        drafts,
        today=today,
        by=by,
        settings=billing_settings(db_session, partner.id),
        base_url=_request_base_url(db_session, partner),
        notify=notify,
    )
    for draft in drafts:
        audit.record(
            db_session,
            partner_id=partner.id,
            customer_id=draft.customer_id,
            actor=by,
            action="invoice.issued",
            invoice=draft.invoice_id,
            number=numbers[draft.invoice_id],
        )
    issued = list(
        db_session.scalars(
            select(Invoice)
            .where(Invoice.id.in_(list(numbers)))
            .order_by(Invoice.id)
            .execution_options(populate_existing=True)
        )
    )
    return issued


def issue_invoice(
    db_session: Session, partner: Partner, invoice: Invoice, by: str, today: date | None = None
) -> Invoice:
    """Issue one draft; refuses (ServiceError) an invoice that is not a draft."""
    if invoice.state is not InvoiceState.DRAFT:
        raise ServiceError(_("Only a draft invoice can be issued."))
    if not issue_invoices(db_session, partner, [invoice.id], by, today):
        raise ConcurrentChange(
            _("Someone else issued or discarded this invoice meanwhile; reload the page.")
        )
    db_session.refresh(invoice)
    return invoice


def _request_base_url(db_session: Session, partner: Partner) -> str | None:
    """The address the customer's portal answers on, when staff issue from one of the partner's
    own host names (it keeps a development port); None lets the mail use the partner's host."""
    if not has_request_context():
        return None
    hosts = set(
        db_session.scalars(
            select(PartnerHost.host)
            .where(PartnerHost.partner_id == partner.id)
            .execution_options(unscoped=True)
        )
    )
    if (request.host.partition(":")[0]).lower() in hosts:
        return request.host_url.rstrip("/")
    return None


# -- voiding and discarding -----------------------------------------------------------------------


def void_invoice(
    db_session: Session,
    partner: Partner,
    invoice: Invoice,
    by: str,
    reason: str,
    today: date | None = None,
) -> CreditNote:
    """Void an issued invoice: it stays (with its number) and a credit note of its whole amount,
    numbered in the credit-note sequence, cancels it. Audited; the caller commits.

    Payments already received stay in the ledger (a refund is the payment gateway's, issue 6);
    the balance then shows what the customer is owed. A draft is discarded, not voided.
    """
    reason = (reason or "").strip()
    if not reason:
        raise ServiceError(_("Say why the invoice is void, for the record."), "reason")
    if len(reason) > REASON_LIMIT:
        raise ServiceError(
            _("Keep the reason under %(count)d characters.", count=REASON_LIMIT), "reason"
        )
    if invoice.partner_id != partner.id:
        raise ServiceError(_("This invoice cannot be changed here."))
    if invoice.state is InvoiceState.DRAFT:
        raise ServiceError(_("A draft invoice is discarded, not voided."))
    if invoice.state is InvoiceState.VOID:
        raise ServiceError(_("This invoice is already void."))
    connection = db_session.connection()
    now = utcnow()
    claimed = connection.execute(
        update(_INVOICE)
        .where(_INVOICE.c.id == invoice.id, _INVOICE.c.state == InvoiceState.ISSUED)
        .values(state=InvoiceState.VOID, voided_at=now, voided_by=by, void_reason=reason)
    )
    if claimed.rowcount != 1:
        raise ConcurrentChange(_("Someone else voided this invoice meanwhile; reload the page."))
    db_session.refresh(invoice)
    today = today or local_today(partner, now)
    document = credit_for_void(invoice_document(invoice))
    settings = billing_settings(db_session, partner.id)
    (number,) = next_numbers(connection, partner.id, DocumentKind.CREDIT_NOTE, 1)
    credit = CreditNote(
        partner_id=invoice.partner_id,
        customer_id=invoice.customer_id,
        invoice_id=invoice.id,
        kind=CreditNoteKind.VOID,
        state=CreditNoteState.ISSUED,
        number=document_number(settings.credit_note_prefix, number),
        reason=reason,
        currency=document.currency,
        subtotal_minor=document.subtotal_minor,
        tax_minor=document.tax_minor,
        total_minor=document.total_minor,
        issued_on=today,
        created_by=by,
        created_at=now,
        lines=[
            CreditNoteLine(partner_id=invoice.partner_id, customer_id=invoice.customer_id, **fields)
            for fields in line_rows(document.lines)
        ],
    )
    db_session.add(credit)
    db_session.flush()
    audit.record(
        db_session,
        partner_id=partner.id,
        customer_id=invoice.customer_id,
        actor=by,
        action="invoice.voided",
        invoice=invoice.id,
        number=invoice.number,
        reason=reason,
        credit_note=credit.number,
        total_minor=invoice.total_minor,
        currency=invoice.currency,
    )
    announce.credit_notes_issued(db_session, partner.id, [credit.id])
    return credit


def discard_draft(
    db_session: Session, partner: Partner, invoice: Invoice, by: str, reason: str
) -> None:
    """Delete a draft (and its draft credit note) that staff found wrong at review; the next run
    for its date makes it again, from the corrected facts. Audited; the caller commits."""
    reason = (reason or "").strip()
    if not reason:
        raise ServiceError(_("Say why the draft is discarded, for the record."), "reason")
    if invoice.partner_id != partner.id:
        raise ServiceError(_("This invoice cannot be changed here."))
    if invoice.state is not InvoiceState.DRAFT:
        raise ServiceError(_("Only a draft invoice can be discarded; void an issued one."))
    details = {
        "invoice": invoice.id,
        "contract": invoice.billing_contract_id,
        "period_start": invoice.period_start.isoformat(),
        "total_minor": invoice.total_minor,
        "reason": reason[:REASON_LIMIT],
    }
    connection = db_session.connection()
    connection.execute(
        delete(_CREDIT_NOTE).where(
            _CREDIT_NOTE.c.invoice_id == invoice.id,
            _CREDIT_NOTE.c.state == CreditNoteState.DRAFT,
        )
    )
    deleted = connection.execute(
        delete(_INVOICE).where(_INVOICE.c.id == invoice.id, _INVOICE.c.state == InvoiceState.DRAFT)
    )
    if deleted.rowcount != 1:
        raise ConcurrentChange(_("Someone else issued this invoice meanwhile; reload the page."))
    db_session.expunge(invoice)
    audit.record(
        db_session,
        partner_id=partner.id,
        customer_id=invoice.customer_id,
        actor=by,
        action="invoice.discarded",
        **details,
    )


# -- payments -------------------------------------------------------------------------------------


def record_payment(
    db_session: Session,
    invoice: Invoice,
    *,
    kind: PaymentKind,
    amount_minor: int,
    gateway_key: str,
    gateway_reference: str,
    received_at: datetime,
    recorded_by: str,
    currency: str | None = None,
) -> InvoicePayment | None:
    """Add a payment (or refund) to the ledger, once per gateway transaction: the same
    ``(gateway_key, gateway_reference)`` again records nothing and returns None (a webhook
    delivered twice). The invoice's paid amount and status follow from the ledger when read.
    """
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int) or amount_minor <= 0:
        raise ServiceError(_("A payment is a whole, positive number of minor units."), "amount")
    if currency is not None and currency.upper() != invoice.currency:
        raise ServiceError(
            _(
                "The payment is in %(paid)s, the invoice in %(invoiced)s.",
                paid=currency.upper(),
                invoiced=invoice.currency,
            ),
            "currency",
        )
    if invoice.state is InvoiceState.DRAFT or (
        invoice.state is InvoiceState.VOID and kind is PaymentKind.PAYMENT
    ):
        raise ServiceError(_("Payments are taken only for issued invoices."))
    if not gateway_key or not gateway_reference:
        raise ServiceError(_("A payment needs the gateway and its reference."))
    inserted = insert_ledger_row(
        db_session,
        partner_id=invoice.partner_id,
        customer_id=invoice.customer_id,
        invoice_id=invoice.id,
        invoice_number=invoice.number,
        currency=invoice.currency,
        kind=kind,
        amount_minor=amount_minor,
        gateway_key=gateway_key,
        gateway_reference=gateway_reference,
        received_at=received_at,
        recorded_by=recorded_by,
    )
    if inserted is None:
        return None
    if kind is PaymentKind.PAYMENT:
        # gateway payments are reviewed by their receipt's handler, off the webhook's path
        queue_review_after_payment(db_session, invoice.customer_id, invoice.partner_id)
    return db_session.get(InvoicePayment, inserted)


# -- documents as the domain sees them ------------------------------------------------------------


def invoice_document(invoice: Invoice) -> DraftDocument:
    """A stored invoice as a domain document (for its void credit note, and checks)."""
    return DraftDocument(
        currency=invoice.currency,
        lines=tuple(
            DraftLine(
                kind=line.kind,
                subscription_id=line.subscription_id,
                description=line.description,
                period=Period(line.period_start, line.period_end),
                quantity=line.quantity,
                unit_price_minor=line.unit_price_minor,
                unit_price=line.unit_price,
                days=line.days,
                total_days=line.total_days,
                amount_minor=line.amount_minor,
            )
            for line in invoice.lines
        ),
        subtotal_minor=invoice.subtotal_minor,
        tax_minor=invoice.tax_minor,
        total_minor=invoice.total_minor,
    )


def line_rows(lines: Sequence[DraftLine]) -> list[dict[str, Any]]:
    """The columns of a document's stored lines, numbered from 1 in the document's order."""
    return [
        {
            "position": position,
            "kind": line.kind,
            "subscription_id": line.subscription_id,
            "description": line.description[:500],
            "period_start": line.period.start,
            "period_end": line.period.end,
            "quantity": line.quantity,
            "unit_price_minor": line.unit_price_minor,
            "unit_price": line.unit_price,
            "days": line.days,
            "total_days": line.total_days,
            "amount_minor": line.amount_minor,
        }
        for position, line in enumerate(lines, start=1)
    ]


def notify_issued(item: OutboxItem, session: Session) -> Outcome:
    """Outbox handler for ``billing.invoice_issued``: mail the customer's Finance Managers (its
    Administrators when it has none) a link to the invoice, each in their language. A voided
    invoice is not mailed (the plugins heard of its issue in the issuing transaction,
    :mod:`portal.features.billing.services.announce`)."""
    invoice_id = int(str(item.payload["invoice_id"]))
    invoice = session.scalars(select(Invoice).where(Invoice.id == invoice_id)).first()
    if invoice is None or invoice.state is not InvoiceState.ISSUED:
        return Done({"skipped": "not issued"})
    partner = session.get_one(Partner, invoice.partner_id)
    customer = session.get_one(Customer, invoice.customer_id)
    recipients = finance_contacts(session, customer.id)
    base = str(item.payload.get("base_url") or "") or portal_base_url(session, partner)
    link = f"{base}/invoices/{invoice.id}"
    for user in recipients:
        mail.send(
            mail.render_mail(
                "invoice_issued",
                partner,
                user.locale,
                to=user.email,
                invoice=invoice,
                customer=customer,
                link=link,
            ),
            partner,
        )
    return Done({"told": len(recipients)})


AUTOPAY_KIND = "payments.autopay"


def enqueue_autopay(
    db_session: Session, invoice_ids: Iterable[int], *, app: Flask | None = None
) -> int:
    """Enqueue the off-session charge of every invoice among ``invoice_ids`` whose contract is
    marked for autopay, in the caller's (issuing) transaction. Returns how many."""
    ids = sorted(set(invoice_ids))
    if not ids:
        return 0
    rows = db_session.execute(
        select(Invoice.id, Invoice.partner_id, Invoice.customer_id)
        .join(BillingContract, BillingContract.id == Invoice.billing_contract_id)
        .where(Invoice.id.in_(ids), BillingContract.autocharge.is_(True))
        .order_by(Invoice.id)
    ).all()
    for invoice_id, partner_id, customer_id in rows:
        enqueue(
            db_session,
            AUTOPAY_KIND,
            {"invoice_id": invoice_id},
            partner_id=partner_id,
            customer_id=customer_id,
            max_attempts=AUTOPAY_MAX_ATTEMPTS,
            app=app,
        )
    return len(rows)


AUTOPAY_MAX_ATTEMPTS = 8
