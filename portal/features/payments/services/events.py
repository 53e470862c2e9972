"""Payments the gateways confirm, recorded exactly once whatever the network does (issue 6;
reliability notes §1.2, block A).

Three paths learn that money arrived, and all three end in :func:`record_payment_outcome`:

- the gateway's **webhook** (:func:`receive_webhook`): the signature is verified before
  anything else, then, in ONE transaction, the event is inserted once by its id (``ON CONFLICT
  DO NOTHING``: a duplicate delivery, concurrent or later, stops there) together with its
  effect on the ledger;
- the **return page** (the payments UX), which asks the gateway for the payment's true state
  and records it if it succeeded, racing the webhook (A4);
- the daily **reconciliation** (:func:`reconcile`), which lists the gateway's recent payments
  and records those no webhook announced (A7).

Each effect is keyed by the gateway's own id under a unique constraint: a payment by its
PaymentIntent (``invoice_payment (gateway_key, gateway_reference)``), a refund by its refund id,
a dispute by its dispute id. Whichever path comes first records it; the others find it there
and do nothing, so exactly one ledger row, one receipt and one ``portal_on_payment_recorded``
follow. The receipt and the event's deliveries (one per subscribing plugin) are outbox items
added in the recording transaction, by the ledger itself
(:func:`portal.features.billing.services.documents.insert_ledger_row`): sent after the commit,
never for a rolled-back one, and neither waits for the other.

The ledger only grows and an invoice's status is derived from it, so events arriving out of
order cannot move an invoice backwards: a ``payment_failed`` after the ``succeeded`` has nothing
to undo, a refund that arrives before its payment records the payment first (the refund event
carries it, or the gateway is asked), and the final state is that of the ordered sequence (A2).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, cast

from flask import Flask, current_app
from sqlalchemy import Connection, Integer, Table, bindparam, case, func, select, update
from sqlalchemy.orm import Session

from portal.core.db import get_database, insert_ignoring, utcnow
from portal.features.billing.models import (
    CreditNote,
    CreditNoteState,
    Invoice,
    InvoicePayment,
    InvoiceState,
    PaymentKind,
)
from portal.features.billing.services import announce, holds
from portal.features.billing.services.documents import insert_ledger_row
from portal.features.billing.services.queries import invoice_detail
from portal.features.identity import audit
from portal.features.payments.models import (
    AUTOPAY_NUMBER,
    AttemptState,
    PaymentAttempt,
    PaymentDispute,
    PaymentWebhookEvent,
    WebhookResult,
)
from portal.features.payments.services.pay import (
    REASON_LIMIT,
    _lock_invoice,
    tell_autopay_failed,
)
from portal.features.tenancy import mail
from portal.features.tenancy.models import Customer, Partner
from portal.features.tenancy.services import local_today
from portal.integrations.payments import (
    Dispute,
    EventKind,
    GatewayUnavailable,
    PaymentGateway,
    PaymentOutcome,
    PaymentStatus,
    Refund,
    RefundStatus,
    WebhookEvent,
)
from portal.integrations.registry import integrations
from portal.integrations.results import Succeeded
from portal.outbox.handlers import Done, Outcome
from portal.outbox.items import enqueue_row
from portal.outbox.models import OutboxItem

log = logging.getLogger(__name__)

RECEIPT_KIND = "payments.receipt"
RECONCILE_DAYS = 30  # the gateways keep events for about this long (Stripe: 30 days)
NOTE_LIMIT = 500

_EVENT = cast(Table, PaymentWebhookEvent.__table__)
_INVOICE = cast(Table, Invoice.__table__)
_PAYMENT = cast(Table, InvoicePayment.__table__)
_DISPUTE = cast(Table, PaymentDispute.__table__)
_ATTEMPT = cast(Table, PaymentAttempt.__table__)
_CREDIT = cast(Table, CreditNote.__table__)

# a refund that did not go through: the ledger keeps its row and adds this reversal (a payment
# row of the same amount under ``<refund id><FAILED_SUFFIX>``), so the refund no longer counts
FAILED_SUFFIX = ":failed"
UNDONE_REFUNDS = frozenset({RefundStatus.FAILED, RefundStatus.CANCELED})
# a lost dispute: the disputed amount is taken back; recorded as a refund row under its id
LOST = "lost"
CLOSED_DISPUTES = frozenset({"won", "lost", "warning_closed"})


# -- recording one payment ------------------------------------------------------------------------


@dataclass(frozen=True)
class Recording:
    """What :func:`record_payment_outcome` did.

    ``recorded`` is True only for the one call that added the payment to the ledger;
    ``payment_id`` is the ledger row whoever added it; ``unmatched`` says why money could not
    be taken for an invoice (no such invoice, another currency, a void invoice...).
    """

    recorded: bool
    payment_id: int | None = None
    invoice_id: int | None = None
    unmatched: str | None = None


def record_payment_outcome(
    db_session: Session,
    gateway_key: str,
    outcome: PaymentOutcome,
    *,
    source: str,
    invoice_id: int | None = None,
) -> Recording:
    """Record a payment the gateway confirmed, exactly once per gateway payment.

    Call it with the gateway's answer (``get_payment``, a webhook's payment, a listed one):
    anything but ``SUCCEEDED`` records nothing. The invoice is ``invoice_id`` when the caller
    knows it (the return page), else the outcome's ``invoice_ref``; both given and different is
    refused. The caller's transaction is the recording one (this never commits): the ledger row,
    its audit event, the receipt and the ``portal_on_payment_recorded`` outbox items go together.
    Safe to call concurrently from several processes: the ledger's unique constraint lets one
    insert win, and the others return ``recorded=False`` with the winner's row.
    """
    if outcome.status is not PaymentStatus.SUCCEEDED:
        return Recording(False)
    invoice = _invoice_for(db_session, outcome, invoice_id)
    if isinstance(invoice, str):
        return Recording(False, unmatched=invoice)
    return _record(db_session, gateway_key, invoice, outcome, source)


@dataclass(frozen=True)
class _InvoiceRow:
    """What recording needs of an invoice (one light Core row, not the ORM object)."""

    id: int
    partner_id: int
    customer_id: int
    state: InvoiceState
    currency: str
    number: str | None


_INVOICE_COLUMNS = (
    _INVOICE.c.id,
    _INVOICE.c.partner_id,
    _INVOICE.c.customer_id,
    _INVOICE.c.state,
    _INVOICE.c.currency,
    _INVOICE.c.number,
)


# The webhook's statements, built once: building one costs about what sending it does.
_INVOICE_BY_ID = select(*_INVOICE_COLUMNS).where(_INVOICE.c.id == bindparam("invoice_id"))
_LEDGER_ID = select(_PAYMENT.c.id).where(
    _PAYMENT.c.gateway_key == bindparam("gateway_key"),
    _PAYMENT.c.gateway_reference == bindparam("reference"),
)
_INSERTS: dict[tuple[str, str], Any] = {}


def _insert_once(connection: Connection, table: Table, conflict: tuple[str, ...]) -> Any:
    """``INSERT … ON CONFLICT (conflict) DO NOTHING RETURNING id`` for the connection's engine
    (built once per engine kind and table)."""
    key = (connection.dialect.name, table.name)
    statement = _INSERTS.get(key)
    if statement is None:
        statement = insert_ignoring(connection, table, conflict).returning(table.c.id)
        _INSERTS[key] = statement
    return statement


def _invoice_row(db_session: Session, invoice_id: int) -> _InvoiceRow | None:
    row = db_session.connection().execute(_INVOICE_BY_ID, {"invoice_id": invoice_id}).first()
    return None if row is None else _InvoiceRow(*row)


def _invoice_for(
    db_session: Session, outcome: PaymentOutcome, invoice_id: int | None
) -> _InvoiceRow | str:
    """The invoice the payment is for, or why there is none (a note for staff)."""
    ref = (outcome.invoice_ref or "").strip()
    if ref and not ref.isdigit():
        return f"the payment names invoice {ref[:60]!r}, which is not a portal invoice id"
    if invoice_id is not None and ref and int(ref) != invoice_id:
        return f"the payment is for invoice {ref}, not {invoice_id}"
    wanted = invoice_id if invoice_id is not None else (int(ref) if ref else None)
    if wanted is None:
        return "the payment names no invoice"
    invoice = _invoice_row(db_session, wanted)
    if invoice is None:
        return f"invoice {wanted} does not exist"
    customer_ref = (outcome.customer_ref or "").strip()
    if customer_ref and customer_ref != str(invoice.customer_id):
        return f"invoice {wanted} is not customer {customer_ref[:60]}'s"
    return invoice


def _record(
    db_session: Session,
    gateway_key: str,
    invoice: _InvoiceRow,
    outcome: PaymentOutcome,
    source: str,
) -> Recording:
    if invoice.state is not InvoiceState.ISSUED:
        return Recording(
            False, invoice_id=invoice.id, unmatched=f"invoice {invoice.id} is {invoice.state}"
        )
    if outcome.currency.upper() != invoice.currency:
        return Recording(
            False,
            invoice_id=invoice.id,
            unmatched=f"the payment is in {outcome.currency}, invoice {invoice.id} in "
            f"{invoice.currency}",
        )
    # the invoice's lock before the ledger row: two payments recorded at once see each other
    # when checking for an overpayment (review finding 6)
    _lock_invoice(db_session, invoice.id)
    payment_id = _ledger_insert(
        db_session,
        invoice,
        PaymentKind.PAYMENT,
        outcome.amount_minor,
        gateway_key,
        outcome.reference,
        outcome.created_at,
        f"{source}:{gateway_key}",
    )
    if payment_id is None:
        return Recording(False, _ledger_id(db_session, gateway_key, outcome.reference), invoice.id)
    # one outbox item per payment for its receipt; the plugins' deliveries were queued with
    # the ledger row (insert_ledger_row)
    enqueue_row(
        db_session,
        RECEIPT_KIND,
        {"payment_id": payment_id},
        partner_id=invoice.partner_id,
        customer_id=invoice.customer_id,
    )
    _finish_autopay(db_session, invoice.id, outcome)
    _flag_overpaid(db_session, invoice, outcome, source)
    return Recording(True, payment_id, invoice.id)


_FINISH_AUTOPAY = (
    update(_ATTEMPT)
    .where(
        _ATTEMPT.c.invoice_id == bindparam("b_invoice_id"),
        _ATTEMPT.c.number == AUTOPAY_NUMBER,
        _ATTEMPT.c.state == AttemptState.OPEN,
        _ATTEMPT.c.payment_ref == bindparam("b_reference"),
    )
    .values(
        state=AttemptState.SUCCEEDED, updated_at=bindparam("b_now"), finished_at=bindparam("b_now")
    )
)


_FAIL_AUTOPAY = (
    update(_ATTEMPT)
    .where(
        _ATTEMPT.c.number == AUTOPAY_NUMBER,
        _ATTEMPT.c.state == AttemptState.OPEN,
        _ATTEMPT.c.gateway_key == bindparam("b_gateway_key"),
        _ATTEMPT.c.payment_ref == bindparam("b_reference"),
    )
    .values(
        state=AttemptState.FAILED,
        failure_code=bindparam("b_code"),
        failure_reason=bindparam("b_reason"),
        updated_at=bindparam("b_now"),
        finished_at=bindparam("b_now"),
    )
    .returning(
        _ATTEMPT.c.id,
        _ATTEMPT.c.partner_id,
        _ATTEMPT.c.customer_id,
        _ATTEMPT.c.invoice_id,
        _ATTEMPT.c.amount_minor,
        _ATTEMPT.c.currency,
    )
)


def _fail_autopay(db_session: Session, gateway_key: str, outcome: PaymentOutcome) -> int | None:
    """An automatic charge that was processing and then failed at the gateway: its attempt
    fails (so it no longer holds the invoice's one open charge, review finding 5), audited,
    and the Finance Managers are told, as when the charge fails at once. Its invoice's id."""
    code = (outcome.failure_code or "declined")[:100]
    failed = (
        db_session.connection()
        .execute(
            _FAIL_AUTOPAY,
            {
                "b_gateway_key": gateway_key,
                "b_reference": outcome.reference,
                "b_code": code,
                "b_reason": (outcome.failure_reason or "")[:REASON_LIMIT] or None,
                "b_now": utcnow(),
            },
        )
        .first()
    )
    if failed is None:
        return None
    tell_autopay_failed(db_session, failed, code, actor="webhook")
    return int(failed.invoice_id)


def _finish_autopay(db_session: Session, invoice_id: int, outcome: PaymentOutcome) -> None:
    """An automatic charge that was still processing is finished once its money is recorded,
    so that it no longer holds the invoice's one open charge."""
    db_session.connection().execute(
        _FINISH_AUTOPAY,
        {"b_invoice_id": invoice_id, "b_reference": outcome.reference, "b_now": utcnow()},
    )


_SIGNED_AMOUNT = case(
    (_PAYMENT.c.kind == PaymentKind.REFUND, -_PAYMENT.c.amount_minor),
    else_=_PAYMENT.c.amount_minor,
)
# the invoice's balance as billing derives it (total - credited - payments + refunds)
_BALANCE = select(
    _INVOICE.c.total_minor
    - select(func.coalesce(func.sum(_CREDIT.c.total_minor), 0))
    .where(
        _CREDIT.c.invoice_id == bindparam("invoice_id", type_=Integer),
        _CREDIT.c.state == CreditNoteState.ISSUED,
    )
    .scalar_subquery()
    - select(func.coalesce(func.sum(_SIGNED_AMOUNT), 0))
    .where(_PAYMENT.c.invoice_id == bindparam("invoice_id", type_=Integer))
    .scalar_subquery()
).where(_INVOICE.c.id == bindparam("invoice_id", type_=Integer))


def balance_now(db_session: Session, invoice_id: int) -> int:
    """The invoice's balance in the caller's transaction (negative: overpaid)."""
    return int(db_session.connection().execute(_BALANCE, {"invoice_id": invoice_id}).scalar() or 0)


def _flag_overpaid(
    db_session: Session, invoice: _InvoiceRow, outcome: PaymentOutcome, source: str
) -> None:
    """A payment that left the invoice overpaid (a replaced payment page paid anyway, say) is
    never silent: staff see ``payment.overpaid`` in the customer's activity, with the amount
    to give back."""
    balance = balance_now(db_session, invoice.id)
    if balance >= 0:
        return
    log.warning(
        "payments: invoice %s is overpaid by %s after %s", invoice.id, -balance, outcome.reference
    )
    audit.insert_row(
        db_session,
        partner_id=invoice.partner_id,
        customer_id=invoice.customer_id,
        actor=source,
        action="payment.overpaid",
        invoice=invoice.id,
        number=invoice.number,
        reference=outcome.reference,
        overpaid_minor=-balance,
        currency=invoice.currency,
    )


def _ledger_insert(
    db_session: Session,
    invoice: _InvoiceRow,
    kind: PaymentKind,
    amount_minor: int,
    gateway_key: str,
    reference: str,
    received_at: datetime | None,
    recorded_by: str,
) -> int | None:
    """One ledger row, once per ``(gateway_key, reference)``, audited; None when it was there.

    The webhook path's check of the amount; the row itself is
    :func:`portal.features.billing.services.documents.insert_ledger_row`, as for every other
    payment.
    """
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int) or amount_minor <= 0:
        raise ValueError(f"{gateway_key} {reference}: {amount_minor!r} is not a positive amount")
    return insert_ledger_row(
        db_session,
        partner_id=invoice.partner_id,
        customer_id=invoice.customer_id,
        invoice_id=invoice.id,
        invoice_number=invoice.number,
        currency=invoice.currency,
        kind=kind,
        amount_minor=amount_minor,
        gateway_key=gateway_key,
        gateway_reference=reference,
        received_at=received_at or utcnow(),
        recorded_by=recorded_by,
    )


def _ledger_id(db_session: Session, gateway_key: str, reference: str) -> int | None:
    # on the connection: the ledger row whichever tenant's it is (the caller matched the invoice)
    found = db_session.connection().execute(
        _LEDGER_ID, {"gateway_key": gateway_key, "reference": reference}
    )
    return found.scalar()


def _ledger_invoice(db_session: Session, gateway_key: str, payment_ref: str) -> _InvoiceRow | None:
    """The invoice a payment already in the ledger was recorded for."""
    row = (
        db_session.connection()
        .execute(
            select(*_INVOICE_COLUMNS)
            .join(_PAYMENT, _PAYMENT.c.invoice_id == _INVOICE.c.id)
            .where(
                _PAYMENT.c.gateway_key == gateway_key,
                _PAYMENT.c.gateway_reference == payment_ref,
                _PAYMENT.c.kind == PaymentKind.PAYMENT,
            )
        )
        .first()
    )
    return None if row is None else _InvoiceRow(*row)


# -- refunds and disputes ---------------------------------------------------------------------


def _record_refunds(
    db_session: Session,
    gateway_key: str,
    invoice: _InvoiceRow,
    refunds: Iterable[Refund],
    source: str,
) -> int:
    """Add each succeeded refund to the ledger once (by its refund id), and reverse each one
    that failed (or was canceled) once; how many rows were new.

    A failed refund gives the money back to the merchant: its refund row (recorded now if no
    event had) is cancelled by a payment row of the same amount under
    ``<refund id>:failed``, so the refund no longer counts whatever order the events came in
    (a late event that still says "succeeded" finds both rows there)."""
    added = 0
    for refund in refunds:
        undone = refund.status in UNDONE_REFUNDS
        if refund.status is not RefundStatus.SUCCEEDED and not undone:
            continue  # pending ones come back as succeeded (or failed) in a later event
        if refund.currency.upper() != invoice.currency:
            continue  # cannot happen for a refund of a payment recorded for this invoice
        recorded_by = f"{source}:{gateway_key}"
        row = _ledger_insert(
            db_session,
            invoice,
            PaymentKind.REFUND,
            refund.amount_minor,
            gateway_key,
            refund.refund_ref,
            refund.created_at,
            recorded_by,
        )
        added += row is not None
        if undone:
            reversal = _ledger_insert(
                db_session,
                invoice,
                PaymentKind.PAYMENT,
                refund.amount_minor,
                gateway_key,
                refund.refund_ref + FAILED_SUFFIX,
                None,
                recorded_by,
            )
            added += reversal is not None
    return added


def _close_dispute(
    db_session: Session, gateway_key: str, invoice: _InvoiceRow, dispute: Dispute, source: str
) -> bool:
    """A dispute the bank decided: its status kept, and when it was lost the disputed amount
    leaves the invoice's payments (a refund row under the dispute's id, once). A won one
    changes no money. True when the ledger changed."""
    status = (dispute.status or "").lower()
    if status not in CLOSED_DISPUTES:
        return False
    db_session.connection().execute(
        update(_DISPUTE)
        .where(_DISPUTE.c.gateway_key == gateway_key, _DISPUTE.c.dispute_ref == dispute.dispute_ref)
        .values(status=status[:40])
    )
    if status != LOST or dispute.currency.upper() != invoice.currency:
        return False
    row = _ledger_insert(
        db_session,
        invoice,
        PaymentKind.REFUND,
        dispute.amount_minor,
        gateway_key,
        dispute.dispute_ref,
        None,
        f"{source}:{gateway_key}",
    )
    return row is not None


def _record_dispute(
    db_session: Session, gateway_key: str, invoice: _InvoiceRow, dispute: Dispute
) -> bool:
    connection = db_session.connection()
    inserted = connection.execute(
        _insert_once(connection, _DISPUTE, ("gateway_key", "dispute_ref")),
        {
            "partner_id": invoice.partner_id,
            "customer_id": invoice.customer_id,
            "invoice_id": invoice.id,
            "gateway_key": gateway_key,
            "dispute_ref": dispute.dispute_ref,
            "payment_ref": dispute.payment_ref,
            "amount_minor": dispute.amount_minor,
            "currency": dispute.currency.upper(),
            "reason": (dispute.reason or "unknown")[:100],
            "status": (dispute.status or "unknown")[:40],
            "opened_at": dispute.created_at or utcnow(),
            "recorded_at": utcnow(),
        },
    ).scalar()
    return inserted is not None


def disputes_of(db_session: Session, invoice_id: int) -> list[PaymentDispute]:
    """The disputes opened against an invoice's payments, oldest first (for its page)."""
    return list(
        db_session.scalars(
            select(PaymentDispute)
            .where(PaymentDispute.invoice_id == invoice_id)
            .order_by(PaymentDispute.opened_at, PaymentDispute.id)
        )
    )


# -- webhooks -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookReceipt:
    """What one delivery did: ``duplicate`` when the event was already recorded (nothing
    happened this time); otherwise the event's :class:`WebhookResult`."""

    event_id: str
    duplicate: bool
    result: WebhookResult | None = None
    invoice_id: int | None = None
    note: str | None = None


@dataclass
class _Effect:
    result: WebhookResult = WebhookResult.NO_EFFECT
    invoice_id: int | None = None
    notes: list[str] = field(default_factory=list)

    def recorded(self, invoice_id: int | None) -> None:
        self.result = WebhookResult.RECORDED
        self.invoice_id = self.invoice_id or invoice_id

    def unmatched(self, note: str, invoice_id: int | None = None) -> None:
        if self.result is not WebhookResult.RECORDED:
            self.result = WebhookResult.UNMATCHED
        self.invoice_id = self.invoice_id or invoice_id
        self.notes.append(note)


def receive_webhook(
    gateway: PaymentGateway,
    body: bytes,
    headers: Mapping[str, str],
    app: Flask | None = None,
) -> WebhookReceipt:
    """Verify a delivery, then record its event and effect once, in one transaction.

    Raises :class:`~portal.integrations.payments.SignatureError` (answer 400) before anything
    is read or written when the signature does not verify, and :class:`GatewayUnavailable`
    (answer 5xx, nothing written) when the event needs the gateway and it cannot answer; any
    other failure rolls the whole delivery back too, so the gateway's next delivery retries it.
    """
    event = gateway.parse_webhook(body, headers)
    flask_app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    payment_ref = _payment_ref(event)
    key = {"gateway_key": gateway.key, "event_id": event.event_id[:255]}
    with get_database(flask_app).sessions() as db_session:
        try:
            with db_session.begin():
                if (event.payment is None or _about_refunds(event)) and _known_event(
                    db_session, key
                ):
                    # a refund or a dispute may need the gateway: a known one need not ask
                    raise _Duplicate
                # the effect first, then the event: whichever delivery inserts the event row
                # commits both; a duplicate finds the row taken and rolls its effect back (a
                # concurrent one waited on the ledger's unique key and had none anyway)
                effect = _apply(db_session, gateway, event)
                note = "; ".join(effect.notes)[:NOTE_LIMIT] or None
                connection = db_session.connection()
                inserted = connection.execute(
                    _insert_once(connection, _EVENT, ("gateway_key", "event_id")),
                    {
                        **key,
                        "type": event.type[:100],
                        "kind": event.kind.value,
                        "occurred_at": event.occurred_at,
                        "received_at": utcnow(),
                        "payment_ref": payment_ref[:255] if payment_ref else None,
                        "invoice_id": effect.invoice_id,
                        "result": effect.result,
                        "note": note,
                    },
                ).scalar()
                if inserted is None:
                    raise _Duplicate
        except _Duplicate:
            return WebhookReceipt(event.event_id, duplicate=True)
    if effect.result is WebhookResult.UNMATCHED:
        log.warning(
            "payment event %s (%s) matched no invoice: %s", event.event_id, event.type, note
        )
    return WebhookReceipt(event.event_id, False, effect.result, effect.invoice_id, note)


class _Duplicate(Exception):
    """The event was recorded by another delivery: roll this one back."""


_KNOWN_EVENT = select(_EVENT.c.id).where(
    _EVENT.c.gateway_key == bindparam("gateway_key"), _EVENT.c.event_id == bindparam("event_id")
)


def _known_event(db_session: Session, key: dict[str, str]) -> bool:
    return db_session.connection().execute(_KNOWN_EVENT, key).first() is not None


def _about_refunds(event: WebhookEvent) -> bool:
    return event.refunds is not None or event.kind is EventKind.CHARGE_REFUNDED


def _payment_ref(event: WebhookEvent) -> str | None:
    if event.payment is not None:
        return event.payment.reference
    if event.dispute is not None:
        return event.dispute.payment_ref
    if event.refunds:
        return event.refunds[0].payment_ref
    return None


def _apply(db_session: Session, gateway: PaymentGateway, event: WebhookEvent) -> _Effect:
    """The event's effect on the ledger and disputes; each part is idempotent on its own."""
    effect = _Effect()
    source = "webhook"
    invoice: _InvoiceRow | None = None
    if event.payment is not None:
        recording = record_payment_outcome(db_session, gateway.key, event.payment, source=source)
        if recording.recorded:
            effect.recorded(recording.invoice_id)
        elif recording.unmatched:
            effect.unmatched(recording.unmatched, recording.invoice_id)
        else:
            effect.invoice_id = recording.invoice_id
        if event.payment.status is PaymentStatus.FAILED:
            effect.invoice_id = (
                _fail_autopay(db_session, gateway.key, event.payment) or effect.invoice_id
            )
    about_refunds = _about_refunds(event)
    if event.dispute is None and not about_refunds:
        return effect
    payment_ref = (
        event.dispute.payment_ref
        if event.dispute is not None
        else (event.payment.reference if event.payment is not None else None)
    ) or (event.refunds[0].payment_ref if event.refunds else None)
    if not payment_ref:
        effect.unmatched("the event names no payment")
        return effect
    invoice = _ledger_invoice(db_session, gateway.key, payment_ref)
    refunds = event.refunds
    if invoice is None or refunds is None:
        # the payment is not in the ledger yet (its own event is late or lost), or the event
        # does not list the refunds: the gateway's current state of the payment has both
        found = gateway.get_payment(payment_ref)
        if not isinstance(found, Succeeded):
            raise GatewayUnavailable(f"the gateway could not read payment {payment_ref}: {found}")
        current: PaymentOutcome = found.value
        recording = record_payment_outcome(db_session, gateway.key, current, source=source)
        if recording.recorded:
            effect.recorded(recording.invoice_id)
        if refunds is None:
            refunds = current.refunds
        invoice = invoice or _ledger_invoice(db_session, gateway.key, payment_ref)
        if invoice is None:
            effect.unmatched(
                recording.unmatched or f"payment {payment_ref} is not one the portal recorded"
            )
            return effect
    if (
        about_refunds
        and refunds
        and _record_refunds(db_session, gateway.key, invoice, refunds, source)
    ):
        effect.recorded(invoice.id)
    if event.dispute is not None and _record_dispute(
        db_session, gateway.key, invoice, event.dispute
    ):
        effect.recorded(invoice.id)
    if event.dispute is not None and _close_dispute(
        db_session, gateway.key, invoice, event.dispute, source
    ):
        effect.recorded(invoice.id)
    effect.invoice_id = effect.invoice_id or invoice.id
    return effect


# -- reconciliation -------------------------------------------------------------------------------


@dataclass
class ReconcileReport:
    """One reconciliation run over the gateways: what they listed and what was recorded."""

    since: datetime
    listed: int = 0
    succeeded: int = 0
    recorded: int = 0  # payments no webhook had recorded: the discrepancies found
    refunds_recorded: int = 0
    unmatched: list[str] = field(default_factory=list)
    failed_gateways: dict[str, str] = field(default_factory=dict)

    def line(self) -> str:
        text = (
            f"since {self.since.isoformat(timespec='seconds')}: {self.listed} payments listed, "
            f"{self.succeeded} succeeded, {self.recorded} recorded now, "
            f"{self.refunds_recorded} refunds recorded now, {len(self.unmatched)} unmatched"
        )
        for key, reason in sorted(self.failed_gateways.items()):
            text += f"; gateway {key} failed: {reason}"
        return text


def reconcile(
    app: Flask,
    *,
    gateway_keys: Iterable[str] | None = None,
    since: datetime | None = None,
    now: datetime | None = None,
) -> ReconcileReport:
    """Ask each gateway for its payments since ``since`` (default: the last
    :data:`RECONCILE_DAYS` days) and record the succeeded ones (and their refunds) that the
    ledger lacks, each in its own transaction. Running it twice records nothing the second
    time; a gateway that fails is reported and the others still run."""
    start = since or (now or utcnow()) - timedelta(days=RECONCILE_DAYS)
    report = ReconcileReport(since=start)
    registry = integrations(app).payment_gateways
    for key in list(gateway_keys) if gateway_keys is not None else registry.keys():
        gateway = registry.get(key)
        listed = gateway.list_payments(start)
        if not isinstance(listed, Succeeded):
            report.failed_gateways[key] = str(listed)
            log.warning("reconciliation: gateway %s failed: %s", key, listed)
            continue
        outcomes: list[PaymentOutcome] = listed.value
        report.listed += len(outcomes)
        succeeded = [o for o in outcomes if o.status is PaymentStatus.SUCCEEDED]
        report.succeeded += len(succeeded)
        with get_database(app).sessions() as db_session:
            known = _known_references(db_session, key, succeeded)
        for outcome in succeeded:
            missing_refunds = [r for r in outcome.refunds if not _refund_known(r, known)]
            if outcome.reference in known and not missing_refunds:
                continue
            _reconcile_one(app, key, outcome, missing_refunds, report)
    return report


def _refund_known(refund: Refund, known: set[str]) -> bool:
    """The ledger has all of this refund it should: its row, and its reversal if it failed."""
    if refund.status in UNDONE_REFUNDS:
        return refund.refund_ref + FAILED_SUFFIX in known
    return refund.refund_ref in known or refund.status is not RefundStatus.SUCCEEDED


def _known_references(
    db_session: Session, gateway_key: str, outcomes: list[PaymentOutcome]
) -> set[str]:
    references = [o.reference for o in outcomes] + [
        ref
        for o in outcomes
        for r in o.refunds
        for ref in (r.refund_ref, r.refund_ref + FAILED_SUFFIX)
    ]
    known: set[str] = set()
    for start in range(0, len(references), 500):
        chunk = references[start : start + 500]
        known.update(
            db_session.scalars(
                select(InvoicePayment.gateway_reference).where(
                    InvoicePayment.gateway_key == gateway_key,
                    InvoicePayment.gateway_reference.in_(chunk),
                )
            )
        )
    return known


def _reconcile_one(
    app: Flask,
    gateway_key: str,
    outcome: PaymentOutcome,
    refunds: list[Refund],
    report: ReconcileReport,
) -> None:
    with get_database(app).sessions() as db_session, db_session.begin():
        recording = record_payment_outcome(
            db_session, gateway_key, outcome, source="reconciliation"
        )
        if recording.unmatched:
            report.unmatched.append(f"{gateway_key} {outcome.reference}: {recording.unmatched}")
            return
        report.recorded += recording.recorded
        invoice = _ledger_invoice(db_session, gateway_key, outcome.reference)
        if invoice is not None and refunds:
            report.refunds_recorded += _record_refunds(
                db_session, gateway_key, invoice, refunds, "reconciliation"
            )


# -- after the commit: the receipt and the event for accounting plugins ----------------------------


def _payment(session: Session, item: OutboxItem) -> InvoicePayment | None:
    payment_id = int(str(item.payload["payment_id"]))
    return session.scalars(
        select(InvoicePayment)
        .where(InvoicePayment.id == payment_id)
        .execution_options(unscoped=True)
    ).first()


RECORDED_KIND = "payments.recorded"


def announce_recorded(item: OutboxItem, session: Session) -> Outcome:
    """Outbox handler for ``payments.recorded``, which the receipt queued before the events
    went through the outbox: such an item still pending after the upgrade queues the payment's
    deliveries, as the ledger does now. Nothing queues this kind any more."""
    payment = _payment(session, item)
    if payment is None:
        return Done({"skipped": "no such payment"})
    number = session.scalar(select(Invoice.number).where(Invoice.id == payment.invoice_id))
    announce.payment_recorded(
        session,
        payment_id=payment.id,
        kind=payment.kind,
        partner_id=payment.partner_id,
        customer_id=payment.customer_id,
        invoice_id=payment.invoice_id,
        invoice_number=number,
        amount_minor=payment.amount_minor,
        currency=payment.currency,
        gateway_key=payment.gateway_key,
        gateway_reference=payment.gateway_reference,
        received_at=payment.received_at,
    )
    return Done()


def send_receipt(item: OutboxItem, session: Session) -> Outcome:
    """Outbox handler for ``payments.receipt``: mail the customer's Finance Managers (its
    Administrators when it has none) a receipt, each in their language. Enqueued once per
    ledger row, by the transaction that recorded it."""
    from portal.features.identity.services.people import finance_contacts
    from portal.features.tenancy.services import portal_base_url

    payment = _payment(session, item)
    if payment is None or payment.kind is not PaymentKind.PAYMENT:
        return Done({"skipped": "no such payment"})
    partner = session.get_one(Partner, payment.partner_id)
    customer = session.get_one(Customer, payment.customer_id)
    today: date = local_today(partner, utcnow())
    # an account on automatic credit hold comes off it once its overdue balance is paid: here,
    # after the payment committed, so the webhook that recorded it does no more work for it
    if customer.credit_hold_automatic:
        holds.review_customer(session, partner, customer.id, today)
    detail = invoice_detail(session, payment.invoice_id, today=today)
    if detail is None:
        return Done({"skipped": "no such invoice"})
    link = f"{portal_base_url(session, partner)}/invoices/{payment.invoice_id}"
    recipients = finance_contacts(session, customer.id)
    for user in recipients:
        mail.send(
            mail.render_mail(
                "payment_receipt",
                partner,
                user.locale,
                to=user.email,
                payment=payment,
                invoice=detail.invoice,
                balance_minor=max(detail.balance_minor, 0),
                customer=customer,
                link=link,
            ),
            partner,
        )
    return Done({"told": len(recipients)})
