"""Bringing in subscriptions a customer already has at the provider (bought before the portal,
or elsewhere): what the provider lists now, matched to the catalogue by offer id, and the
subscription rows made from it.

An imported subscription starts from what the provider says (quantity, status, term, dates,
auto-renew); its change log starts with one entry, "Imported with N seats", state
``not_applicable`` (it came from the provider's side) and no quantity change, so billing
counts its seats from the start of the next period it is invoiced for, never as an addition.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from enum import StrEnum
from typing import TypeVar
from zoneinfo import ZoneInfo

from dateutil.relativedelta import relativedelta
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from portal.core.db import utcnow
from portal.core.errors import ServiceError, _
from portal.features.catalogue.models import Product
from portal.features.catalogue.rules import BillingFrequency, Term
from portal.features.identity import audit
from portal.features.licences.models import LicenceChange, Subscription, SubscriptionStatus
from portal.features.licences.rules import ChangeKind, ChangeState
from portal.features.tenancy.models import Customer, Partner
from portal.integrations.providers import ProviderAdapter, ProviderSubscription
from portal.integrations.registry import integrations
from portal.integrations.results import Succeeded

E = TypeVar("E", bound=StrEnum)
IMPORTABLE_STATUSES = {
    "active": SubscriptionStatus.ACTIVE,
    "suspended": SubscriptionStatus.SUSPENDED,
}


class Match(StrEnum):
    """What can be done with one of the provider's subscriptions."""

    NEW = "new"  # a catalogue product sells it: it can be imported
    IMPORTED = "imported"  # the portal has it already
    UNKNOWN_OFFER = "unknown_offer"  # no product of the catalogue has its offer id
    NO_PRICE = "no_price"  # the product has no price in the customer's currency
    NOT_ACTIVE = "not_active"  # cancelled, expired … at the provider: nothing to bill


@dataclass(frozen=True)
class Listed:
    """One of the customer's subscriptions at the provider, and what the portal makes of it."""

    subscription: ProviderSubscription
    match: Match
    product: Product | None


def provider_of(partner: Partner, customer: Customer) -> ProviderAdapter:
    """The adapter the customer's subscriptions are at (the customer's, else the partner's,
    else the deployment's)."""
    return integrations().provider(customer.provider_key, partner.provider_key)


def listed_at_provider(db_session: Session, partner: Partner, customer: Customer) -> list[Listed]:
    """What the provider holds for the customer now, each with its match in the portal.
    A customer with no Microsoft tenant id, or a provider that cannot answer, is refused
    with the reason."""
    if not customer.ms_tenant_id:
        raise ServiceError(
            _("Add the customer's Microsoft tenant id first: the provider knows it by that id.")
        )
    adapter = provider_of(partner, customer)
    answer = adapter.list_subscriptions(customer.ms_tenant_id)
    if not isinstance(answer, Succeeded):
        raise ServiceError(
            _(
                "%(provider)s could not list the customer's subscriptions: %(reason)s",
                provider=adapter.display_name,
                reason=getattr(answer, "reason", "") or _("no answer"),
            )
        )
    known = set(
        db_session.scalars(
            select(Subscription.provider_ref).where(
                Subscription.customer_id == customer.id,
                Subscription.provider_ref.is_not(None),
            )
        )
    )
    return [
        _listed(db_session, customer, adapter.key, found, known)
        for found in sorted(answer.value, key=lambda s: (s.name or s.offer_id, s.subscription_ref))
    ]


def import_listed(
    db_session: Session,
    partner: Partner,
    customer: Customer,
    refs: Sequence[str],
    by: str,
) -> list[Subscription]:
    """Make a subscription of each of ``refs`` the provider lists now and the catalogue sells
    (read again now: the truth is what the provider has); one already imported is skipped, one
    that cannot be imported is refused with its reason and nothing is made. The caller puts
    them on a contract and commits. Audited."""
    wanted = set(refs)
    if not wanted:
        raise ServiceError(_("Choose at least one subscription to import."))
    listed = {
        row.subscription.subscription_ref: row
        for row in listed_at_provider(db_session, partner, customer)
    }
    missing = wanted - set(listed)
    if missing:
        raise ServiceError(
            _("The provider no longer lists some of the chosen subscriptions: list them again.")
        )
    refused = [
        listed[ref]
        for ref in sorted(wanted)
        if listed[ref].match not in (Match.NEW, Match.IMPORTED)
    ]
    if refused:
        raise ServiceError(
            _(
                "%(offer)s cannot be imported: %(reason)s",
                offer=refused[0].subscription.name or refused[0].subscription.offer_id,
                reason=match_reason(refused[0].match),
            )
        )
    provider_key = provider_of(partner, customer).key
    zone = ZoneInfo(partner.timezone or "UTC")
    now = utcnow()
    made = []
    for ref in sorted(wanted):
        row = listed[ref]
        if row.match is Match.IMPORTED:
            continue
        assert row.product is not None
        made.append(_import_one(db_session, customer, row, provider_key, zone, now, by))
    db_session.flush()
    for subscription in made:
        audit.record(
            db_session,
            partner_id=customer.partner_id,
            customer_id=customer.id,
            actor=by,
            action="licences.subscription_imported",
            subscription=subscription.id,
            provider_ref=subscription.provider_ref,
            product=subscription.product_id,
            quantity=subscription.quantity,
        )
    return made


def match_reason(match: Match) -> str:
    """Why a listed subscription cannot be imported, in the current language ("" when it can)."""
    reasons = {
        Match.UNKNOWN_OFFER: _("no product of the catalogue has its offer id."),
        Match.NO_PRICE: _("its product has no price in the customer's currency."),
        Match.NOT_ACTIVE: _("it is not active at the provider."),
        Match.IMPORTED: _("it is imported already."),
    }
    return reasons.get(match, "")


def _listed(
    db_session: Session,
    customer: Customer,
    provider_key: str,
    found: ProviderSubscription,
    known: set[str | None],
) -> Listed:
    product = _product_for(db_session, provider_key, found)
    if found.subscription_ref in known:
        return Listed(found, Match.IMPORTED, product)
    if found.status not in IMPORTABLE_STATUSES:
        return Listed(found, Match.NOT_ACTIVE, product)
    if product is None:
        return Listed(found, Match.UNKNOWN_OFFER, None)
    if not any(price.currency == customer.default_currency for price in product.prices):
        return Listed(found, Match.NO_PRICE, product)
    return Listed(found, Match.NEW, product)


def _product_for(
    db_session: Session, provider_key: str, found: ProviderSubscription
) -> Product | None:
    """The active catalogue product selling the offer at this provider: of several (one offer
    sold monthly and yearly), the one whose term and billing match the provider's."""
    candidates = list(
        db_session.scalars(
            select(Product)
            .where(
                Product.provider_offer_id == found.offer_id,
                Product.active.is_(True),
                (Product.provider_key == provider_key) | Product.provider_key.is_(None),
            )
            .order_by(Product.id)
        )
    )
    candidates = [p for p in candidates if not p.components]
    if not candidates:
        return None

    def fit(product: Product) -> tuple[bool, bool, bool]:
        return (
            product.provider_key == provider_key,
            found.term is not None and product.term.value == found.term,
            found.billing_frequency is not None
            and product.billing_frequency.value == found.billing_frequency,
        )

    return max(candidates, key=lambda p: (fit(p)[1] and fit(p)[2], fit(p)[1], fit(p)[2], fit(p)[0]))


def _import_one(
    db_session: Session,
    customer: Customer,
    row: Listed,
    provider_key: str,
    zone: ZoneInfo,
    now: datetime,
    by: str,
) -> Subscription:
    found, product = row.subscription, row.product
    assert product is not None
    term = _enum(Term, found.term) or product.term
    frequency = _enum(BillingFrequency, found.billing_frequency) or product.billing_frequency
    started_on = found.term_started_on or now.astimezone(zone).date()
    ends_on = found.term_ends_on or (
        started_on + relativedelta(months=term.months) - timedelta(days=1)
    )
    subscription = Subscription(
        partner_id=customer.partner_id,
        customer_id=customer.id,
        product_id=product.id,
        product=product,
        provider_key=provider_key,
        provider_ref=found.subscription_ref,
        status=IMPORTABLE_STATUSES[found.status],
        quantity=found.quantity,
        term=term,
        billing_frequency=frequency,
        currency=customer.default_currency,
        term_started_at=datetime.combine(started_on, time(), tzinfo=zone).astimezone(
            ZoneInfo("UTC")
        ),
        term_ends_on=ends_on,
        auto_renew=True if found.auto_renew is None else found.auto_renew,
        version=0,
        created_at=now,
    )
    try:
        # the provider's reference is one subscription's only: a second import at the same time
        # (another tab, another staff member) waits for the first and is refused here
        with db_session.begin_nested():
            db_session.add(subscription)
            db_session.flush()
    except IntegrityError:
        raise ServiceError(
            _(
                "%(name)s was imported meanwhile: list them again.",
                name=found.name or found.offer_id,
            )
        ) from None
    db_session.add(
        LicenceChange(
            partner_id=customer.partner_id,
            customer_id=customer.id,
            subscription_id=subscription.id,
            sequence=1,
            request_id=str(uuid.uuid4()),
            kind=ChangeKind.IMPORT,
            state=ChangeState.NOT_APPLICABLE,
            quantity_from=found.quantity,
            quantity_to=found.quantity,
            amount_minor=0,
            currency=subscription.currency,
            requested_by=by,
            requested_at=now,
            effective_at=now,
            finished_at=now,
            notified_at=now,  # nobody is told: nothing changed
        )
    )
    return subscription


def _enum(kind: type[E], value: str | None) -> E | None:
    try:
        return kind(value) if value else None
    except ValueError:
        return None
