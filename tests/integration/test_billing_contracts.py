"""Billing contracts and settings: every bad value refused with its reason and nothing saved;
subscriptions put on a contract only when they can be billed by it; the review switch."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from portal.core.db import get_database
from portal.core.errors import ServiceError
from portal.features.billing.models import BillingContract, BillingSettings
from portal.features.billing.rules.invoicing import ContractFrequency
from portal.features.billing.services import contracts as billing
from portal.features.billing.services import documents as billing_documents
from portal.features.billing.services import moves
from portal.features.identity.models import AuditEvent
from portal.features.licences.models import Subscription
from portal.features.tenancy.models import Customer, Partner
from tests.integration.billing_support import buy, make_contract, make_product
from tests.support import Tenant

GOOD: dict[str, Any] = {
    "name": "Microsoft 365",
    "currency": "usd",
    "frequency": "quarterly",
    "anchor_on": date(2026, 1, 31),
    "by": "finance@staff",
}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": "  "}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"currency": "EURO"}, "currency"),
        ({"currency": "XYZ"}, "currency"),
        ({"frequency": "weekly"}, "frequency"),
        ({"payment_terms_days": -1}, "payment_terms_days"),
        ({"payment_terms_days": 366}, "payment_terms_days"),
        ({"discount": Decimal("1.5")}, "discount"),
        ({"discount": Decimal("-0.1")}, "discount"),
        ({"tax_rate": Decimal("0.12345678")}, "tax_rate"),
        ({"prepaid_discount": "a lot"}, "prepaid_discount"),
    ],
)
def test_a_contract_with_a_bad_value_is_refused_and_nothing_saved(
    app: Flask, tenant: Tenant, change: dict[str, Any], field: str
) -> None:
    with app.app_context(), get_database(app).sessions() as s:
        customer = s.get_one(Customer, tenant.customers["a"].id)
        with pytest.raises(ServiceError) as refused:
            billing.create_contract(s, customer, **{**GOOD, **change})
        assert refused.value.field == field
        s.rollback()
        assert s.scalar(select(func.count(BillingContract.id))) == 0


def test_a_contract_is_created_with_exact_rates_and_audited(app: Flask, tenant: Tenant) -> None:
    with app.app_context(), get_database(app).sessions() as s:
        customer = s.get_one(Customer, tenant.customers["a"].id)
        contract = billing.create_contract(
            s, customer, **GOOD, discount=Decimal("0.05"), tax_rate=Decimal("0.08875")
        )
        s.commit()
        assert (contract.currency, contract.frequency, contract.payment_terms_days) == (
            "USD",
            ContractFrequency.QUARTERLY,
            customer.payment_terms_days,
        )
        assert (contract.discount, contract.tax_rate, contract.tax_rate_ppm) == (
            Decimal("0.05"),
            Decimal("0.08875"),
            88_750,
        )
        with pytest.raises(ServiceError, match="already has a contract"):
            billing.create_contract(s, customer, **GOOD)
        event = s.scalars(
            select(AuditEvent).where(AuditEvent.action == "billing.contract_created")
        ).one()
        assert (event.actor, event.detail["frequency"]) == ("finance@staff", "quarterly")


def test_only_the_customers_own_parent_subscriptions_in_its_currency_go_on_a_contract(
    app: Flask, tenant: Tenant
) -> None:
    bundle = make_product(app, tenant.partner.id, name="Bundle", components=("Part",))
    euro = make_product(app, tenant.partner.id, name="Euro", currency="EUR")
    contract = make_contract(app, tenant.customers["a"].id, anchor_on=date(2026, 1, 1))
    other = make_contract(app, tenant.customers["b"].id, anchor_on=date(2026, 1, 1))
    euro_contract = make_contract(
        app, tenant.customers["a"].id, anchor_on=date(2026, 1, 1), currency="EUR"
    )
    mine = buy(app, euro_contract, bundle, seats=1, on=date(2025, 12, 1))  # USD-priced: EUR
    theirs = buy(app, other, bundle, seats=1, on=date(2025, 12, 1))
    in_euro = buy(app, euro_contract, euro, seats=1, on=date(2025, 12, 1))
    with app.app_context(), get_database(app).sessions() as s:
        target = s.get_one(BillingContract, contract)
        part = s.scalars(select(Subscription.id).where(Subscription.parent_id == mine)).one()
        for ids, message in (
            ([theirs], "this customer"),
            ([part], "bundle"),
            ([in_euro], "EUR"),
        ):
            with pytest.raises(ServiceError, match=message):
                moves.assign_subscriptions(s, target, ids, "staff")
            s.rollback()
        usd = s.get_one(Subscription, mine)
        usd.currency = "USD"
        for child in usd.children:
            child.currency = "USD"
        s.commit()
        moves.assign_subscriptions(s, s.get_one(BillingContract, contract), [mine], "staff")
        s.commit()
        moved = s.get_one(Subscription, mine)
        assert moved.billing_contract_id == contract
        assert [child.billing_contract_id for child in moved.children] == [contract]


def test_the_review_switch_defaults_on_and_is_audited(app: Flask, tenant: Tenant) -> None:
    with app.app_context(), get_database(app).sessions() as s:
        partner = s.get_one(Partner, tenant.partner.id)
        assert billing_documents.billing_settings(s, partner.id).invoice_review is True
        assert s.scalar(select(func.count(BillingSettings.id))) == 0
        billing_documents.set_invoice_review(s, partner, False, "admin@staff")
        s.commit()
        assert billing_documents.billing_settings(s, partner.id).invoice_review is False
        billing_documents.set_invoice_review(
            s, partner, False, "admin@staff"
        )  # no change, no record
        s.commit()
        events = list(
            s.scalars(select(AuditEvent).where(AuditEvent.action == "billing.review_changed"))
        )
        assert [(e.actor, e.detail["review"]) for e in events] == [("admin@staff", False)]
