"""Purchases billed in advance, at once (DESIGN §4, Billing; issue 13, defect 8).

A purchase (the licence change from 0 seats) is billed in advance, at the price the customer
was shown, on the invoice of the contract period it starts in: an invoice made for it as soon
as billing learns of it, beside the contract's own invoice for that period (which the run
made at the period's start, before the purchase, or makes later with nothing of it). Its
lines are every own billing period of the subscription from the purchase's day (the
subscription's start) that starts before the end of the contract period in which the
provider applied it (the change's ``effective_at``, the truth): usually the period it was
requested in; when the provider applied it in a later one (requested 31 January, applied
1 February), that period's run counted no seats of it (the runs count a purchase's seats from
the day it was applied), so its invoice bills those periods too, and the invoice's period runs
from the first contract period to the end of the one it was applied in. Each line is for the
seats bought, at the unit price shown at purchase (the purchase's recorded amount per seat,
``LicenceChange.amount_minor``, 0 included), less the contract's prepaid (upfront) discount
for an annually or triennially billed product (the seats bought with the term), then the
contract's discount and tax. The run never settles a purchase as an addition
(:func:`portal.features.billing.services.run._billed`); changes after it are settled as
before, over the periods billed here.

**When**: :func:`bill_purchases` is called when a purchased subscription is put on a contract
(:func:`portal.features.billing.services.moves.assign_subscriptions`), at the start of each
billing run for the partner (the daily schedule: at most a day late), and by the outbox
handler :func:`bill_purchase` (kind :data:`PURCHASE_KIND`, ``{"change_id": …}``), to be queued
when a purchase is provisioned. Each purchase gets one invoice, by constraint
(``UNIQUE (purchase_change_id)``, inserted ``ON CONFLICT DO NOTHING``): callers at the same
time make one. With the partner's review on it stays a draft for staff; off, it is issued.

A purchase applied before its contract's first day is not billed here: the contract's first
invoice bills the periods from its first day, as for any subscription brought onto it. One
requested before that day but applied on or after it is billed here from that day.
Purchases an earlier version already settled as an addition on the next period's invoice
(before this rule) are left as they were billed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from datetime import date
from decimal import Decimal
from typing import Any, cast
from zoneinfo import ZoneInfo

from flask import Flask, current_app
from sqlalchemy import Table, func, insert, select
from sqlalchemy.orm import Session, aliased

from portal.core.db import insert_ignoring, utcnow
from portal.core.proration import Period, billing_period
from portal.features.billing.models import (
    BillingContract,
    Invoice,
    InvoiceLine,
    InvoiceState,
    ppm_to_rate,
)
from portal.features.billing.rules.invoicing import (
    BilledSubscription,
    ContractTerms,
    LineKind,
    assemble,
)
from portal.features.billing.services.contracts import place_unplaced_purchases
from portal.features.billing.services.documents import (
    Draft,
    billing_settings,
    issue_drafts,
    line_rows,
)
from portal.features.catalogue.models import Product, ProductPrice
from portal.features.catalogue.rules import BillingFrequency
from portal.features.identity import audit
from portal.features.licences.models import LicenceChange, Subscription, SubscriptionStatus
from portal.features.licences.rules import ChangeKind, ChangeState
from portal.features.tenancy.models import Partner
from portal.outbox.handlers import Done, Outcome
from portal.outbox.models import OutboxItem

log = logging.getLogger(__name__)

PURCHASE_KIND = "billing.purchase"
APPLIED = (ChangeState.PROVISIONED, ChangeState.NOT_APPLICABLE)
PREPAID = (BillingFrequency.ANNUAL, BillingFrequency.TRIENNIAL)

_INVOICE = cast(Table, Invoice.__table__)


def bill_purchases(
    db_session: Session,
    partner_id: int,
    *,
    by: str,
    subscription_ids: Sequence[int] | None = None,
    change_ids: Sequence[int] | None = None,
    today: date | None = None,
    run_id: int | None = None,
    app: Flask | None = None,
) -> list[int]:
    """Make the invoice of each of the partner's purchases that the provider applied, on a
    subscription of an active contract, and that has none yet (only those of
    ``subscription_ids`` / ``change_ids`` when given); returns the invoices made, issued when
    the partner does not review; ``run_id``: the billing run that made them, if one did. In
    the caller's transaction: the caller commits."""
    partner = db_session.get(Partner, partner_id)
    if partner is None:
        return []
    # a purchase on no contract lands on its customer's default one: every purchase is billed
    place_unplaced_purchases(
        db_session,
        partner_id,
        by=by,
        change_ids=change_ids,
        subscription_ids=subscription_ids,
        today=today,
    )
    zone = ZoneInfo(partner.timezone or "UTC")
    statement = _unbilled(db_session, partner_id)
    if subscription_ids is not None:
        statement = statement.where(Subscription.id.in_(list(subscription_ids)))
    if change_ids is not None:
        statement = statement.where(LicenceChange.id.in_(list(change_ids)))
    rows = db_session.execute(statement).all()
    if not rows:
        return []
    flask_app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    settings = billing_settings(db_session, partner_id)
    issue_on = today or utcnow().astimezone(zone).date()
    made: list[tuple[int, Any]] = []
    for row in rows:
        invoice_id = _bill_one(db_session, partner_id, row, zone, by, run_id)
        if invoice_id is not None:
            made.append((invoice_id, row))
    if made and not settings.invoice_review:
        issue_drafts(
            db_session,
            partner_id,
            [Draft(made_id, row.customer_id, row.payment_terms_days) for made_id, row in made],
            today=issue_on,
            by=by,
            settings=settings,
            app=flask_app,
        )
    return [invoice_id for invoice_id, _ in made]


def unbilled_purchases(db_session: Session, partner_id: int) -> list[int]:
    """The ids of the partner's purchases :func:`bill_purchases` would bill now, in order (a
    caller can bill them one at a time, each in a transaction of its own)."""
    return [row.change_id for row in db_session.execute(_unbilled(db_session, partner_id))]


def _unbilled(db_session: Session, partner_id: int) -> Any:
    """The statement of the partner's applied purchases on an active contract with no
    invoice yet, with what billing them needs."""
    billed = select(_INVOICE.c.id).where(_INVOICE.c.purchase_change_id == LicenceChange.id)
    statement = (
        select(
            LicenceChange.id.label("change_id"),
            LicenceChange.effective_at,
            LicenceChange.quantity_to,
            LicenceChange.amount_minor,
            Subscription.id.label("subscription_id"),
            Subscription.billing_frequency,
            Subscription.term_started_at,
            Subscription.term_ends_on,
            Subscription.auto_renew,
            Subscription.currency,
            Product.name,
            ProductPrice.price_minor,
            BillingContract.id.label("contract_id"),
            BillingContract.customer_id,
            BillingContract.currency.label("contract_currency"),
            BillingContract.frequency,
            BillingContract.anchor_on,
            BillingContract.payment_terms_days,
            BillingContract.discount_ppm,
            BillingContract.prepaid_discount_ppm,
            BillingContract.tax_rate_ppm,
        )
        .join(Subscription, Subscription.id == LicenceChange.subscription_id)
        .join(Product, Product.id == Subscription.product_id)
        .join(BillingContract, BillingContract.id == Subscription.billing_contract_id)
        .outerjoin(
            ProductPrice,
            (ProductPrice.product_id == Product.id)
            & (ProductPrice.currency == BillingContract.currency),
        )
        .where(
            LicenceChange.partner_id == partner_id,
            LicenceChange.kind == ChangeKind.PURCHASE,
            LicenceChange.state.in_(APPLIED),
            LicenceChange.quantity_to > 0,
            Subscription.parent_id.is_(None),
            Subscription.status != SubscriptionStatus.FAILED,
            BillingContract.active.is_(True),
            func.coalesce(LicenceChange.effective_at, Subscription.term_started_at)
            >= _day_before(db_session, BillingContract.anchor_on),
            ~billed.exists(),
        )
        .order_by(LicenceChange.id)
        .execution_options(unscoped=True)
    )
    return statement


def _day_before(db_session: Session, day: Any) -> Any:
    """The day before a date column, as SQL (a day's margin for the partner's time zone: the
    exact test is on the local day, in Python). Purchases applied before their contract's first
    day are most of them, and are left out in the statement, not row by row."""
    if db_session.get_bind().dialect.name == "sqlite":
        return func.date(day, "-1 day")
    return day - 1


def _own_periods(anchor: date, months: int, period: Period) -> Iterator[Period]:
    """The subscription's own periods that start in ``period``."""
    own = billing_period(anchor, months, period.start)
    while own.start < period.end:
        if own.start >= period.start:
            yield own
        own = billing_period(anchor, months, own.end)


def _bill_one(
    db_session: Session, partner_id: int, row: Any, zone: ZoneInfo, by: str, run_id: int | None
) -> int | None:
    """The invoice of one purchase, or None (not billable here, or made meanwhile)."""
    first_day = row.term_started_at.astimezone(zone).date()  # the subscription's anchor
    # the day the provider applied it: the runs count its seats from then on
    applied = max(first_day, (row.effective_at or row.term_started_at).astimezone(zone).date())
    if applied < row.anchor_on:
        return None  # before the contract's first day: its first invoice bills from that day
    if row.currency != row.contract_currency:
        log.error(
            "purchase %s: subscription in %s, contract %s in %s",
            row.change_id,
            row.currency,
            row.contract_id,
            row.contract_currency,
        )
        return None
    months = row.frequency.months
    from_day = max(first_day, row.anchor_on)
    applied_period = billing_period(row.anchor_on, months, applied)
    # the contract periods from the one the subscription starts in (or the contract's first)
    # to the one the provider applied it in: the runs of those after the first were made (or
    # are made) without its seats, which they count from the day it was applied
    contract_period = Period(
        billing_period(row.anchor_on, months, from_day).start, applied_period.end
    )
    from_purchase = Period(from_day, contract_period.end)
    periods = [
        own
        for own in _own_periods(first_day, row.billing_frequency.months, from_purchase)
        if row.auto_renew or own.start <= row.term_ends_on
    ]
    if not periods or _settled_as_addition(db_session, row, zone, applied_period):
        return None
    unit_price = _shown_price(row)
    if unit_price is None:
        log.error("purchase %s: no price in %s", row.change_id, row.contract_currency)
        return None
    discount = (
        ppm_to_rate(row.prepaid_discount_ppm) if row.billing_frequency in PREPAID else Decimal(0)
    )
    entries = [
        BilledSubscription(
            subscription_id=row.subscription_id,
            description=row.name,
            period=period,
            unit_price_minor=unit_price,
            upfront_discount=discount,
            quantity=row.quantity_to,
            bill_in_advance=True,
            previous_period=None,
            changes=(),
            children=_children(db_session, row.subscription_id),
        )
        for period in periods
    ]
    terms = ContractTerms(
        row.contract_currency, ppm_to_rate(row.discount_ppm), ppm_to_rate(row.tax_rate_ppm)
    )
    document = assemble(terms, entries, ()).invoice
    connection = db_session.connection()
    inserted = connection.execute(
        insert_ignoring(connection, _INVOICE, ("purchase_change_id",)).returning(_INVOICE.c.id),
        {
            "partner_id": partner_id,
            "customer_id": row.customer_id,
            "billing_contract_id": row.contract_id,
            "billing_run_id": run_id,
            "purchase_change_id": row.change_id,
            "state": InvoiceState.DRAFT,
            "period_start": contract_period.start,
            "period_end": contract_period.end,
            "currency": document.currency,
            "subtotal_minor": document.subtotal_minor,
            "tax_minor": document.tax_minor,
            "total_minor": document.total_minor,
            "tax_rate_ppm": row.tax_rate_ppm,
            "created_at": utcnow(),
        },
    ).scalar()
    if inserted is None:
        return None  # another caller made it
    invoice_id = int(inserted)
    db_session.execute(
        insert(InvoiceLine),
        [
            {
                **fields,
                "partner_id": partner_id,
                "customer_id": row.customer_id,
                "invoice_id": invoice_id,
            }
            for fields in line_rows(document.lines)
        ],
    )
    audit.record(
        db_session,
        partner_id=partner_id,
        customer_id=row.customer_id,
        actor=by,
        action="billing.purchase_invoiced",
        invoice=invoice_id,
        change=row.change_id,
        subscription=row.subscription_id,
        contract=row.contract_id,
    )
    return invoice_id


def _shown_price(row: Any) -> int | None:
    """The price of one seat for one period that the customer was shown when buying: the
    purchase's recorded amount (the first period, which starts on the day of the purchase,
    so whole) per seat, 0 included (shown free, billed free); the catalogue's price when that
    amount is not a whole per-seat price."""
    if row.amount_minor >= 0 and row.amount_minor % row.quantity_to == 0:
        return int(row.amount_minor // row.quantity_to)
    return None if row.price_minor is None else int(row.price_minor)


def _children(db_session: Session, subscription_id: int) -> tuple[str, ...]:
    part = aliased(Subscription)
    return tuple(
        db_session.scalars(
            select(Product.name)
            .join(part, part.product_id == Product.id)
            .where(part.parent_id == subscription_id)
            .order_by(part.id)
            .execution_options(unscoped=True)
        )
    )


def _settled_as_addition(
    db_session: Session, row: Any, zone: ZoneInfo, contract_period: Period
) -> bool:
    """Whether the run of the period after the purchase already charged it as an addition
    (the rule before purchases were billed at once): an addition line of the subscription
    for the seats bought, from the purchase's day, on the contract's next invoice."""
    day = (row.effective_at or row.term_started_at).astimezone(zone).date()
    lines = db_session.execute(
        select(InvoiceLine.quantity, InvoiceLine.period_start)
        .join(Invoice, Invoice.id == InvoiceLine.invoice_id)
        .where(
            Invoice.billing_contract_id == row.contract_id,
            Invoice.period_start == contract_period.end,
            Invoice.purchase_change_id.is_(None),
            InvoiceLine.subscription_id == row.subscription_id,
            InvoiceLine.kind == LineKind.ADDITION,
        )
        .execution_options(unscoped=True)
    ).all()
    return any(
        quantity == row.quantity_to and start in (day, row.term_started_at.astimezone(zone).date())
        for quantity, start in lines
    )


def bill_purchase(item: OutboxItem, session: Session) -> Outcome:
    """Outbox handler for ``billing.purchase`` (``{"change_id": …}``): the purchase's invoice,
    made at once when it was provisioned (nothing when it is not billable or already billed)."""
    change_id = int(str(item.payload["change_id"]))
    partner_id = session.scalar(
        select(LicenceChange.partner_id)
        .where(LicenceChange.id == change_id)
        .execution_options(unscoped=True)
    )
    if partner_id is None:
        return Done({"skipped": "no such change"})
    made = bill_purchases(session, partner_id, by="system", change_ids=[change_id])
    return Done({"invoices": made})
