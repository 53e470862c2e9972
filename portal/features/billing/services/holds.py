"""Automatic credit hold (DESIGN §4, Gates; the rules: :mod:`~portal.features.billing.rules.holds`).

- :func:`review_credit_holds` (the periodic job ``portal.billing.credit_holds``, hourly) puts
  every account whose overdue invoices break its rules on hold, and lifts every automatic hold
  whose overdue balance is paid;
- a payment lifts it at once, so the changes that waited go out in order without waiting for
  the hour: a gateway payment's receipt handler (``payments.receipt``) calls
  :func:`review_customer` for an account on automatic hold, and a payment staff record queues
  :func:`review_hold` (outbox kind ``billing.review_hold``, by
  ``documents.queue_review_after_payment``);
- :func:`tell` (outbox kind :data:`NOTICE_KIND`) mails the account's Finance Managers (its
  Administrators when it has none) and the partner's finance team.

Each account is decided in a transaction of its own, under its row lock, reading its invoices
after taking it: a payment recorded meanwhile is seen, or its review runs after this one.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import date
from typing import Any

from flask import Flask, current_app
from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from portal.core.db import get_database, utcnow
from portal.core.errors import ServiceError, _
from portal.core.money import parse_major, to_major
from portal.core.roles import StaffRole
from portal.features.billing.models import BillingSettings, Invoice, InvoiceState
from portal.features.billing.rules.holds import (
    Cause,
    Overdue,
    Verdict,
    effective_rules,
    hold_verdict,
    may_lift,
)
from portal.features.billing.services.documents import billing_settings
from portal.features.billing.services.queries import _credited, _paid
from portal.features.identity import audit
from portal.features.identity.services.people import finance_contacts, team_emails
from portal.features.licences.services.subscriptions import put_credit_hold
from portal.features.tenancy import mail
from portal.features.tenancy.models import Customer, Partner
from portal.features.tenancy.services import local_today, portal_base_url
from portal.outbox.handlers import Done, GiveUp, Outcome
from portal.outbox.items import enqueue
from portal.outbox.models import OutboxItem

log = logging.getLogger(__name__)

NOTICE_KIND = "billing.hold_notice"
ACTOR = "system"


def overdue_of(db_session: Session, customer: Customer, today: date) -> Overdue:
    """The customer's overdue invoices in its currency: what is left to pay, the oldest due."""
    balance = Invoice.total_minor - _credited() - _paid()
    rows = db_session.execute(
        select(balance, Invoice.due_on)
        .where(
            Invoice.customer_id == customer.id,
            Invoice.currency == customer.default_currency,
            Invoice.state == InvoiceState.ISSUED,
            Invoice.due_on < today,
        )
        .execution_options(unscoped=True)
    ).all()
    owed: list[tuple[int, date]] = [
        (int(left), due) for left, due in rows if left > 0 and due is not None
    ]
    if not owed:
        return Overdue()
    return Overdue(sum(left for left, _ in owed), min(due for _, due in owed))


def review_customer(
    db_session: Session, partner: Partner, customer_id: int, today: date
) -> str | None:
    """Decide one account under its row lock: ``"on"``, ``"off"`` or None (nothing to do).
    Queues the notice; the caller commits."""
    customer = db_session.scalars(
        select(Customer)
        .where(Customer.id == customer_id)
        .with_for_update()
        .execution_options(unscoped=True, populate_existing=True)
    ).one()
    overdue = overdue_of(db_session, customer, today)
    if customer.credit_hold:
        if not may_lift(customer.credit_hold_automatic, overdue):
            return None
        put_credit_hold(
            db_session, partner, customer, False, ACTOR, "overdue balance paid", automatic=True
        )
        _queue_notice(db_session, customer, on=False)
        return "off"
    settings = billing_settings(db_session, partner.id)
    rules = effective_rules(
        customer_limit_minor=customer.credit_limit_minor,
        customer_grace_days=customer.hold_grace_days,
        customer_currency=customer.default_currency,
        partner_limit_minor=settings.hold_limit_minor,
        partner_grace_days=settings.hold_grace_days,
        partner_currency=partner.default_currency,
    )
    verdict = hold_verdict(overdue, rules, today)
    if verdict is None:
        return None
    put_credit_hold(
        db_session, partner, customer, True, ACTOR, _reason(verdict, customer), automatic=True
    )
    _queue_notice(db_session, customer, on=True, verdict=verdict)
    return "on"


def _reason(verdict: Verdict, customer: Customer) -> str:
    """The audit trail's reason (staff read it; plain English, like every audit detail)."""
    currency = customer.default_currency
    owed = f"{to_major(verdict.overdue_minor, currency)} {currency}"
    if verdict.cause is Cause.OVER_LIMIT:
        assert verdict.limit_minor is not None
        limit = f"{to_major(verdict.limit_minor, currency)} {currency}"
        return f"automatic: overdue balance {owed} above the credit limit of {limit}"
    return (
        f"automatic: an invoice is {verdict.days_overdue} days overdue "
        f"(grace period {verdict.grace_days} days); overdue balance {owed}"
    )


def _queue_notice(
    db_session: Session, customer: Customer, *, on: bool, verdict: Verdict | None = None
) -> None:
    payload: dict[str, Any] = {"customer_id": customer.id, "on": on}
    if verdict is not None:
        payload.update(
            cause=verdict.cause.value,
            overdue_minor=verdict.overdue_minor,
            limit_minor=verdict.limit_minor,
            days_overdue=verdict.days_overdue,
            grace_days=verdict.grace_days,
        )
    enqueue(
        db_session,
        NOTICE_KIND,
        payload,
        partner_id=customer.partner_id,
        customer_id=customer.id,
    )


def review_credit_holds(app: Flask) -> dict[str, int]:
    """The periodic job: every account with a rule, or on automatic hold, decided on its own
    (one that fails is logged; the others go on). Counts of holds put and lifted."""
    database = get_database(app)
    counts: dict[str, int] = defaultdict(int)
    with app.app_context():
        with database.sessions() as session:
            partners = list(session.scalars(select(Partner).execution_options(unscoped=True)))
        for partner in partners:
            today = local_today(partner, utcnow())
            with database.sessions() as session:
                settings = billing_settings(session, partner.id)
                ids = list(session.scalars(_candidates(partner, settings, today)))
            for customer_id in ids:
                try:
                    with database.sessions() as session:
                        fresh = session.get_one(Partner, partner.id)
                        outcome = review_customer(session, fresh, customer_id, today)
                        session.commit()
                except Exception:
                    log.exception("credit hold review of customer %s failed", customer_id)
                    counts["failed"] += 1
                    continue
                if outcome is not None:
                    counts[outcome] += 1
    return dict(counts)


def _candidates(partner: Partner, settings: BillingSettings, today: date) -> Any:
    """The partner's accounts a review may change: on automatic hold, or not on hold with a
    rule of their own or the partner's (the one with overdue invoices only)."""
    has_rule: list[ColumnElement[bool]] = [
        Customer.credit_limit_minor.is_not(None),
        Customer.hold_grace_days.is_not(None),
    ]
    if settings.hold_grace_days is not None:
        has_rule.append(Customer.id.is_not(None))
    if settings.hold_limit_minor is not None:
        has_rule.append(Customer.default_currency == partner.default_currency)
    overdue = (
        select(Invoice.id)
        .where(
            Invoice.customer_id == Customer.id,
            Invoice.state == InvoiceState.ISSUED,
            Invoice.due_on < today,
        )
        .exists()
    )
    return (
        select(Customer.id)
        .where(
            Customer.partner_id == partner.id,
            or_(
                Customer.credit_hold_automatic.is_(True),
                (Customer.credit_hold.is_(False)) & or_(*has_rule) & overdue,
            ),
        )
        .order_by(Customer.id)
        .execution_options(unscoped=True)
    )


def review_hold(item: OutboxItem, session: Session) -> Outcome:
    """Outbox handler for :data:`REVIEW_KIND` (``{"customer_id": …}``)."""
    customer_id = int(str(item.payload["customer_id"]))
    partner_id = session.scalar(
        select(Customer.partner_id)
        .where(Customer.id == customer_id)
        .execution_options(unscoped=True)
    )
    if partner_id is None:
        return GiveUp(f"customer {customer_id} does not exist")
    partner = session.get_one(Partner, partner_id)
    outcome = review_customer(session, partner, customer_id, local_today(partner, utcnow()))
    return Done({"hold": outcome or "unchanged"})


def tell(item: OutboxItem, session: Session) -> Outcome:
    """Outbox handler for :data:`NOTICE_KIND`: the account's finance contacts, in their
    language, and the partner's finance team, in English."""
    customer = session.scalars(
        select(Customer)
        .where(Customer.id == int(str(item.payload["customer_id"])))
        .execution_options(unscoped=True)
    ).first()
    if customer is None:
        return GiveUp("the customer does not exist")
    partner = session.get_one(Partner, customer.partner_id)
    on = bool(item.payload["on"])
    template = "credit_hold_on" if on else "credit_hold_off"
    context = _notice_context(item.payload, customer)
    base = portal_base_url(session, partner)
    contacts = finance_contacts(session, customer.id)
    for user in contacts:
        mail.send(
            mail.render_mail(
                template,
                partner,
                user.locale,
                to=user.email,
                customer=customer,
                link=f"{base}/invoices",
                **context,
            ),
            partner,
        )
    team = finance_team(session, partner)
    for address in team:
        mail.send(
            mail.render_mail(
                f"{template}_team",
                partner,
                "en",
                to=address,
                customer=customer,
                link=f"{base}/staff/customers/{customer.id}",
                **context,
            ),
            partner,
        )
    return Done({"told": len(contacts) + len(team)})


def _notice_context(payload: dict[str, Any], customer: Customer) -> dict[str, Any]:
    return {
        "cause": payload.get("cause"),
        "overdue_minor": payload.get("overdue_minor"),
        "limit_minor": payload.get("limit_minor"),
        "days_overdue": payload.get("days_overdue"),
        "grace_days": payload.get("grace_days"),
        "currency": customer.default_currency,
    }


def finance_team(session: Session, partner: Partner) -> list[str]:
    """``PORTAL_FINANCE_TEAM_EMAIL``, else the partner's active admin and finance staff."""
    configured = current_app.config.get("PORTAL_FINANCE_TEAM_EMAIL") or ""
    return team_emails(session, partner.id, configured, (StaffRole.ADMIN, StaffRole.FINANCE))


# -- the rules staff set ---------------------------------------------------------------------------

MAX_GRACE_DAYS = 365


def set_partner_rules(
    db_session: Session, partner: Partner, grace_days: str, limit: str, by: str
) -> None:
    """The partner's automatic hold rules, for customers with none of their own: a grace
    period in days and a credit limit in the partner's default currency, each "" for none.
    Every bad value is refused with a message and nothing changes. Audited; the caller
    commits."""
    grace = _grace(grace_days)
    limit_minor = credit_limit_minor(limit, partner.default_currency, "hold_limit")
    settings = billing_settings(db_session, partner.id)
    if settings.id is None:
        db_session.add(settings)
    if (settings.hold_grace_days, settings.hold_limit_minor) == (grace, limit_minor):
        return
    settings.hold_grace_days, settings.hold_limit_minor = grace, limit_minor
    settings.updated_at = utcnow()
    settings.updated_by = by
    audit.record(
        db_session,
        partner_id=partner.id,
        actor=by,
        action="billing.hold_rules_changed",
        grace_days=grace,
        limit_minor=limit_minor,
        currency=partner.default_currency,
    )


def set_customer_rules(
    db_session: Session, partner: Partner, customer: Customer, limit: str, grace_days: str, by: str
) -> None:
    """The customer's own credit limit (in its currency) and grace period, each "" for the
    partner's. Every bad value is refused with a message and nothing changes. Audited; the
    caller commits. The next review (hourly, or a payment) applies them."""
    limit_minor = credit_limit_minor(limit, customer.default_currency, "credit_limit")
    grace = _grace(grace_days)
    if (customer.credit_limit_minor, customer.hold_grace_days) == (limit_minor, grace):
        return
    customer.credit_limit_minor, customer.hold_grace_days = limit_minor, grace
    audit.record(
        db_session,
        partner_id=partner.id,
        customer_id=customer.id,
        actor=by,
        action="credit.rules_changed",
        limit_minor=limit_minor,
        grace_days=grace,
    )


def _grace(text: str) -> int | None:
    typed = (text or "").strip()
    if not typed:
        return None
    if not typed.isdigit() or int(typed) > MAX_GRACE_DAYS:
        raise ServiceError(
            _("A grace period is a whole number of days from 0 to %(max)d.", max=MAX_GRACE_DAYS),
            "grace_days",
        )
    return int(typed)


def credit_limit_minor(text: str, currency: str, field: str) -> int | None:
    """A credit limit typed in major units as minor units, None when blank; refused with a
    message naming ``field`` when it is not an amount of 0 or more in ``currency``."""
    typed = (text or "").strip()
    if not typed:
        return None
    try:
        return parse_major(typed, currency)
    except ValueError:
        raise ServiceError(
            _(
                "A credit limit is an amount of 0 or more in %(currency)s, to the cent "
                "(or the currency's smallest unit).",
                currency=currency,
            ),
            field,
        ) from None
