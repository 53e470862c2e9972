"""Seeding for the billing tests: a partner's product, a contract, subscriptions bought on a
day, and the licence changes the provider applied on given days."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from flask import Flask
from sqlalchemy import func, select

from portal.core.db import get_database
from portal.features.billing.models import BillingContract, rate_to_ppm
from portal.features.billing.rules.invoicing import ContractFrequency
from portal.features.catalogue.models import Product, ProductPrice
from portal.features.catalogue.rules import (
    BillingFrequency,
    ProductClass,
    ReductionBehaviour,
    SubscriptionType,
    Term,
)
from portal.features.licences.models import LicenceChange, Subscription, SubscriptionStatus
from portal.features.licences.rules import ChangeKind, ChangeState
from portal.features.tenancy.models import Partner

PRICE = 1_000  # 10.00 a seat a month


def at_noon(day: date, zone: str = "UTC") -> datetime:
    """Noon of a day in a time zone, as the aware UTC moment a change is stored with."""
    return datetime.combine(day, time(12), tzinfo=ZoneInfo(zone)).astimezone(UTC)


def set_timezone(app: Flask, partner_id: int, zone: str) -> None:
    with app.app_context(), get_database(app).sessions() as s:
        s.get_one(Partner, partner_id).timezone = zone
        s.commit()


def make_product(
    app: Flask,
    partner_id: int,
    *,
    name: str = "Microsoft 365 Business Standard",
    price_minor: int = PRICE,
    currency: str = "USD",
    frequency: BillingFrequency = BillingFrequency.MONTHLY,
    reduction: ReductionBehaviour = ReductionBehaviour.WITHIN_WINDOW,
    components: tuple[str, ...] = (),
) -> int:
    with app.app_context(), get_database(app).sessions() as s:

        def product(product_name: str, priced: bool) -> Product:
            return Product(
                partner_id=partner_id,
                name=product_name,
                description="",
                product_class=ProductClass.RESALE,
                subscription_type=SubscriptionType.LICENCE,
                provider_offer_id=f"OFFER-{uuid.uuid4().hex[:8]}",
                term=Term.P1Y,
                billing_frequency=frequency,
                min_quantity=1,
                max_quantity=10_000,
                reduction=reduction,
                window_hours=168,
                requires_mca=False,
                active=True,
                prices=[
                    ProductPrice(
                        partner_id=partner_id,
                        currency=currency,
                        price_minor=price_minor,
                        cost_minor=price_minor * 8 // 10,
                    )
                ]
                if priced
                else [],
            )

        parent = product(name, True)
        parent.components = [product(part, False) for part in components]
        s.add(parent)
        s.commit()
        return parent.id


def make_contract(
    app: Flask,
    customer_id: int,
    *,
    anchor_on: date,
    frequency: ContractFrequency = ContractFrequency.MONTHLY,
    currency: str = "USD",
    terms_days: int = 30,
    discount: str = "0",
    prepaid_discount: str = "0",
    tax_rate: str = "0",
    name: str | None = None,
) -> int:
    with app.app_context(), get_database(app).sessions() as s:
        from portal.features.tenancy.models import Customer

        customer = s.get_one(Customer, customer_id)
        count = s.scalar(
            select(func.count(BillingContract.id)).where(BillingContract.customer_id == customer_id)
        )
        contract = BillingContract(
            partner_id=customer.partner_id,
            customer_id=customer_id,
            name=name or f"Contract {count + 1}",
            currency=currency,
            frequency=frequency,
            anchor_on=anchor_on,
            payment_terms_days=terms_days,
            discount_ppm=rate_to_ppm(Decimal(discount)),
            prepaid_discount_ppm=rate_to_ppm(Decimal(prepaid_discount)),
            tax_rate_ppm=rate_to_ppm(Decimal(tax_rate)),
            active=True,
        )
        s.add(contract)
        s.commit()
        return contract.id


@dataclass(frozen=True)
class Bought:
    subscription_id: int
    contract_id: int


def buy(
    app: Flask,
    contract_id: int,
    product_id: int,
    *,
    seats: int,
    on: date,
    zone: str = "UTC",
    status: SubscriptionStatus = SubscriptionStatus.ACTIVE,
) -> int:
    """A subscription of the contract's customer bought (and provisioned) at noon on ``on``;
    its purchase is in the change log. Bundles get their parts."""
    bought = at_noon(on, zone)
    with app.app_context(), get_database(app).sessions() as s:
        contract = s.get_one(BillingContract, contract_id)
        product = s.get_one(Product, product_id)

        def subscription(of: Product) -> Subscription:
            return Subscription(
                partner_id=contract.partner_id,
                customer_id=contract.customer_id,
                product_id=of.id,
                provider_key="demo",
                provider_ref=f"sub-{uuid.uuid4()}",
                status=status,
                quantity=seats,
                term=of.term,
                billing_frequency=of.billing_frequency,
                currency=contract.currency,
                term_started_at=bought,
                term_ends_on=on + timedelta(days=364),
                auto_renew=True,
                billing_contract_id=contract_id,
                version=0,
                created_at=bought,
            )

        parent = subscription(product)
        parent.children = [subscription(part) for part in product.components]
        s.add(parent)
        s.flush()
        purchase = _change(parent, 1, ChangeKind.PURCHASE, 0, seats, bought)
        price = s.scalar(
            select(ProductPrice.price_minor).where(
                ProductPrice.product_id == product_id, ProductPrice.currency == contract.currency
            )
        )
        purchase.amount_minor = (price or 0) * seats  # the first period, as shown when bought
        s.add(purchase)
        s.commit()
        return parent.id


def change(
    app: Flask,
    subscription_id: int,
    to: int,
    *,
    on: date,
    zone: str = "UTC",
    at: datetime | None = None,
    state: ChangeState = ChangeState.PROVISIONED,
) -> int:
    """The provider applied a quantity change at noon on ``on`` (or at ``at``)."""
    effective = at or at_noon(on, zone)
    with app.app_context(), get_database(app).sessions() as s:
        subscription = s.get_one(Subscription, subscription_id)
        sequence = (
            s.scalar(
                select(func.max(LicenceChange.sequence)).where(
                    LicenceChange.subscription_id == subscription_id
                )
            )
            or 0
        ) + 1
        record = _change(
            subscription, sequence, ChangeKind.QUANTITY, subscription.quantity, to, effective
        )
        record.state = state
        s.add(record)
        if state is ChangeState.PROVISIONED:
            for part in (subscription, *subscription.children):
                part.quantity = to
        s.commit()
        return record.id


def _change(
    subscription: Subscription,
    sequence: int,
    kind: ChangeKind,
    quantity_from: int,
    quantity_to: int,
    at: datetime,
) -> LicenceChange:
    return LicenceChange(
        partner_id=subscription.partner_id,
        customer_id=subscription.customer_id,
        subscription_id=subscription.id,
        sequence=sequence,
        request_id=str(uuid.uuid4()),
        kind=kind,
        state=ChangeState.PROVISIONED,
        quantity_from=quantity_from,
        quantity_to=quantity_to,
        amount_minor=0,
        currency=subscription.currency,
        requested_by="seed",
        requested_at=at - timedelta(minutes=5),
        attempts=1,
        effective_at=at,
        finished_at=at,
    )
