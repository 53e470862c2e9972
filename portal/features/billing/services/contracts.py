"""Billing contracts: creating, editing, the customer's default, deactivating.

Every customer has a **default contract** per currency (``is_default``; one at most, by a
partial unique index): the one a purchase in that currency lands on when it is provisioned
(:func:`place_unplaced_purchases`), so that every purchase is invoiced. Onboarding makes it;
a purchase of a customer that has none in its currency makes one, starting on the day the
provider applied the purchase. Staff may make another active contract the default.

Moving subscriptions between contracts is :mod:`~portal.features.billing.services.moves`. The
rest of billing has a module each: :mod:`~portal.features.billing.services.schedule` (when
runs happen: the daily schedule, the staff button, the queued run),
:mod:`~portal.features.billing.services.run` (the billing run makes invoices, one per contract
and period by database constraint), :mod:`~portal.features.billing.services.documents`
(numbering, issuing, voiding, discarding, recording payments, the issued-invoice mail) and
:mod:`~portal.features.billing.services.queries` (what the pages read: derived status, balance).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import CursorResult, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from portal.core.db import utcnow
from portal.core.errors import ServiceError, _
from portal.core.money import exponent
from portal.features.billing.models import (
    BillingContract,
    Invoice,
    rate_to_ppm,
)
from portal.features.billing.rules.invoicing import ContractFrequency
from portal.features.identity import audit
from portal.features.licences.models import LicenceChange, Subscription, SubscriptionStatus
from portal.features.licences.rules import ChangeKind, ChangeState
from portal.features.tenancy.models import Customer, Partner

log = logging.getLogger(__name__)

MAX_TERMS_DAYS = 365
APPLIED = (ChangeState.PROVISIONED, ChangeState.NOT_APPLICABLE)
# subscriptions no longer invoiced: a contract carrying only these may be deactivated
ENDED = (SubscriptionStatus.FAILED, SubscriptionStatus.CANCELLED)


@dataclass(frozen=True)
class ContractTermsInput:
    """What staff set on a contract, as given (checked by :func:`create_contract` and
    :func:`update_contract`). Rates are Decimal fractions (``Decimal("0.2")`` is 20 %)."""

    name: str
    frequency: ContractFrequency | str
    anchor_on: date
    payment_terms_days: int | None = None
    discount: Decimal = Decimal(0)
    prepaid_discount: Decimal = Decimal(0)
    tax_rate: Decimal = Decimal(0)
    autocharge: bool = False


@dataclass(frozen=True)
class _Checked:
    name: str
    frequency: ContractFrequency
    anchor_on: date
    payment_terms_days: int
    discount_ppm: int
    prepaid_discount_ppm: int
    tax_rate_ppm: int
    autocharge: bool


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
    make_default: bool = False,
) -> BillingContract:
    """A new billing contract for ``customer``; every bad value is refused with a message and
    nothing is added. Payment terms default to the customer's. It becomes the customer's
    default in its currency when asked to (``make_default``) or when the customer has none
    there yet. Audited; the caller commits."""
    currency = checked_currency(currency)
    checked = _checked(
        db_session,
        customer,
        ContractTermsInput(
            name=name,
            frequency=frequency,
            anchor_on=anchor_on,
            payment_terms_days=payment_terms_days,
            discount=discount,
            prepaid_discount=prepaid_discount,
            tax_rate=tax_rate,
            autocharge=autocharge,
        ),
        contract_id=None,
    )
    becomes_default = make_default or default_contract_of(db_session, customer.id, currency) is None
    if becomes_default:
        _clear_default(db_session, customer.id, currency)
    contract = BillingContract(
        partner_id=customer.partner_id,
        customer_id=customer.id,
        name=checked.name,
        currency=currency,
        frequency=checked.frequency,
        anchor_on=checked.anchor_on,
        payment_terms_days=checked.payment_terms_days,
        discount_ppm=checked.discount_ppm,
        prepaid_discount_ppm=checked.prepaid_discount_ppm,
        tax_rate_ppm=checked.tax_rate_ppm,
        tax_plugin_key=tax_plugin_key or None,
        autocharge=checked.autocharge,
        active=True,
        is_default=becomes_default,
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
        name=checked.name,
        currency=currency,
        frequency=checked.frequency.value,
        anchor_on=checked.anchor_on.isoformat(),
        default=becomes_default,
    )
    return contract


def update_contract(
    db_session: Session, contract: BillingContract, terms: ContractTermsInput, by: str
) -> None:
    """Change a contract's name, frequency, first day, terms, rates and autopay; every bad
    value is refused with a message and nothing changes. The currency never changes (its
    invoices and subscriptions are in it). The first day and the frequency decide the
    periods: once the contract has an invoice they stay, or periods already billed would be
    billed again. Audited; the caller commits."""
    customer = db_session.get_one(Customer, contract.customer_id)
    checked = _checked(db_session, customer, terms, contract_id=contract.id)
    moves_periods = (
        checked.anchor_on != contract.anchor_on or checked.frequency != contract.frequency
    )
    if moves_periods and _has_invoices(db_session, contract.id):
        raise ServiceError(
            _(
                "This contract has invoices: its first day and how often it invoices stay as "
                "they are. Make a new contract for a new schedule."
            ),
            "anchor_on" if checked.anchor_on != contract.anchor_on else "frequency",
        )
    before = _summary(contract)
    contract.name = checked.name
    contract.frequency = checked.frequency
    contract.anchor_on = checked.anchor_on
    contract.payment_terms_days = checked.payment_terms_days
    contract.discount_ppm = checked.discount_ppm
    contract.prepaid_discount_ppm = checked.prepaid_discount_ppm
    contract.tax_rate_ppm = checked.tax_rate_ppm
    contract.autocharge = checked.autocharge
    after = _summary(contract)
    changed = {key: f"{before[key]} → {after[key]}" for key in after if before[key] != after[key]}
    if changed:
        audit.record(
            db_session,
            partner_id=contract.partner_id,
            customer_id=contract.customer_id,
            actor=by,
            action="billing.contract_updated",
            contract=contract.id,
            **changed,
        )
    db_session.flush()


def make_default(db_session: Session, contract: BillingContract, by: str) -> None:
    """Make an active contract its customer's default in its currency (the one before stops
    being it). Audited; the caller commits."""
    if not contract.active:
        raise ServiceError(_("An inactive contract cannot be the default."))
    if contract.is_default:
        return
    _clear_default(db_session, contract.customer_id, contract.currency)
    contract.is_default = True
    db_session.flush()
    audit.record(
        db_session,
        partner_id=contract.partner_id,
        customer_id=contract.customer_id,
        actor=by,
        action="billing.contract_made_default",
        contract=contract.id,
        currency=contract.currency,
    )


def deactivate_contract(db_session: Session, contract: BillingContract, by: str) -> None:
    """Stop invoicing a contract: refused while subscriptions are still on it (move them
    first, or they would no longer be invoiced) and for the default (make another one the
    default first, or the next purchase would have nowhere to land). Its invoices stay as they
    are. Audited; the caller commits."""
    if not contract.active:
        return
    if contract.is_default:
        raise ServiceError(
            _("This is the default contract: make another one the default before deactivating it.")
        )
    # its row lock first: a purchase being placed on it meanwhile has committed (and is
    # counted below) or sees it inactive
    db_session.execute(
        select(BillingContract.id).where(BillingContract.id == contract.id).with_for_update()
    ).all()
    carried = db_session.scalar(
        select(func.count())
        .select_from(Subscription)
        .where(
            Subscription.billing_contract_id == contract.id,
            Subscription.parent_id.is_(None),
            Subscription.status.not_in(ENDED),
        )
    )
    if carried:
        raise ServiceError(
            _("Subscriptions are still on this contract: move them to another contract first.")
        )
    contract.active = False
    db_session.flush()
    audit.record(
        db_session,
        partner_id=contract.partner_id,
        customer_id=contract.customer_id,
        actor=by,
        action="billing.contract_deactivated",
        contract=contract.id,
    )


def contracts_of(db_session: Session, customer_id: int) -> list[BillingContract]:
    return list(
        db_session.scalars(
            select(BillingContract)
            .where(BillingContract.customer_id == customer_id)
            .order_by(BillingContract.active.desc(), BillingContract.name, BillingContract.id)
        )
    )


def default_contract_of(
    db_session: Session, customer_id: int, currency: str
) -> BillingContract | None:
    return db_session.scalars(
        select(BillingContract)
        .where(
            BillingContract.customer_id == customer_id,
            BillingContract.currency == currency,
            BillingContract.is_default.is_(True),
        )
        .execution_options(unscoped=True)
    ).first()


def default_contract(
    db_session: Session, customer: Customer, currency: str, *, starts_on: date, by: str
) -> BillingContract:
    """The customer's default contract in ``currency``, made when it has none (monthly, from
    ``starts_on``, on the customer's payment terms). Two callers making one at once: the
    second finds the first's (the partial unique index refuses a second default)."""
    found = default_contract_of(db_session, customer.id, currency)
    if found is not None:
        return found
    try:
        with db_session.begin_nested():
            return create_contract(
                db_session,
                customer,
                name=_free_name(db_session, customer.id, currency),
                currency=currency,
                frequency=ContractFrequency.MONTHLY,
                anchor_on=starts_on,
                by=by,
                make_default=True,
            )
    except (IntegrityError, ServiceError):
        # another caller made it meanwhile (the partial unique index, or its name)
        made = default_contract_of(db_session, customer.id, currency)
        if made is None:
            raise
        return made


PLACE_WITHIN_DAYS = 7  # older purchases on no contract wait for staff (their periods since)


def place_unplaced_purchases(
    db_session: Session,
    partner_id: int,
    *,
    by: str,
    change_ids: Sequence[int] | None = None,
    subscription_ids: Sequence[int] | None = None,
    today: date | None = None,
) -> list[int]:
    """Put each purchase the provider applied in the last :data:`PLACE_WITHIN_DAYS` days whose
    subscription is on no contract on its customer's default contract in its currency (made
    when there is none, from the day the provider applied the purchase), so it is invoiced
    from that day. A purchase applied earlier, or before its default contract's first day, is
    left for staff to place (the contracts page lists it): billing it now would bill only its
    first period and skip the ones between. Each in a savepoint of its own: one that cannot be
    placed is logged and the others go on. Returns the subscriptions placed; the caller
    commits."""
    partner = db_session.get_one(Partner, partner_id)
    zone = ZoneInfo(partner.timezone or "UTC")
    today = today or utcnow().astimezone(zone).date()
    statement = (
        select(
            LicenceChange.subscription_id, LicenceChange.effective_at, LicenceChange.requested_at
        )
        .join(Subscription, Subscription.id == LicenceChange.subscription_id)
        .where(
            LicenceChange.partner_id == partner_id,
            LicenceChange.kind == ChangeKind.PURCHASE,
            LicenceChange.state.in_(APPLIED),
            LicenceChange.quantity_to > 0,
            Subscription.billing_contract_id.is_(None),
            Subscription.parent_id.is_(None),
            Subscription.status.not_in(ENDED),
        )
        .order_by(LicenceChange.id)
        .execution_options(unscoped=True)
    )
    if change_ids is not None:
        statement = statement.where(LicenceChange.id.in_(list(change_ids)))
    if subscription_ids is not None:
        statement = statement.where(Subscription.id.in_(list(subscription_ids)))
    placed: list[int] = []
    for subscription_id, effective_at, requested_at in db_session.execute(statement).all():
        applied_on = (effective_at or requested_at).astimezone(zone).date()
        if (today - applied_on).days > PLACE_WITHIN_DAYS:
            continue
        try:
            with db_session.begin_nested():
                if _place(db_session, partner_id, subscription_id, applied_on, by):
                    placed.append(subscription_id)
        except (ServiceError, IntegrityError):
            log.exception("purchase of subscription %s not placed on a contract", subscription_id)
    db_session.flush()
    return placed


def _place(
    db_session: Session, partner_id: int, subscription_id: int, applied_on: date, by: str
) -> bool:
    subscription = db_session.get_one(Subscription, subscription_id)
    customer = db_session.get_one(Customer, subscription.customer_id)
    contract = default_contract(
        db_session, customer, subscription.currency, starts_on=applied_on, by=by
    )
    if contract.anchor_on > applied_on:
        return False  # its periods start after the purchase: staff place it
    # only if still on no contract (a staff move at the same time wins), and only on a contract
    # still active (its row lock: a deactivation waits for this, or this sees it)
    if not db_session.scalar(
        select(BillingContract.active)
        .where(BillingContract.id == contract.id)
        .with_for_update(read=True)
        .execution_options(unscoped=True, populate_existing=True)
    ):
        return False
    taken = db_session.execute(
        update(Subscription)
        .where(
            or_(Subscription.id == subscription.id, Subscription.parent_id == subscription.id),
            Subscription.billing_contract_id.is_(None),
        )
        .values(billing_contract_id=contract.id)
        .execution_options(synchronize_session="fetch", unscoped=True)
    )
    if not cast(CursorResult[Any], taken).rowcount:
        return False
    audit.record(
        db_session,
        partner_id=partner_id,
        customer_id=customer.id,
        actor=by,
        action="billing.purchase_placed",
        subscription=subscription.id,
        contract=contract.id,
    )
    return True


def put_on_contract(
    db_session: Session, subscription: Subscription, contract: BillingContract
) -> None:
    """The subscription and its bundle's parts are invoiced on ``contract`` from now on."""
    subscription.billing_contract_id = contract.id
    for child in subscription.children:
        child.billing_contract_id = contract.id


# -- checks ---------------------------------------------------------------------------------------


def checked_currency(currency: str) -> str:
    """An ISO 4217 code, upper case; refused with a message naming ``currency`` otherwise."""
    currency = (currency or "").strip().upper()
    try:
        exponent(currency)
    except ValueError:
        raise ServiceError(
            _("%(currency)s is not a currency code like USD or EUR.", currency=currency),
            "currency",
        ) from None
    return currency


def checked_terms_days(days: object) -> int:
    """Payment terms: a whole number of days from 0 to :data:`MAX_TERMS_DAYS`, or refused."""
    if isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= MAX_TERMS_DAYS:
        raise ServiceError(
            _("Payment terms are a number of days from 0 to %(max)d.", max=MAX_TERMS_DAYS),
            "payment_terms_days",
        )
    return days


def _checked(
    db_session: Session, customer: Customer, terms: ContractTermsInput, *, contract_id: int | None
) -> _Checked:
    name = (terms.name or "").strip()
    if not name or len(name) > 200:
        raise ServiceError(_("Give the contract a name of at most 200 characters."), "name")
    try:
        frequency = ContractFrequency(terms.frequency)
    except ValueError:
        raise ServiceError(_("Invoice monthly, quarterly or annually."), "frequency") from None
    given = terms.payment_terms_days
    days = checked_terms_days(customer.payment_terms_days if given is None else given)
    rates = {}
    for field, rate in (
        ("discount", terms.discount),
        ("prepaid_discount", terms.prepaid_discount),
        ("tax_rate", terms.tax_rate),
    ):
        try:
            rates[field] = rate_to_ppm(Decimal(rate))
        except (TypeError, ValueError, InvalidOperation):
            raise ServiceError(
                _("Rates are percentages from 0 to 100, with at most four decimals."), field
            ) from None
    taken = select(BillingContract.id).where(
        BillingContract.customer_id == customer.id, BillingContract.name == name
    )
    if contract_id is not None:
        taken = taken.where(BillingContract.id != contract_id)
    if db_session.scalar(taken.execution_options(unscoped=True)) is not None:
        raise ServiceError(_("This customer already has a contract with that name."), "name")
    return _Checked(
        name=name,
        frequency=frequency,
        anchor_on=terms.anchor_on,
        payment_terms_days=days,
        discount_ppm=rates["discount"],
        prepaid_discount_ppm=rates["prepaid_discount"],
        tax_rate_ppm=rates["tax_rate"],
        autocharge=bool(terms.autocharge),
    )


def _clear_default(db_session: Session, customer_id: int, currency: str) -> None:
    db_session.execute(
        update(BillingContract)
        .where(
            BillingContract.customer_id == customer_id,
            BillingContract.currency == currency,
            BillingContract.is_default.is_(True),
        )
        .values(is_default=False)
        .execution_options(synchronize_session="fetch", unscoped=True)
    )
    db_session.flush()


def _free_name(db_session: Session, customer_id: int, currency: str) -> str:
    """``Default (USD)``, or ``Default (USD) 2`` … when a contract already has the name."""
    base = f"Default ({currency})"
    taken = set(
        db_session.scalars(
            select(BillingContract.name)
            .where(
                BillingContract.customer_id == customer_id,
                BillingContract.name.like(f"{base}%"),
            )
            .execution_options(unscoped=True)
        )
    )
    name, number = base, 1
    while name in taken:
        number += 1
        name = f"{base} {number}"
    return name


def _has_invoices(db_session: Session, contract_id: int) -> bool:
    return (
        db_session.scalar(
            select(Invoice.id).where(Invoice.billing_contract_id == contract_id).limit(1)
        )
        is not None
    )


def _summary(contract: BillingContract) -> dict[str, str]:
    return {
        "name": contract.name,
        "frequency": ContractFrequency(contract.frequency).value,
        "anchor_on": contract.anchor_on.isoformat(),
        "payment_terms_days": str(contract.payment_terms_days),
        "discount_ppm": str(contract.discount_ppm),
        "prepaid_discount_ppm": str(contract.prepaid_discount_ppm),
        "tax_rate_ppm": str(contract.tax_rate_ppm),
        "autocharge": str(contract.autocharge),
    }
