"""Paying invoices by card (issue 6): "Pay now" for the balance or part of it, the page the
customer comes back to, and autopay (the default card charged off-session when an invoice of
an autocharge contract is issued).

Why it is built this way (reliability notes §1.1, A4-A6):

- **An attempt row before any gateway call.** :func:`pay_invoice` first claims a
  :class:`~portal.features.payments.models.PaymentAttempt` and commits it, with the idempotency
  key every gateway call for it will carry. At most one on-session attempt per invoice is open
  (a partial unique index), so ten "Pay" clicks at once find the same row, send the same key,
  and the gateway opens one session; the other nine get the same page. A declined or expired
  attempt is closed and never reused: the next click is a new attempt with a new key.
- **Paid only when the gateway says so.** The return page asks the gateway for the payment's
  state (the query string the customer comes back with proves nothing) and shows "Processing"
  until it is confirmed; a confirmed payment goes to the ledger through
  :func:`portal.features.payments.services.events.record_payment_outcome`, the one place that
  records a payment once whoever reports it first (this page, the webhook or the reconciliation).
- **Autopay once per invoice.** Issuing an invoice of an autocharge contract enqueues
  :data:`AUTOPAY_KIND` (outbox, same transaction). The handler charges the default card with
  attempt number 0 of the invoice, a row committed before the charge, so a retry or a second
  item re-sends the same key and the card is charged at most once. A charge that needs the
  customer to authenticate, a decline, or no card at all is kept on the attempt (the dashboard
  shows it) and the Finance Managers are emailed a link to pay on-session (its own outbox item,
  enqueued with the state change, so the mail goes once).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, Protocol, cast

from flask import Flask, current_app
from sqlalchemy import Select, Table, func, select, update
from sqlalchemy.orm import Session

from portal.core.db import get_database, insert_ignoring, utcnow
from portal.core.errors import ServiceError, _
from portal.core.roles import CustomerRole
from portal.features.billing.models import (
    BillingContract,
    Invoice,
    InvoicePayment,
    InvoiceState,
    InvoiceStatus,
)
from portal.features.billing.services import queries
from portal.features.identity import audit
from portal.features.payments.models import (
    AUTOPAY_NUMBER,
    AttemptKind,
    AttemptState,
    PaymentAttempt,
    PaymentProfile,
)
from portal.features.payments.services.gateway import (
    ExpiringGateway,
    gateway_for,
    minor_units,
    new_key,
    require_paying_role,
)
from portal.features.tenancy import mail
from portal.features.tenancy.models import Customer, Partner
from portal.integrations.payments import (
    AUTHENTICATION_REQUIRED,
    PaymentGateway,
    PaymentOutcome,
    PaymentRequest,
    PaymentStatus,
    SavedCardCharge,
    SavedCardGateway,
)
from portal.integrations.registry import PluginError, integrations
from portal.integrations.results import BusinessRejection, Succeeded, TechnicalFailure
from portal.outbox.handlers import Defer, Done, GiveUp, Outcome, RetryLater
from portal.outbox.items import enqueue_row
from portal.outbox.models import OutboxItem

log = logging.getLogger(__name__)

AUTOPAY_FAILED_KIND = "payments.autopay_failed"
# Stripe keeps an idempotency key at least 24 hours and a Checkout Session lives 24 hours: an
# open attempt older than this is not reused (its key may be forgotten, its page gone)
REUSE_LIMIT = timedelta(hours=23)
CLAIM_ROUNDS = 6
NO_CARD = "no_card"  # failure_code of an autopay that found no card to charge
NO_CARD_GATEWAY = "gateway_keeps_no_cards"
# failure_code of an autopay retry that found the balance changed after a try whose outcome is
# unknown: charging the new balance under a new key could charge twice (review finding 2)
BALANCE_CHANGED = "balance_changed"
REASON_LIMIT = 500

_ATTEMPT = cast(Table, PaymentAttempt.__table__)
_INVOICE = cast(Table, Invoice.__table__)
# an open autopay attempt untouched this long is no longer under way (its outbox item gave up, or
# its worker died): it stops holding the invoice's one open charge, and the next Pay now closes it
AUTOPAY_STALE = timedelta(days=1)
AUTOPAY_STALE_CODE = "autopay_stale"
# how long autopay waits, without counting an attempt, while someone pays on the gateway's page
ON_SESSION_WAIT = timedelta(minutes=15)


# -- small shared pieces -------------------------------------------------------------------------


def _attempt(db_session: Session, attempt_id: int) -> PaymentAttempt | None:
    """The attempt as stored now (within the session's tenant scope)."""
    return db_session.scalars(
        select(PaymentAttempt)
        .where(PaymentAttempt.id == attempt_id)
        .execution_options(populate_existing=True)
    ).first()


def _finish_attempt(
    db_session: Session,
    attempt_id: int,
    state: AttemptState,
    *,
    outcome: PaymentOutcome | None = None,
    code: str | None = None,
    reason: str | None = None,
) -> bool:
    """Move an open attempt to ``state``; False when it was no longer open (someone else
    finished it first: the caller does nothing more)."""
    values: dict[str, Any] = {"state": state, "updated_at": utcnow(), "finished_at": utcnow()}
    if outcome is not None:
        values["payment_ref"] = outcome.reference  # what the ledger records it under
        code = code or outcome.failure_code
        reason = reason or outcome.failure_reason
    if code is not None:
        values["failure_code"] = code[:100]
    if reason is not None:
        values["failure_reason"] = reason[:REASON_LIMIT]
    done = db_session.connection().execute(
        update(_ATTEMPT)
        .where(_ATTEMPT.c.id == attempt_id, _ATTEMPT.c.state == AttemptState.OPEN)
        .values(**values)
    )
    return bool(done.rowcount == 1)


def record_confirmed(
    db_session: Session,
    gateway_key: str,
    outcome: PaymentOutcome,
    attempt: PaymentAttempt,
    source: str,
) -> bool:
    """Put a payment the gateway confirmed in the ledger, once: the shared recording service,
    which the webhook and the reconciliation call too (whoever comes first records it, with its
    receipt and event). True when this call recorded it."""
    from portal.features.payments.services import events as payment_events

    recording = payment_events.record_payment_outcome(
        db_session, gateway_key, outcome, source=source, invoice_id=attempt.invoice_id
    )
    if recording.unmatched:
        # money arrived that cannot go on the invoice: staff see it in the customer's activity
        log.warning(
            "payments: attempt %s was paid but not recorded: %s", attempt.id, recording.unmatched
        )
        audit.record(
            db_session,
            partner_id=attempt.partner_id,
            customer_id=attempt.customer_id,
            actor=source,
            action="payment.unmatched",
            invoice=attempt.invoice_id,
            reference=outcome.reference,
            amount_minor=outcome.amount_minor,
            currency=outcome.currency,
            reason=recording.unmatched,
        )
    return recording.recorded


def recorded_payment(
    db_session: Session, gateway_key: str, outcome_or_ref: PaymentOutcome | str | None
) -> InvoicePayment | None:
    """The ledger row of a payment, if it is recorded."""
    if outcome_or_ref is None:
        return None
    reference = (
        outcome_or_ref.reference if isinstance(outcome_or_ref, PaymentOutcome) else outcome_or_ref
    )
    return db_session.scalars(
        select(InvoicePayment).where(
            InvoicePayment.gateway_key == gateway_key,
            InvoicePayment.gateway_reference == reference,
        )
    ).first()


# -- one open charge per invoice -----------------------------------------------------------------


def _lock_invoice(db_session: Session, invoice_id: int) -> None:
    """Take the invoice's row lock (``SELECT … FOR UPDATE`` on PostgreSQL; on SQLite a no-op
    write takes the database's write lock) for the rest of the transaction: whoever is about
    to charge the invoice (an on-session attempt, autopay) holds it while it checks the other
    and re-reads the balance, and commits its attempt before letting go, so whichever comes
    second sees the first."""
    connection = db_session.connection()
    if connection.dialect.name == "sqlite":
        # SQLite has no row locks: a write takes the database's one write lock until the
        # commit, which serializes the claimants the same way
        connection.execute(
            update(_INVOICE).where(_INVOICE.c.id == invoice_id).values(id=_INVOICE.c.id)
        )
        return
    connection.execute(select(_INVOICE.c.id).where(_INVOICE.c.id == invoice_id).with_for_update())


def _balance(db_session: Session, invoice_id: int) -> int:
    """The invoice's balance as stored now (``today`` does not change it)."""
    detail = queries.invoice_detail(db_session, invoice_id, today=date.max)
    return 0 if detail is None else detail.balance_minor


def _autopay_open(db_session: Session, invoice_id: int) -> bool:
    """An automatic charge of the invoice is under way (made, or about to be): open, and
    touched within :data:`AUTOPAY_STALE` (each try of its outbox item touches it)."""
    found = db_session.connection().execute(
        select(_ATTEMPT.c.id).where(
            _ATTEMPT.c.invoice_id == invoice_id,
            _ATTEMPT.c.number == AUTOPAY_NUMBER,
            _ATTEMPT.c.state == AttemptState.OPEN,
            _ATTEMPT.c.updated_at > utcnow() - AUTOPAY_STALE,
        )
    )
    return found.first() is not None


def _expire_stale_autopay(db_session: Session, invoice_id: int) -> None:
    """Close the invoice's autopay attempt left open past :data:`AUTOPAY_STALE` (under the
    invoice's lock, before an on-session attempt takes over): a late retry of its outbox item
    then charges nothing. A charge of it that went through after all is recorded by its
    webhook or the reconciliation, and an overpayment is flagged for staff."""
    db_session.connection().execute(
        update(_ATTEMPT)
        .where(
            _ATTEMPT.c.invoice_id == invoice_id,
            _ATTEMPT.c.number == AUTOPAY_NUMBER,
            _ATTEMPT.c.state == AttemptState.OPEN,
            _ATTEMPT.c.updated_at <= utcnow() - AUTOPAY_STALE,
        )
        .values(
            state=AttemptState.EXPIRED,
            failure_code=AUTOPAY_STALE_CODE,
            failure_reason="The automatic payment was left unfinished and replaced by a payment "
            "on the payment page.",
            updated_at=utcnow(),
            finished_at=utcnow(),
        )
    )


def _paying_on_session(db_session: Session, invoice_id: int) -> bool:
    """Someone may be paying the invoice on the gateway's page right now: an open on-session
    attempt young enough for its page to be payable."""
    found = db_session.connection().execute(
        select(_ATTEMPT.c.id).where(
            _ATTEMPT.c.invoice_id == invoice_id,
            _ATTEMPT.c.number > AUTOPAY_NUMBER,
            _ATTEMPT.c.state == AttemptState.OPEN,
            _ATTEMPT.c.created_at > utcnow() - REUSE_LIMIT,
        )
    )
    return found.first() is not None


def _close_page(db_session: Session, attempt: PaymentAttempt) -> bool:
    """Close an attempt's page at the gateway before the attempt is replaced, so it can never
    take money afterwards. False when the gateway says it is not open any more (paid, or
    closed already): the caller asks the gateway how it ended instead of replacing it."""
    if attempt.gateway_ref is None:
        return True  # no page was opened
    gateway = _gateway_or_none(db_session, attempt)
    if gateway is None or not isinstance(gateway, ExpiringGateway):
        return True
    closed = gateway.expire_payment(attempt.gateway_ref)
    if isinstance(closed, TechnicalFailure):
        raise ServiceError(
            _("The payment service did not answer, and nothing was charged. Try again in a moment.")
        )
    return not isinstance(closed, BusinessRejection)


# -- paying on-session ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PayStart:
    """Where to send the payer: the gateway's page, or (``redirect_url`` None) straight to the
    attempt's own page, because the gateway already confirmed that payment."""

    attempt_id: int
    redirect_url: str | None


def payable(db_session: Session, invoice_id: int, today: date) -> tuple[queries.InvoiceDetail, int]:
    """The invoice and its balance, when it can be paid now; ServiceError says why not."""
    detail = queries.invoice_detail(db_session, invoice_id, today=today)
    if detail is None:
        raise ServiceError(_("There is no such invoice."))
    if detail.invoice.state is InvoiceState.VOID:
        raise ServiceError(_("This invoice is void: there is nothing to pay."))
    if detail.invoice.state is not InvoiceState.ISSUED:
        raise ServiceError(_("This invoice is not issued yet."))
    if detail.status is InvoiceStatus.PAID or detail.balance_minor <= 0:
        raise ServiceError(_("This invoice is paid: there is nothing left to pay."))
    return detail, detail.balance_minor


def pay_invoice(
    db_session: Session,
    *,
    partner: Partner,
    invoice_id: int,
    role: CustomerRole | str | None,
    actor: str,
    amount: Decimal | None,
    return_url: Callable[[int], str],
    today: date,
    currency: str | None = None,
    save_card: bool = False,
) -> PayStart:
    """Open (or reopen) a card payment of ``amount`` (major units; None: the whole balance) of
    an invoice in the session's scope; commits. Every refusal is a ServiceError with the
    reason, and changes nothing. ``return_url(attempt_id)`` is where the gateway sends the
    payer back."""
    require_paying_role(role)
    detail, balance = payable(db_session, invoice_id, today)
    invoice = detail.invoice
    if currency is not None and currency.strip().upper() != invoice.currency:
        raise ServiceError(
            _("Pay this invoice in %(currency)s, its currency.", currency=invoice.currency),
            "amount",
        )
    wanted = balance if amount is None else minor_units(amount, invoice.currency)
    _check_amount(wanted, balance, invoice.currency)
    gateway = gateway_for(partner)
    keeps_cards = isinstance(gateway, SavedCardGateway)
    save_card = bool(save_card and keeps_cards)
    for _round in range(CLAIM_ROUNDS):
        attempt = _claim_attempt(db_session, invoice, wanted, gateway.key, save_card, actor)
        if attempt.state is not AttemptState.OPEN:
            continue  # closed meanwhile (its page was paid or closed): claim again
        if attempt.gateway_ref is None:
            return _open_session(db_session, partner, gateway, attempt, invoice, return_url)
        answer = gateway.get_payment(attempt.gateway_ref)
        if isinstance(answer, Succeeded) and answer.value.status is PaymentStatus.SUCCEEDED:
            # paid already (the webhook may not have come yet): record it, then see whether
            # what was asked for is still owed
            _settle(db_session, gateway.key, attempt, answer.value, "payment_page")
            db_session.commit()
            still, balance = payable_or_none(db_session, invoice_id, today)
            if still is None or wanted > balance:
                return PayStart(attempt.id, None)
            continue
        if isinstance(answer, Succeeded) and answer.value.status is PaymentStatus.FAILED:
            ended = _close_then_end(
                db_session,
                gateway,
                attempt,
                "payment_page",
                unpaid=AttemptState.FAILED,
                outcome=answer.value,
            )
            db_session.commit()
            if ended is None:
                raise ServiceError(
                    _(
                        "The payment service did not answer, and nothing was charged. "
                        "Try again in a moment."
                    )
                )
            if ended is PaymentStatus.SUCCEEDED:
                still, balance = payable_or_none(db_session, invoice_id, today)
                if still is None or wanted > balance:
                    return PayStart(attempt.id, None)
                continue
            if ended is PaymentStatus.FAILED:
                continue
            return PayStart(attempt.id, attempt.redirect_url)
        if isinstance(answer, BusinessRejection):
            _finish_attempt(
                db_session, attempt.id, AttemptState.FAILED, code=answer.code, reason=answer.reason
            )
            db_session.commit()
            continue
        # processing, waiting for the payer, or the gateway did not answer: the same page
        return PayStart(attempt.id, attempt.redirect_url)
    raise ServiceError(_("Someone else is paying this invoice right now. Try again in a moment."))


def payable_or_none(
    db_session: Session, invoice_id: int, today: date
) -> tuple[queries.InvoiceDetail | None, int]:
    try:
        return payable(db_session, invoice_id, today)
    except ServiceError:
        return None, 0


def _check_amount(amount_minor: int, balance_minor: int, currency: str) -> None:
    # the one way amounts are written for people (ISO decimals in the reader's language)
    from portal.core.formatting import money

    if amount_minor <= 0:
        raise ServiceError(_("Enter an amount greater than zero."), "amount")
    if amount_minor > balance_minor:
        raise ServiceError(
            _(
                "You can pay at most the balance due, %(balance)s.",
                balance=money(balance_minor, currency),
            ),
            "amount",
        )


def _open_attempt(db_session: Session, invoice_id: int) -> PaymentAttempt | None:
    return db_session.scalars(
        select(PaymentAttempt)
        .where(
            PaymentAttempt.invoice_id == invoice_id,
            PaymentAttempt.state == AttemptState.OPEN,
            PaymentAttempt.number > AUTOPAY_NUMBER,
        )
        .execution_options(populate_existing=True)
    ).first()


def _claim_attempt(
    db_session: Session,
    invoice: Invoice,
    amount_minor: int,
    gateway_key: str,
    save_card: bool,
    actor: str,
) -> PaymentAttempt:
    """The invoice's open attempt for this amount, made if there is none; committed.

    Concurrent callers race on the unique constraints (the attempt number, one open attempt
    per invoice): the loser's insert does nothing, and it takes the winner's row next round.
    Under the invoice's row lock, a new attempt is refused while an automatic charge is under
    way, and its amount is checked against the balance read under that lock (issue 13).
    A replaced attempt's page is closed at the gateway first (:func:`_close_page`); when the
    gateway says it is not open any more, that attempt is returned (the caller asks how it
    ended: paid, it is recorded).
    """
    for _round in range(CLAIM_ROUNDS):
        _lock_invoice(db_session, invoice.id)
        if _autopay_open(db_session, invoice.id):
            db_session.rollback()
            raise ServiceError(
                _(
                    "An automatic payment of this invoice is being made. "
                    "Look again in a few minutes before paying."
                )
            )
        _expire_stale_autopay(db_session, invoice.id)
        current = _open_attempt(db_session, invoice.id)
        now = utcnow()
        if current is not None:
            fresh = current.created_at > now - REUSE_LIMIT
            db_session.commit()  # the lock is not held over the gateway's calls
            if (
                fresh
                and current.amount_minor == amount_minor
                and current.gateway_key == gateway_key
                and current.save_card == save_card
            ):
                return current
            # asked for another amount (or too old to reuse): its page is closed at the gateway
            # before this one is (so it cannot be paid as well), then the attempt
            if not _close_page(db_session, current):
                return current
            _finish_attempt(
                db_session,
                current.id,
                AttemptState.SUPERSEDED if fresh else AttemptState.EXPIRED,
            )
            db_session.commit()
            continue
        try:
            _check_amount(amount_minor, _balance(db_session, invoice.id), invoice.currency)
        except ServiceError:
            db_session.rollback()
            raise
        connection = db_session.connection()
        last = connection.scalar(
            select(func.coalesce(func.max(_ATTEMPT.c.number), AUTOPAY_NUMBER)).where(
                _ATTEMPT.c.invoice_id == invoice.id
            )
        )
        number = max(int(last or 0), AUTOPAY_NUMBER) + 1
        inserted = connection.execute(
            insert_ignoring(connection, _ATTEMPT).returning(_ATTEMPT.c.id),
            {
                "partner_id": invoice.partner_id,
                "customer_id": invoice.customer_id,
                "invoice_id": invoice.id,
                "number": number,
                "kind": AttemptKind.ON_SESSION,
                "state": AttemptState.OPEN,
                "amount_minor": amount_minor,
                "currency": invoice.currency,
                "gateway_key": gateway_key,
                "idempotency_key": new_key(f"invoice-{invoice.id}-attempt-{number}"),
                "save_card": save_card,
                "created_by": actor,
                "created_at": now,
                "updated_at": now,
            },
        ).scalar()
        if inserted is not None:
            audit.record(
                db_session,
                partner_id=invoice.partner_id,
                customer_id=invoice.customer_id,
                actor=actor,
                action="payment.started",
                invoice=invoice.id,
                number=invoice.number,
                attempt=number,
                amount_minor=amount_minor,
                currency=invoice.currency,
            )
        db_session.commit()
        if inserted is not None:
            found = _attempt(db_session, int(inserted))
            assert found is not None
            return found
    raise ServiceError(_("Someone else is paying this invoice right now. Try again in a moment."))


def _open_session(
    db_session: Session,
    partner: Partner,
    gateway: PaymentGateway,
    attempt: PaymentAttempt,
    invoice: Invoice,
    return_url: Callable[[int], str],
) -> PayStart:
    """Ask the gateway for its payment page, with the attempt's key (a second caller with the
    same attempt gets the same page back from the gateway)."""
    customer_ref: str | None = None
    if attempt.save_card and isinstance(gateway, SavedCardGateway):
        from portal.features.payments.services import cards as payment_profiles

        customer = db_session.scalars(
            select(Customer).where(Customer.id == attempt.customer_id)
        ).one()
        customer_ref = payment_profiles.gateway_customer(db_session, gateway, customer)
    started = gateway.start_payment(
        PaymentRequest(
            idempotency_key=attempt.idempotency_key,
            invoice_ref=str(invoice.id),
            customer_ref=str(invoice.customer_id),
            amount_minor=attempt.amount_minor,
            currency=attempt.currency,
            description=_description(partner, invoice),
            return_url=return_url(attempt.id),
            save_card=attempt.save_card,
            gateway_customer_ref=customer_ref,
            # no page outlives the attempt's reuse: one the portal no longer offers is closed
            expires_at=attempt.created_at + REUSE_LIMIT,
        )
    )
    if isinstance(started, TechnicalFailure):
        # the attempt (and its key) stays: the next click asks again with the same key
        raise ServiceError(
            _("The payment service did not answer, and nothing was charged. Try again in a moment.")
        )
    if isinstance(started, BusinessRejection):
        _finish_attempt(
            db_session,
            attempt.id,
            AttemptState.FAILED,
            code=started.code,
            reason=started.reason,
        )
        db_session.commit()
        log.warning("payments: the gateway refused to open a payment (%s)", started.code)
        raise ServiceError(
            _("The payment service refused this payment: %(reason)s", reason=started.reason)
        )
    session = started.value
    kept = db_session.connection().execute(
        update(_ATTEMPT)
        .where(
            _ATTEMPT.c.id == attempt.id,
            _ATTEMPT.c.state == AttemptState.OPEN,
            _ATTEMPT.c.gateway_ref.is_(None),
        )
        .values(
            gateway_ref=session.gateway_ref,
            redirect_url=session.redirect_url,
            updated_at=utcnow(),
        )
    )
    db_session.commit()
    if kept.rowcount != 1:
        current = _attempt(db_session, attempt.id)
        if current is None or current.state is not AttemptState.OPEN:
            # replaced (or closed) while the gateway opened its page: the page must never be
            # paid, so it is closed at the gateway and not handed out (review finding 3)
            _close_unused_page(gateway, session.gateway_ref)
            raise ServiceError(_("This payment was replaced by a newer one. Start again."))
        # another caller with the same attempt stored it first: the same key, the same page
    return PayStart(attempt.id, session.redirect_url)


def _close_then_end(
    db_session: Session,
    gateway: PaymentGateway,
    attempt: PaymentAttempt,
    source: str,
    *,
    unpaid: AttemptState,
    outcome: PaymentOutcome | None = None,
) -> PaymentStatus | None:
    """End an open on-session attempt for good: its page is closed at the gateway first, so it
    can never take money beside the next attempt or an automatic charge, and the attempt is
    then finished as ``unpaid`` (with ``outcome``, the failure the gateway reported, if any).

    A page found closed already (or one the gateway cannot close, when no failure is known)
    is asked how it ended: paid, the payment is recorded. Returns SUCCEEDED (paid), FAILED
    (finished unpaid), another status while the payment is still under way, None when the
    gateway did not answer (the attempt stays open). The caller commits.

    Why: a declined card leaves Stripe's Checkout page open for another card, and an attempt
    left open for a month may have been paid with its webhook still to come; the model-based
    test found both charging an invoice twice."""
    if attempt.gateway_ref is not None:
        closed = (
            gateway.expire_payment(attempt.gateway_ref)
            if isinstance(gateway, ExpiringGateway)
            else None
        )
        if isinstance(closed, TechnicalFailure):
            return None
        if not isinstance(closed, Succeeded) and (closed is not None or outcome is None):
            again = gateway.get_payment(attempt.gateway_ref)
            if not isinstance(again, Succeeded):
                return None
            outcome = again.value
            if outcome.status is PaymentStatus.SUCCEEDED:
                _settle(db_session, gateway.key, attempt, outcome, source)
                return PaymentStatus.SUCCEEDED
            if outcome.status is not PaymentStatus.FAILED:
                return outcome.status
    _finish_attempt(db_session, attempt.id, unpaid, outcome=outcome)
    return PaymentStatus.FAILED


def _close_unused_page(gateway: PaymentGateway, gateway_ref: str) -> None:
    if not isinstance(gateway, ExpiringGateway):
        return
    closed = gateway.expire_payment(gateway_ref)
    if isinstance(closed, TechnicalFailure | BusinessRejection):
        # no one was given its address; it lapses on its own (its expires_at)
        log.warning("payments: a replaced payment page %s was not closed: %s", gateway_ref, closed)


def _description(partner: Partner, invoice: Invoice) -> str:
    # the gateway shows it on its page and the card statement: the partner and the number,
    # in no particular language (it is stored with the payment once, for every reader)
    return f"{partner.name} invoice {invoice.number}"[:500]


def _settle(
    db_session: Session,
    gateway_key: str,
    attempt: PaymentAttempt,
    outcome: PaymentOutcome,
    source: str,
) -> bool:
    """A confirmed payment: into the ledger (once), the attempt succeeded, its card saved when
    the payer asked for that. The caller commits."""
    recorded = record_confirmed(db_session, gateway_key, outcome, attempt, source)
    _finish_attempt(db_session, attempt.id, AttemptState.SUCCEEDED, outcome=outcome)
    if attempt.save_card and outcome.card is not None:
        from portal.features.payments.services import cards as payment_profiles

        payment_profiles.keep_card(
            db_session,
            partner_id=attempt.partner_id,
            customer_id=attempt.customer_id,
            gateway_key=gateway_key,
            card=outcome.card,
            actor=attempt.created_by,
        )
    return recorded


# -- the page the payer comes back to -----------------------------------------------------------


@dataclass(frozen=True)
class AttemptView:
    """An attempt as its page shows it, after asking the gateway how it stands."""

    attempt: PaymentAttempt
    invoice: Invoice
    status: PaymentStatus | None  # the gateway's answer now; None when not asked or no answer
    recorded: InvoicePayment | None  # the ledger row: the receipt
    balance_minor: int

    @property
    def paid(self) -> bool:
        return self.recorded is not None

    @property
    def failed(self) -> bool:
        return not self.paid and self.attempt.state is AttemptState.FAILED

    @property
    def processing(self) -> bool:
        """Not known to be finished: the page keeps asking."""
        return not self.paid and self.attempt.state is AttemptState.OPEN

    @property
    def confirmed_unrecorded(self) -> bool:
        """The gateway confirmed it, but it could not be taken for this invoice (voided
        meanwhile, say): staff match it by hand."""
        return not self.paid and self.attempt.state is AttemptState.SUCCEEDED

    @property
    def abandoned(self) -> bool:
        """Replaced by a newer attempt, or too old, and never paid."""
        return not self.paid and self.attempt.state in (
            AttemptState.SUPERSEDED,
            AttemptState.EXPIRED,
        )


FINISHED = frozenset({AttemptState.SUCCEEDED, AttemptState.FAILED})


def attempt_view(db_session: Session, attempt_id: int, today: date) -> AttemptView | None:
    """The attempt (in the session's scope) as it truly stands: asked of the gateway until it
    is known to be finished, recorded in the ledger (once) when the gateway confirms it;
    commits what it learnt. None when there is no such attempt."""
    attempt = _attempt(db_session, attempt_id)
    if attempt is None:
        return None
    status: PaymentStatus | None = None
    recorded = recorded_payment(db_session, attempt.gateway_key, attempt.payment_ref)
    if recorded is None and attempt.gateway_ref is not None and attempt.state not in FINISHED:
        gateway = _gateway_or_none(db_session, attempt)
        answer = gateway.get_payment(attempt.gateway_ref) if gateway else None
        if isinstance(answer, Succeeded):
            outcome = answer.value
            status = outcome.status
            if outcome.status is PaymentStatus.SUCCEEDED:
                _settle(db_session, attempt.gateway_key, attempt, outcome, "return_page")
                recorded = recorded_payment(db_session, attempt.gateway_key, outcome)
            elif outcome.status is PaymentStatus.FAILED and gateway is not None:
                ended = _close_then_end(
                    db_session,
                    gateway,
                    attempt,
                    "return_page",
                    unpaid=AttemptState.FAILED,
                    outcome=outcome,
                )
                status = ended or PaymentStatus.PROCESSING  # no answer: the page asks again
            db_session.commit()
            attempt = _attempt(db_session, attempt_id) or attempt
            if recorded is None and attempt.payment_ref is not None:
                recorded = recorded_payment(db_session, attempt.gateway_key, attempt.payment_ref)
    detail = queries.invoice_detail(db_session, attempt.invoice_id, today=today)
    if detail is None:
        return None
    return AttemptView(attempt, detail.invoice, status, recorded, detail.balance_minor)


def _gateway_or_none(db_session: Session, attempt: PaymentAttempt) -> PaymentGateway | None:
    try:
        return integrations().payment_gateways.get(attempt.gateway_key)
    except PluginError:
        log.warning(
            "payments: gateway %r of attempt %s is not loaded", attempt.gateway_key, attempt.id
        )
        return None


# -- autopay ----------------------------------------------------------------------------------


def autopay(item: OutboxItem, session: Session) -> Outcome:
    """Outbox handler for :data:`AUTOPAY_KIND`: charge the invoice's balance to the customer's
    default card, off-session, at most once per invoice (see the module's notes)."""
    invoice_id = int(str(item.payload["invoice_id"]))
    invoice = session.scalars(select(Invoice).where(Invoice.id == invoice_id)).first()
    if invoice is None or invoice.state is not InvoiceState.ISSUED:
        return Done({"skipped": "not issued"})
    contract = session.scalars(
        select(BillingContract).where(BillingContract.id == invoice.billing_contract_id)
    ).one()
    if not contract.autocharge:
        return Done({"skipped": "not autocharge"})
    partner = session.get_one(Partner, invoice.partner_id)
    try:
        gateway = integrations().payment_gateway(partner.payment_gateway_key)
    except PluginError as error:
        return RetryLater(f"no payment gateway is loaded: {error}", timedelta(hours=1))
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    pages = _end_old_pages(app, invoice.id, gateway)
    if pages is not None:
        return pages
    attempt = _autopay_attempt(app, invoice, gateway, session)
    if isinstance(attempt, _OnSession):
        # someone is paying on the gateway's page: one charge at a time; look again later
        return Defer(ON_SESSION_WAIT)
    if attempt is None:
        return Done({"skipped": "nothing to pay"})
    if attempt.state is not AttemptState.OPEN:
        return Done({"skipped": attempt.state.value})
    if attempt.card_ref is None or not isinstance(gateway, SavedCardGateway):
        code = NO_CARD if isinstance(gateway, SavedCardGateway) else NO_CARD_GATEWAY
        _autopay_failed(session, attempt, code, None, app)
        return Done({"failed": code})
    profile = session.scalars(
        select(PaymentProfile).where(
            PaymentProfile.gateway_key == gateway.key,
            PaymentProfile.card_ref == attempt.card_ref,
        )
    ).first()
    customer_ref = profile.gateway_customer_ref if profile is not None else ""
    charged = gateway.charge_saved_card(
        SavedCardCharge(
            idempotency_key=attempt.idempotency_key,
            invoice_ref=str(invoice.id),
            customer_ref=str(invoice.customer_id),
            gateway_customer_ref=customer_ref,
            card_ref=attempt.card_ref,
            amount_minor=attempt.amount_minor,
            currency=attempt.currency,
            description=_description(partner, invoice),
        )
    )
    if isinstance(charged, TechnicalFailure):
        return RetryLater(charged.message, charged.retry_after)
    if isinstance(charged, BusinessRejection):
        _autopay_failed(session, attempt, charged.code or "rejected", charged.reason, app)
        return Done({"failed": charged.code or "rejected"})
    outcome = charged.value
    _store_gateway_refs(session, attempt, outcome)
    if outcome.status is PaymentStatus.SUCCEEDED:
        _settle(session, gateway.key, attempt, outcome, "autopay")
        return Done({"paid": attempt.amount_minor})
    if outcome.status is PaymentStatus.PROCESSING:
        return Done({"processing": outcome.reference})  # the webhook records it when it clears
    code = outcome.failure_code or (
        AUTHENTICATION_REQUIRED if outcome.status is PaymentStatus.REQUIRES_ACTION else "declined"
    )
    _autopay_failed(session, attempt, code, outcome.failure_reason, app, outcome)
    return Done({"failed": code})


def _end_old_pages(app: Flask, invoice_id: int, gateway: PaymentGateway) -> Outcome | None:
    """Before an automatic charge: every on-session attempt of the invoice too old to be
    waited for (:data:`REUSE_LIMIT`) but still open is ended for good, its page closed and
    how it ended asked of the gateway (:func:`_close_then_end`): one paid with its webhook
    still to come is recorded, so the balance autopay reads next is the true one. None when
    autopay may go on; otherwise what the item does (retry, or wait for a payment still
    processing)."""
    with get_database(app).sessions() as own:
        old = own.scalars(
            select(PaymentAttempt).where(
                PaymentAttempt.invoice_id == invoice_id,
                PaymentAttempt.number > AUTOPAY_NUMBER,
                PaymentAttempt.state == AttemptState.OPEN,
                PaymentAttempt.created_at <= utcnow() - REUSE_LIMIT,
            )
        ).all()
        for attempt in old:
            ended = _close_then_end(own, gateway, attempt, "autopay", unpaid=AttemptState.EXPIRED)
            own.commit()
            if ended is None:
                return RetryLater("the payment service did not say how an old payment page ended")
            if ended not in (PaymentStatus.SUCCEEDED, PaymentStatus.FAILED):
                return Defer(ON_SESSION_WAIT)  # paid on that page, still processing
    return None


class _OnSession:
    """The invoice has an open on-session attempt: autopay waits."""


ON_SESSION = _OnSession()


def _autopay_attempt(
    app: Flask, invoice: Invoice, gateway: PaymentGateway, session: Session
) -> PaymentAttempt | _OnSession | None:
    """The invoice's autopay attempt (number 0), made (or brought up to date) and committed on
    its own connection before the charge, under the invoice's row lock: with the balance as it
    is now and the default card. :data:`ON_SESSION` while someone pays on the gateway's page
    (one charge at a time); None when nothing is owed.

    A retry re-reads the balance: the same balance sends the same key (the gateway replays a
    charge that went through); another one (a payment or a credit note came meanwhile) fails
    the attempt (:func:`_refresh_autopay`), and nothing is charged when nothing is owed any
    more (issue 13)."""
    existing = _autopay_row(session, invoice.id)
    if existing is not None and existing.state is not AttemptState.OPEN:
        return existing
    with get_database(app).sessions() as own:
        _lock_invoice(own, invoice.id)
        if existing is None and _paying_on_session(own, invoice.id):
            return ON_SESSION
        balance = _balance(own, invoice.id)
        if existing is not None:
            _refresh_autopay(own, existing, balance, app)
        elif balance > 0:
            _insert_autopay(own, invoice, gateway, balance)
        own.commit()
    return _autopay_row(session, invoice.id)


def _refresh_autopay(own: Session, attempt: PaymentAttempt, balance: int, app: Flask) -> None:
    """An open autopay attempt against the balance now (under the invoice's lock).

    A try of it may have reached the gateway with its outcome unknown (no answer, or the
    worker died after committing it): the same balance retries under the same key (the
    gateway replays a charge that went through); another balance is never charged under a new
    key, which could charge twice (review finding 2): the attempt fails with
    :data:`BALANCE_CHANGED`; a charge that did go through comes by webhook or reconciliation,
    and the customer can still pay what is owed."""
    if balance <= 0:
        _finish_attempt(
            own,
            attempt.id,
            AttemptState.SUPERSEDED,
            code="nothing_to_pay",
            reason="The invoice was paid before the automatic payment was made.",
        )
        return
    if balance != attempt.amount_minor:
        _autopay_failed(
            own,
            attempt,
            BALANCE_CHANGED,
            "The balance changed after a charge whose outcome is unknown; not charged again.",
            app,
        )
        return
    own.connection().execute(  # touched: still under way (see _autopay_open)
        update(_ATTEMPT)
        .where(_ATTEMPT.c.id == attempt.id, _ATTEMPT.c.state == AttemptState.OPEN)
        .values(updated_at=utcnow())
    )


def _insert_autopay(own: Session, invoice: Invoice, gateway: PaymentGateway, balance: int) -> None:
    card = None
    if isinstance(gateway, SavedCardGateway):
        card = own.scalars(
            select(PaymentProfile).where(
                PaymentProfile.customer_id == invoice.customer_id,
                PaymentProfile.gateway_key == gateway.key,
                PaymentProfile.default_for.is_not(None),
            )
        ).first()
    now = utcnow()
    connection = own.connection()
    connection.execute(
        insert_ignoring(connection, _ATTEMPT),
        {
            "partner_id": invoice.partner_id,
            "customer_id": invoice.customer_id,
            "invoice_id": invoice.id,
            "number": AUTOPAY_NUMBER,
            "kind": AttemptKind.AUTOPAY,
            "state": AttemptState.OPEN,
            "amount_minor": balance,
            "currency": invoice.currency,
            "gateway_key": gateway.key,
            "idempotency_key": new_key(f"invoice-{invoice.id}-autopay"),
            "card_ref": card.card_ref if card is not None else None,
            "save_card": False,
            "created_by": "autopay",
            "created_at": now,
            "updated_at": now,
        },
    )


def _autopay_row(session: Session, invoice_id: int) -> PaymentAttempt | None:
    return session.scalars(
        select(PaymentAttempt)
        .where(PaymentAttempt.invoice_id == invoice_id, PaymentAttempt.number == AUTOPAY_NUMBER)
        .execution_options(populate_existing=True)
    ).first()


def _store_gateway_refs(session: Session, attempt: PaymentAttempt, outcome: PaymentOutcome) -> None:
    session.connection().execute(
        update(_ATTEMPT)
        .where(_ATTEMPT.c.id == attempt.id)
        .values(
            gateway_ref=outcome.gateway_ref,
            payment_ref=outcome.payment_ref,
            updated_at=utcnow(),
        )
    )


def _autopay_failed(
    session: Session,
    attempt: PaymentAttempt,
    code: str,
    reason: str | None,
    app: Flask,
    outcome: PaymentOutcome | None = None,
) -> None:
    """The charge did not go through: kept on the attempt, audited, and (once: only the caller
    that closes the attempt) the Finance Managers are told by mail."""
    if not _finish_attempt(
        session, attempt.id, AttemptState.FAILED, outcome=outcome, code=code, reason=reason
    ):
        return
    tell_autopay_failed(session, attempt, code, actor="autopay", app=app)


class _FailedAutopay(Protocol):
    """What is told of a failed automatic charge: an attempt, or its row as a statement
    returned it."""

    id: int
    partner_id: int
    customer_id: int
    invoice_id: int
    amount_minor: int
    currency: str


def tell_autopay_failed(
    session: Session, attempt: _FailedAutopay, code: str, *, actor: str, app: Flask | None = None
) -> None:
    """An automatic charge that failed, once its attempt is closed (by the caller that closed
    it, so only once): audited, and the Finance Managers told by mail (an outbox item in the
    same transaction). Whether the charge failed at once or later by webhook."""
    audit.insert_row(
        session,
        partner_id=attempt.partner_id,
        customer_id=attempt.customer_id,
        actor=actor,
        action="payment.autopay_failed",
        invoice=attempt.invoice_id,
        amount_minor=attempt.amount_minor,
        currency=attempt.currency,
        code=code,
    )
    enqueue_row(
        session,
        AUTOPAY_FAILED_KIND,
        {"attempt_id": attempt.id},
        partner_id=attempt.partner_id,
        customer_id=attempt.customer_id,
        app=app,
    )


def notify_autopay_failed(item: OutboxItem, session: Session) -> Outcome:
    """Outbox handler for :data:`AUTOPAY_FAILED_KIND`: mail the Finance Managers (Administrators
    when there are none) that the automatic payment failed, why, and a link to pay it now."""
    from portal.features.identity.services.people import finance_contacts
    from portal.features.tenancy.services import portal_base_url

    attempt_id = int(str(item.payload["attempt_id"]))
    attempt = session.scalars(select(PaymentAttempt).where(PaymentAttempt.id == attempt_id)).first()
    if attempt is None:
        return GiveUp(f"payment attempt {attempt_id} does not exist")
    invoice = session.scalars(select(Invoice).where(Invoice.id == attempt.invoice_id)).one()
    partner = session.get_one(Partner, attempt.partner_id)
    customer = session.get_one(Customer, attempt.customer_id)
    base = portal_base_url(session, partner)
    recipients = finance_contacts(session, customer.id)
    for user in recipients:
        mail.send(
            mail.render_mail(
                "payment_autopay_failed",
                partner,
                user.locale,
                to=user.email,
                attempt=attempt,
                invoice=invoice,
                customer=customer,
                link=f"{base}/invoices/{invoice.id}",
                cards_link=f"{base}/payment-methods",
            ),
            partner,
        )
    return Done({"told": len(recipients)})


# -- what the dashboard and the invoice page show ------------------------------------------------


def _unpaid_with_failed_autopay_query() -> Select[Any]:
    """The customer's unpaid invoices (billing's query) with the id of each one's automatic
    payment when it failed: the dashboard's two cards in one round trip. Built once with the
    bound ``customer_id`` (building it per view cost more than running it)."""
    unpaid = queries.unpaid_invoices().subquery()
    failed_autopay = (
        select(PaymentAttempt.id)
        .where(
            PaymentAttempt.invoice_id == unpaid.c.id,
            PaymentAttempt.number == AUTOPAY_NUMBER,
            PaymentAttempt.state == AttemptState.FAILED,
        )
        .correlate(unpaid)
        .scalar_subquery()
    )
    return select(
        unpaid.c.currency,
        unpaid.c.due_on,
        unpaid.c.balance,
        failed_autopay.label("failed_autopay_id"),
    )


_UNPAID_WITH_FAILED_AUTOPAY = _unpaid_with_failed_autopay_query()


@dataclass(frozen=True)
class FailedCharge:
    """An automatic payment that did not go through, on an invoice still owing."""

    attempt: PaymentAttempt
    invoice: Invoice
    balance_minor: int


@dataclass(frozen=True)
class Owed:
    """What the dashboard shows about money: the billing card and the failed automatic
    payments on invoices still owing (empty unless asked for)."""

    summary: queries.AccountSummary
    failed: list[FailedCharge]


def owed(
    db_session: Session, customer_id: int, today: date, *, failed: bool = True, limit: int = 5
) -> Owed:
    """The customer's unpaid invoices summed, and (when ``failed``) up to ``limit`` failed
    automatic payments on them, newest first: one query, and a second only when an automatic
    payment failed."""
    rows = db_session.execute(_UNPAID_WITH_FAILED_AUTOPAY, {"customer_id": customer_id}).all()
    summary = queries.summarize_unpaid(
        [(row.currency, row.due_on, int(row.balance)) for row in rows], today
    )
    if not failed:
        return Owed(summary, [])
    balances = {
        row.failed_autopay_id: int(row.balance) for row in rows if row.failed_autopay_id is not None
    }
    return Owed(summary, _failed_charges(db_session, balances, limit))


def failed_charges(
    db_session: Session, customer_id: int, today: date, limit: int = 5
) -> list[FailedCharge]:
    """The customer's failed automatic payments whose invoices still have a balance, newest
    first (the payment methods page's list)."""
    return owed(db_session, customer_id, today, limit=limit).failed


def _failed_charges(
    db_session: Session, balances: dict[int, int], limit: int
) -> list[FailedCharge]:
    """The failed attempts ``balances`` names (attempt id -> its invoice's balance)."""
    if not balances:
        return []
    pairs = db_session.execute(
        select(PaymentAttempt, Invoice)
        .join(Invoice, Invoice.id == PaymentAttempt.invoice_id)
        .where(PaymentAttempt.id.in_(balances))
        .order_by(PaymentAttempt.created_at.desc(), PaymentAttempt.id.desc())
        .limit(limit)
    ).all()
    return [FailedCharge(attempt, invoice, balances[attempt.id]) for attempt, invoice in pairs]


def failed_autopay(db_session: Session, invoice_id: int) -> PaymentAttempt | None:
    """The invoice's automatic payment when it failed (the invoice page says so)."""
    return db_session.scalars(
        select(PaymentAttempt).where(
            PaymentAttempt.invoice_id == invoice_id,
            PaymentAttempt.number == AUTOPAY_NUMBER,
            PaymentAttempt.state == AttemptState.FAILED,
        )
    ).first()


def failure_message(code: str | None, reason: str | None) -> str:
    """Why a charge failed, in the reader's language (the gateway's own words as detail)."""
    if code == AUTHENTICATION_REQUIRED:
        return _(
            "Your bank asked you to confirm this payment, so it could not be made automatically."
        )
    if code == NO_CARD:
        return _("No card was saved to charge automatically.")
    if code == NO_CARD_GATEWAY:
        return _("The payment service in use cannot charge saved cards.")
    if code == BALANCE_CHANGED:
        return _(
            "The amount owed changed while the automatic payment was being made, so it was "
            "stopped. Check the invoice's payments, then pay what is still owed."
        )
    if reason:
        return _("The card was declined: %(reason)s", reason=reason)
    return _("The card was declined.")
