"""Demo billing: a monthly contract per demo customer and a few months of invoices, made by the
real billing run and issued as staff would, so ``make run`` shows every status.

Each customer's contract starts on the 1st of the month three months back (partner's time
zone) and carries all of its subscriptions. The run of each month's 1st since then is run and
its invoices issued on that day (without mail: this is history). Payments (gateway ``demo``):
Fabrikam paid all but part of its newest invoice (partially paid, not due yet); Northwind
paid its first and not the next (overdue); Tailspin (on credit hold) paid nothing.
Idempotent: a partner that has contracts is left as it is.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

from dateutil.relativedelta import relativedelta
from sqlalchemy import select

from portal.core.db import get_database, utcnow
from portal.features.billing.models import BillingContract, Invoice, InvoiceState, PaymentKind
from portal.features.billing.rules.invoicing import ContractFrequency
from portal.features.billing.services.documents import issue_invoices, record_payment
from portal.features.billing.services.run import run_billing_for_partner
from portal.features.licences.models import Subscription
from portal.features.tenancy.models import Customer, Partner

DEMO_ACTOR = "demo data"
MONTHS_BACK = 3


def _paid_share(customer: str, index: int, count: int) -> tuple[int, int]:
    """The share paid of a customer's ``index``-th issued invoice (oldest first) of ``count``."""
    if customer == "Fabrikam Ltd":  # paid up, and part of the newest (not due yet)
        return (2, 5) if index == count - 1 else (1, 1)
    if customer == "Northwind Traders":  # paid the first only: the next is overdue
        return (1, 1) if index == 0 else (0, 1)
    return (0, 1)


def create_demo_billing(partner_id: int) -> bool:
    """Contracts and invoices for the demo customers, once; True when they were made."""
    database = get_database()
    with database.sessions() as session:
        partner = session.get_one(Partner, partner_id)
        if session.scalars(
            select(BillingContract.id).where(BillingContract.partner_id == partner_id)
        ).first():
            return False
        zone = ZoneInfo(partner.timezone or "UTC")
        this_month = utcnow().astimezone(zone).date().replace(day=1)
        first = this_month - relativedelta(months=MONTHS_BACK)
        customers = list(
            session.scalars(
                select(Customer).where(Customer.partner_id == partner_id).order_by(Customer.id)
            )
        )
        for customer in customers:
            contract = BillingContract(
                partner_id=partner_id,
                customer_id=customer.id,
                name="Microsoft 365",
                currency=customer.default_currency,
                frequency=ContractFrequency.MONTHLY,
                anchor_on=first,
                payment_terms_days=customer.payment_terms_days,
                discount_ppm=0,
                prepaid_discount_ppm=0,
                tax_rate_ppm=0,
                active=True,
            )
            session.add(contract)
            session.flush()
            for subscription in session.scalars(
                select(Subscription).where(Subscription.customer_id == customer.id)
            ):
                subscription.billing_contract_id = contract.id
        session.commit()
    month = first
    while month <= this_month:
        run = run_billing_for_partner(partner_id, month, DEMO_ACTOR, today=month)
        _issue(partner_id, run.id, month)
        month += relativedelta(months=1)
    _pay(partner_id, zone)
    return True


def _issue(partner_id: int, run_id: int, day: date) -> None:
    """Issue a run's drafts on its day, without mail (this is history)."""
    with get_database().sessions() as session:
        partner = session.get_one(Partner, partner_id)
        ids = list(
            session.scalars(
                select(Invoice.id)
                .where(Invoice.billing_run_id == run_id, Invoice.state == InvoiceState.DRAFT)
                .order_by(Invoice.id)
            )
        )
        issue_invoices(session, partner, ids, DEMO_ACTOR, today=day, notify=False)
        session.commit()


def _pay(partner_id: int, zone: ZoneInfo) -> None:
    with get_database().sessions() as session:
        customers = session.scalars(select(Customer).where(Customer.partner_id == partner_id))
        for customer in customers:
            invoices = list(
                session.scalars(
                    select(Invoice)
                    .where(Invoice.customer_id == customer.id, Invoice.state == InvoiceState.ISSUED)
                    .order_by(Invoice.period_start)
                )
            )
            for index, invoice in enumerate(invoices):
                numerator, denominator = _paid_share(customer.name, index, len(invoices))
                amount = invoice.total_minor * numerator // denominator
                if amount <= 0 or invoice.issued_on is None:
                    continue
                paid_on = datetime.combine(
                    invoice.issued_on + relativedelta(days=12), time(10), tzinfo=zone
                )
                record_payment(
                    session,
                    invoice,
                    kind=PaymentKind.PAYMENT,
                    amount_minor=amount,
                    gateway_key="demo",
                    gateway_reference=f"demo-{invoice.number}",
                    received_at=paid_on.astimezone(UTC),
                    recorded_by=DEMO_ACTOR,
                )
        session.commit()
