"""Putting subscriptions on a contract, or moving them from one contract to another.

A subscription's periods are billed in advance by the contract it is on when the period's run
happens. Moving one that was already invoiced is allowed only to a contract whose current
period is the same as the one it leaves (same first and last day): otherwise the new contract's
next period would overlap what the old one already billed, and those days would be billed
twice. Staff who need another schedule move it at a period boundary that both share, or make
the new contract's first day the old one's next period start.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.core.db import utcnow
from portal.core.errors import ServiceError, _
from portal.core.proration import Period, billing_period
from portal.features.billing.models import (
    BillingContract,
    Invoice,
    InvoiceLine,
    InvoiceState,
)
from portal.features.billing.services.contracts import put_on_contract
from portal.features.billing.services.purchases import bill_purchases
from portal.features.identity import audit
from portal.features.licences.models import Subscription
from portal.features.tenancy.models import Partner
from portal.features.tenancy.services import local_today


def assign_subscriptions(
    db_session: Session, contract: BillingContract, subscription_ids: Sequence[int], by: str
) -> None:
    """Put subscriptions on ``contract``: the same customer's, in its currency, bundle parents
    (their parts follow the parent and are never lines), on an active contract, and — for one
    already invoiced — a contract whose current period is the one it leaves (see the module).
    Their next invoice is the contract's; a purchase already provisioned and not billed yet
    is invoiced at once (:func:`portal.features.billing.services.purchases.bill_purchases`).
    Audited; the caller commits."""
    ids = sorted(set(subscription_ids))
    if not ids:
        raise ServiceError(_("Choose at least one subscription to move."))
    if not contract.active:
        raise ServiceError(_("Subscriptions cannot go on an inactive contract."))
    found = list(
        db_session.scalars(
            select(Subscription).where(
                Subscription.id.in_(ids), Subscription.customer_id == contract.customer_id
            )
        )
    )
    if len(found) != len(ids):
        raise ServiceError(_("Only this customer's subscriptions can go on its contract."))
    today = local_today(db_session.get_one(Partner, contract.partner_id), utcnow())
    for subscription in found:
        _check_movable(db_session, subscription, contract, today)
    moved = [s for s in found if s.billing_contract_id != contract.id]
    for subscription in moved:
        put_on_contract(db_session, subscription, contract)
    if moved:
        audit.record(
            db_session,
            partner_id=contract.partner_id,
            customer_id=contract.customer_id,
            actor=by,
            action="billing.subscriptions_assigned",
            contract=contract.id,
            subscriptions=",".join(str(s.id) for s in moved),
        )
    db_session.flush()
    bill_purchases(db_session, contract.partner_id, by=by, subscription_ids=ids)


def _check_movable(
    db_session: Session, subscription: Subscription, contract: BillingContract, today: date
) -> None:
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
    leaving = subscription.billing_contract_id
    if leaving is None or leaving == contract.id or not _invoiced(db_session, subscription.id):
        return
    old = db_session.get_one(BillingContract, leaving)
    if _current_period(old, today) != _current_period(contract, today):
        raise ServiceError(
            _(
                "%(name)s was already invoiced on %(old)s, whose period is not the same as "
                "%(new)s's: moving it now would bill some days twice. Move it on a day both "
                "periods start, or give the new contract the same schedule.",
                name=subscription.product.name,
                old=old.name,
                new=contract.name,
            )
        )


def _current_period(contract: BillingContract, today: date) -> Period:
    return billing_period(contract.anchor_on, contract.frequency.months, today)


def _invoiced(db_session: Session, subscription_id: int) -> bool:
    return (
        db_session.scalar(
            select(InvoiceLine.id)
            .join(Invoice, Invoice.id == InvoiceLine.invoice_id)
            .where(
                InvoiceLine.subscription_id == subscription_id,
                Invoice.state != InvoiceState.VOID,
            )
            .limit(1)
        )
        is not None
    )
