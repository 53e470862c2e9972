"""Billing use cases (issue 5): contracts, billing runs (the schedule, the staff button, the
CLI), issuing and voiding invoices, the payment ledger, and the mail to Finance Managers.

The pieces live in three modules and are all importable from here:

- :mod:`portal.services.billing_run` makes invoices (one per contract and period, by database
  constraint);
- :mod:`portal.services.billing_documents` numbers, issues, voids and discards them, and
  records payments;
- :mod:`portal.services.billing_queries` reads them for the pages (derived status, balance).

Background work goes through the outbox (DESIGN §7): ``billing.run`` runs a queued
:class:`~portal.models.billing.BillingRun` (the staff button, the daily schedule), and
``billing.invoice_issued`` emails an issued invoice to the customer's Finance Managers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

from flask import Flask, current_app
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal.db import get_database, utcnow
from portal.domain.money import exponent
from portal.domain.roles import CustomerRole
from portal.integrations.events import InvoiceIssued
from portal.integrations.registry import integrations
from portal.models import Customer, Membership, Partner, PartnerHost, Subscription, User
from portal.models.billing import (
    BillingContract,
    BillingRun,
    BillingRunState,
    ContractFrequency,
    Invoice,
    InvoiceState,
    rate_to_ppm,
)
from portal.models.outbox import OutboxItem
from portal.services import ServiceError, _, audit, mail
from portal.services.billing_documents import (
    ISSUED_KIND,
    ConcurrentChange,
    billing_settings,
    discard_draft,
    issue_invoice,
    issue_invoices,
    record_payment,
    set_invoice_review,
    void_invoice,
)
from portal.services.billing_run import (
    BillingRunError,
    period_starts_on,
    run_billing,
    run_billing_for_partner,
    usage_charges,
)
from portal.services.licences import local_today
from portal.tasks.handlers import Done, GiveUp, Outcome
from portal.tasks.outbox import enqueue

__all__ = [
    "ISSUED_KIND",
    "RUN_KIND",
    "BillingRunError",
    "ConcurrentChange",
    "assign_subscriptions",
    "billing_settings",
    "create_contract",
    "discard_draft",
    "issue_invoice",
    "issue_invoices",
    "notify_issued",
    "period_starts_on",
    "record_payment",
    "request_billing_run",
    "run_billing",
    "run_billing_for_partner",
    "run_queued",
    "runs_in_progress",
    "schedule_due_runs",
    "set_invoice_review",
    "usage_charges",
    "void_invoice",
]

log = logging.getLogger(__name__)

RUN_KIND = "billing.run"
SCHEDULE_ACTOR = "schedule"
CATCH_UP_DAYS = 7  # days a stopped scheduler (or broker) is caught up on when it comes back
RUN_MAX_ATTEMPTS = 3
MAX_TERMS_DAYS = 365


# -- contracts ----------------------------------------------------------------------------------


def create_contract(
    db_session: Session,
    customer: Customer,
    *,
    name: str,
    currency: str,
    frequency: ContractFrequency | str,
    anchor_on: date,
    by: str,
    payment_terms_days: int | None = None,
    discount: Decimal = Decimal(0),
    prepaid_discount: Decimal = Decimal(0),
    tax_rate: Decimal = Decimal(0),
    tax_plugin_key: str | None = None,
    autocharge: bool = False,
) -> BillingContract:
    """A new billing contract for ``customer``; every bad value is refused with a message and
    nothing is added. Rates are Decimal fractions (``Decimal("0.2")`` is 20 %). Payment terms
    default to the customer's. Audited; the caller commits."""
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise ServiceError(_("Give the contract a name of at most 200 characters."), "name")
    currency = (currency or "").strip().upper()
    try:
        exponent(currency)
    except ValueError:
        raise ServiceError(
            _("%(currency)s is not a currency code like USD or EUR.", currency=currency),
            "currency",
        ) from None
    try:
        frequency = ContractFrequency(frequency)
    except ValueError:
        raise ServiceError(_("Invoice monthly, quarterly or annually."), "frequency") from None
    terms = customer.payment_terms_days if payment_terms_days is None else payment_terms_days
    if isinstance(terms, bool) or not isinstance(terms, int) or not 0 <= terms <= MAX_TERMS_DAYS:
        raise ServiceError(
            _("Payment terms are a number of days from 0 to %(max)d.", max=MAX_TERMS_DAYS),
            "payment_terms_days",
        )
    rates = {}
    for field, rate in (
        ("discount", discount),
        ("prepaid_discount", prepaid_discount),
        ("tax_rate", tax_rate),
    ):
        try:
            rates[field] = rate_to_ppm(Decimal(rate))
        except (TypeError, ValueError, InvalidOperation):
            raise ServiceError(
                _("Rates are percentages from 0 to 100, with at most four decimals."), field
            ) from None
    exists = db_session.scalar(
        select(BillingContract.id).where(
            BillingContract.customer_id == customer.id, BillingContract.name == name
        )
    )
    if exists is not None:
        raise ServiceError(_("This customer already has a contract with that name."), "name")
    contract = BillingContract(
        partner_id=customer.partner_id,
        customer_id=customer.id,
        name=name,
        currency=currency,
        frequency=frequency,
        anchor_on=anchor_on,
        payment_terms_days=terms,
        discount_ppm=rates["discount"],
        prepaid_discount_ppm=rates["prepaid_discount"],
        tax_rate_ppm=rates["tax_rate"],
        tax_plugin_key=tax_plugin_key or None,
        autocharge=autocharge,
        active=True,
    )
    db_session.add(contract)
    db_session.flush()
    audit.record(
        db_session,
        partner_id=customer.partner_id,
        customer_id=customer.id,
        actor=by,
        action="billing.contract_created",
        contract=contract.id,
        name=name,
        currency=currency,
        frequency=frequency.value,
        anchor_on=anchor_on.isoformat(),
    )
    return contract


def assign_subscriptions(
    db_session: Session, contract: BillingContract, subscription_ids: Sequence[int], by: str
) -> None:
    """Put subscriptions on ``contract``: the same customer's, in its currency, bundle parents
    (their parts follow the parent and are never lines). Their next invoice is the contract's.
    Audited; the caller commits."""
    ids = sorted(set(subscription_ids))
    found = list(
        db_session.scalars(
            select(Subscription).where(
                Subscription.id.in_(ids), Subscription.customer_id == contract.customer_id
            )
        )
    )
    if len(found) != len(ids):
        raise ServiceError(_("Only this customer's subscriptions can go on its contract."))
    for subscription in found:
        if subscription.parent_id is not None:
            raise ServiceError(_("A bundle is billed as a whole: choose the bundle itself."))
        if subscription.currency != contract.currency:
            raise ServiceError(
                _(
                    "A subscription in %(currency)s cannot go on a contract in %(contract)s.",
                    currency=subscription.currency,
                    contract=contract.currency,
                )
            )
    for subscription in found:
        subscription.billing_contract_id = contract.id
        for child in subscription.children:
            child.billing_contract_id = contract.id
    audit.record(
        db_session,
        partner_id=contract.partner_id,
        customer_id=contract.customer_id,
        actor=by,
        action="billing.subscriptions_assigned",
        contract=contract.id,
        subscriptions=",".join(str(i) for i in ids),
    )


def contracts_of(db_session: Session, customer_id: int) -> list[BillingContract]:
    return list(
        db_session.scalars(
            select(BillingContract)
            .where(BillingContract.customer_id == customer_id)
            .order_by(BillingContract.name, BillingContract.id)
        )
    )


# -- runs in the background -----------------------------------------------------------------------


def request_billing_run(
    db_session: Session, partner: Partner, on: date, started_by: str
) -> BillingRun:
    """The staff button: a queued run for ``on`` (a day in the partner's time zone) and the
    outbox item a worker runs it from, both committed by the caller. A run for a day in the
    future is refused: its changes are not all known yet."""
    today = local_today(partner, utcnow())
    if on > today:
        raise ServiceError(
            _("A billing run can be for today or an earlier day, not a later one."), "on"
        )
    run = BillingRun(
        partner_id=partner.id, run_on=on, state=BillingRunState.QUEUED, started_by=started_by
    )
    db_session.add(run)
    db_session.flush()
    enqueue(
        db_session,
        RUN_KIND,
        {"run_id": run.id},
        partner_id=partner.id,
        max_attempts=RUN_MAX_ATTEMPTS,
    )
    audit.record(
        db_session,
        partner_id=partner.id,
        actor=started_by,
        action="billing.run_requested",
        run=run.id,
        run_on=on.isoformat(),
    )
    return run


def run_queued(item: OutboxItem, session: Session) -> Outcome:
    """Outbox handler for ``billing.run``: run the queued billing run.

    The run commits chunk by chunk in sessions of its own (a long transaction would hold back
    progress and locks); it is idempotent, so a worker that dies part-way through and the
    attempt that takes over bill each contract once. A run that already finished is not run
    again. A failure raises, and the outbox retries it.
    """
    run_id = int(str(item.payload["run_id"]))
    run = session.scalars(select(BillingRun).where(BillingRun.id == run_id)).first()
    if run is None:
        return GiveUp(f"billing run {run_id} does not exist")
    if run.state is BillingRunState.DONE:
        return Done({"skipped": "done"})
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    finished = run_billing_for_partner(
        run.partner_id, run.run_on, run.started_by, run_id=run.id, app=app
    )
    return Done(
        {
            "state": finished.state.value,
            "invoices": finished.invoices_created,
            "lines": finished.lines_created,
        }
    )


def schedule_due_runs(app: Flask, now: datetime | None = None) -> list[int]:
    """The daily schedule (called hourly by Celery beat): for each partner, queue a run for
    each day, up to today in its time zone, that has no scheduled run yet, going back at most
    :data:`CATCH_UP_DAYS` (a scheduler that was down catches up). Returns the runs queued.

    Two schedulers at once could queue the same day twice: harmless, as the second run finds
    every invoice made (the guarantee is the invoice's constraint, not this check).
    """
    now = now or utcnow()
    queued: list[int] = []
    with app.app_context(), get_database(app).sessions() as session:
        partners = list(session.scalars(select(Partner).order_by(Partner.id)))
        for partner in partners:
            today = now.astimezone(ZoneInfo(partner.timezone or "UTC")).date()
            last = session.scalar(
                select(func.max(BillingRun.run_on)).where(
                    BillingRun.partner_id == partner.id, BillingRun.started_by == SCHEDULE_ACTOR
                )
            )
            first = today - timedelta(days=CATCH_UP_DAYS - 1)
            if last is not None:
                first = max(first, last + timedelta(days=1))
            day = first
            while day <= today:
                run = BillingRun(
                    partner_id=partner.id,
                    run_on=day,
                    state=BillingRunState.QUEUED,
                    started_by=SCHEDULE_ACTOR,
                )
                session.add(run)
                session.flush()
                enqueue(
                    session,
                    RUN_KIND,
                    {"run_id": run.id},
                    partner_id=partner.id,
                    max_attempts=RUN_MAX_ATTEMPTS,
                    app=app,
                )
                queued.append(run.id)
                day += timedelta(days=1)
        session.commit()
    return queued


def runs_in_progress(db_session: Session) -> int:
    return (
        db_session.scalar(
            select(func.count(BillingRun.id)).where(
                BillingRun.state.in_((BillingRunState.QUEUED, BillingRunState.RUNNING))
            )
        )
        or 0
    )


# -- the mail to Finance Managers ------------------------------------------------------------------


def notify_issued(item: OutboxItem, session: Session) -> Outcome:
    """Outbox handler for ``billing.invoice_issued``: mail the customer's Finance Managers (its
    Administrators when it has none) a link to the invoice, each in their language, and tell
    the plugins (``portal_on_invoice_issued``). A voided invoice is not announced."""
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
    integrations().fire(
        "portal_on_invoice_issued",
        event=InvoiceIssued(
            invoice_id=invoice.id,
            customer_id=invoice.customer_id,
            number=invoice.number or "",
            total_minor=invoice.total_minor,
            currency=invoice.currency,
        ),
    )
    return Done({"told": len(recipients)})


def finance_contacts(session: Session, customer_id: int) -> list[User]:
    """Active Finance Managers of the account; its Administrators when there is none."""
    for role in (CustomerRole.FINANCE_MANAGER, CustomerRole.ADMINISTRATOR):
        users = list(
            session.scalars(
                select(User)
                .join(Membership, Membership.user_id == User.id)
                .where(
                    Membership.customer_id == customer_id,
                    Membership.role == role,
                    User.active.is_(True),
                )
                .order_by(User.email)
            )
        )
        if users:
            return users
    return []


def portal_base_url(session: Session, partner: Partner) -> str:
    """``https://<the partner's first host name>`` (http with insecure development cookies)."""
    host = session.scalar(
        select(PartnerHost.host)
        .where(PartnerHost.partner_id == partner.id)
        .order_by(PartnerHost.id)
        .limit(1)
        .execution_options(unscoped=True)
    )
    scheme = "http" if current_app.config.get("PORTAL_INSECURE_COOKIES") else "https"
    return f"{scheme}://{host or 'localhost'}"
