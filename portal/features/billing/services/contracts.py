"""Billing contracts: creating them and assigning subscriptions to them.

The rest of billing has a module each: :mod:`~portal.features.billing.services.schedule` (when
runs happen: the daily schedule, the staff button, the queued run),
:mod:`~portal.features.billing.services.run` (the billing run makes invoices, one per contract
and period by database constraint), :mod:`~portal.features.billing.services.documents`
(numbering, issuing, voiding, discarding, recording payments, the issued-invoice mail) and
:mod:`~portal.features.billing.services.queries` (what the pages read: derived status, balance).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import date
from decimal import Decimal, InvalidOperation

from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.core.errors import ServiceError, _
from portal.core.money import exponent
from portal.features.billing.models import (
    BillingContract,
    rate_to_ppm,
)
from portal.features.billing.rules.invoicing import ContractFrequency
from portal.features.billing.services.purchases import bill_purchases
from portal.features.identity import audit
from portal.features.licences.models import Subscription
from portal.features.tenancy.models import Customer

log = logging.getLogger(__name__)

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
    (their parts follow the parent and are never lines). Their next invoice is the contract's;
    a purchase already provisioned and not billed yet is invoiced at once
    (:func:`portal.features.billing.services.purchases.bill_purchases`). Audited; the caller
    commits."""
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
    db_session.flush()
    bill_purchases(db_session, contract.partner_id, by=by, subscription_ids=ids)


def contracts_of(db_session: Session, customer_id: int) -> list[BillingContract]:
    return list(
        db_session.scalars(
            select(BillingContract)
            .where(BillingContract.customer_id == customer_id)
            .order_by(BillingContract.name, BillingContract.id)
        )
    )


# -- runs in the background -----------------------------------------------------------------------


# -- the mail to Finance Managers ------------------------------------------------------------------
