"""The staff pages of a customer's billing contracts: create, edit, the default, deactivate,
move subscriptions. Subscriptions and invoices come from purchases the (demo) provider applied
and the worker's handlers billed; nothing is inserted."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
import sqlalchemy as sa
import time_machine
from flask import Flask

from portal.core.db import get_database
from portal.features.billing.models import BillingContract, Invoice
from portal.features.identity.models import AuditEvent
from portal.features.licences.models import Subscription
from tests.integration.billing_support import make_product, set_timezone
from tests.integration.test_purchase_billing import _at, buy
from tests.integration.test_purchase_billing import app as app
from tests.support import HttpsClient, Tenant, post_form, sign_in

ES = {"Accept-Language": "es"}
TODAY = date(2027, 1, 10)
GOOD = {
    "name": "Main",
    "currency": "USD",
    "frequency": "monthly",
    "anchor_on": "2027-01-01",
    "payment_terms_days": "30",
    "discount": "5",
    "prepaid_discount": "",
    "tax_rate": "20",
    "autocharge": "y",
}


@pytest.fixture
def utc(app: Flask, tenant: Tenant) -> Tenant:
    set_timezone(app, tenant.partner.id, "UTC")
    return tenant


@pytest.fixture(autouse=True)
def today() -> Any:
    with time_machine.travel(_at(TODAY, 12), tick=False):
        yield


def _finance(app: Flask) -> HttpsClient:
    client: HttpsClient = app.test_client()  # type: ignore[assignment]
    sign_in(client, "finance@staff.alpha.example", staff=True)
    return client


def _app_session(app: Flask) -> Any:
    with app.app_context():
        return get_database(app).sessions()


def _contracts(app: Flask) -> list[BillingContract]:
    with app.app_context(), get_database(app).sessions() as s:
        return list(s.scalars(sa.select(BillingContract).order_by(BillingContract.id)))


def _create(client: HttpsClient, customer_id: int, **change: str) -> Any:
    return post_form(
        client,
        f"/staff/customers/{customer_id}/contracts",
        {**GOOD, **change},
        follow_redirects=True,
    )


def test_finance_create_a_contract_and_it_is_the_default(app: Flask, utc: Tenant) -> None:
    client = _finance(app)
    customer = utc.customers["a"].id
    empty = client.get(f"/staff/customers/{customer}/contracts").get_data(as_text=True)
    assert "No contract yet" in empty
    page = _create(client, customer).get_data(as_text=True)
    assert "Contract Main created." in page and "Default contract" in page
    assert "Invoices in USD, monthly, from Jan 1, 2027." in page
    (made,) = _contracts(app)
    assert (made.discount_ppm, made.tax_rate_ppm, made.prepaid_discount_ppm) == (50_000, 200_000, 0)
    assert (made.autocharge, made.is_default, made.anchor_on) == (True, True, date(2027, 1, 1))
    listing = client.get(f"/staff/customers/{customer}/contracts").get_data(as_text=True)
    assert "Main" in listing and "1 contract" in listing


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": ""}, "Give the contract a name of at most 200 characters."),
        ({"currency": "XX"}, "XX is not a currency code like USD or EUR."),
        ({"frequency": "weekly"}, "Not a valid choice"),
        ({"anchor_on": "next monday"}, "Not a valid date value."),
        ({"payment_terms_days": "-3"}, "Payment terms are a number of days from 0 to 365."),
        ({"discount": "lots"}, "Rates are percentages from 0 to 100, with at most four decimals."),
        ({"discount": "101"}, "Rates are percentages from 0 to 100, with at most four decimals."),
        ({"tax_rate": "8.123456"}, "Rates are percentages from 0 to 100, with at most four"),
        ({"tax_rate": "sNaN"}, "Rates are percentages from 0 to 100, with at most four"),
        ({"discount": "1e999999999"}, "Rates are percentages from 0 to 100, with at most"),
        ({"anchor_on": "9999-12-31"}, "Give a first day between 2000 and 2099."),
    ],
)
def test_a_bad_contract_is_refused_and_nothing_is_made(
    app: Flask, utc: Tenant, change: dict[str, str], message: str
) -> None:
    client = _finance(app)
    customer = utc.customers["a"].id
    response = post_form(client, f"/staff/customers/{customer}/contracts", {**GOOD, **change})
    assert response.status_code == 422
    assert message in response.get_data(as_text=True)
    assert _contracts(app) == []


def test_edit_a_contract_and_its_schedule_stays_once_it_has_invoices(
    app: Flask, utc: Tenant
) -> None:
    client = _finance(app)
    customer = utc.customers["a"].id
    _create(client, customer)
    (main,) = _contracts(app)
    url = f"/staff/contracts/{main.id}"
    saved = post_form(
        client,
        url,
        {**GOOD, "name": "Main 2027", "payment_terms_days": "14"},
        follow_redirects=True,
    ).get_data(as_text=True)
    assert "Contract Main 2027 saved." in saved
    product = make_product(app, utc.partner.id)
    buy(app, utc, product, 2, TODAY)  # lands on the default contract, invoiced at once
    refused = post_form(client, url, {**GOOD, "name": "Main 2027", "anchor_on": "2027-01-15"})
    assert refused.status_code == 422
    assert "This contract has invoices: its first day" in refused.get_data(as_text=True)
    (after,) = _contracts(app)
    assert (after.name, after.payment_terms_days, after.anchor_on) == (
        "Main 2027",
        14,
        date(2027, 1, 1),
    )
    with app.app_context(), get_database(app).sessions() as s:
        event = s.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == "billing.contract_updated")
        ).one()
        assert event.detail["name"] == "Main → Main 2027"


def test_the_default_moves_and_only_an_empty_contract_is_deactivated(
    app: Flask, utc: Tenant
) -> None:
    client = _finance(app)
    customer = utc.customers["a"].id
    _create(client, customer)
    _create(client, customer, name="Projects")
    main, projects = _contracts(app)
    assert (main.is_default, projects.is_default) == (True, False)
    refused = post_form(
        client, f"/staff/contracts/{main.id}/deactivate", {}, page=f"/staff/contracts/{main.id}"
    )
    assert refused.status_code == 422
    assert "This is the default contract" in refused.get_data(as_text=True)
    buy(app, utc, make_product(app, utc.partner.id), 1, TODAY)  # on Main, the default
    moved = post_form(
        client,
        f"/staff/contracts/{projects.id}/default",
        {},
        follow_redirects=True,
        page=f"/staff/contracts/{projects.id}",
    ).get_data(as_text=True)
    assert "Projects is the default contract now: purchases in USD land on it." in moved
    carrying = post_form(
        client, f"/staff/contracts/{main.id}/deactivate", {}, page=f"/staff/contracts/{main.id}"
    )
    assert carrying.status_code == 422
    assert "Subscriptions are still on this contract: move them" in carrying.get_data(as_text=True)
    assert all(c.active for c in _contracts(app))
    with _app_session(app) as s:
        (sub,) = s.scalars(sa.select(Subscription.id)).all()
    post_form(
        client,
        f"/staff/contracts/{projects.id}/subscriptions",
        {"subscriptions": str(sub)},
        page=f"/staff/contracts/{projects.id}",
    )
    emptied = post_form(
        client,
        f"/staff/contracts/{main.id}/deactivate",
        {},
        page=f"/staff/contracts/{main.id}",
        follow_redirects=True,
    ).get_data(as_text=True)
    assert "Main is inactive: it makes no more invoices." in emptied and "Inactive" in emptied
    assert [c.active for c in _contracts(app)] == [False, True]


def test_subscriptions_move_between_contracts_of_the_same_period_only(
    app: Flask, utc: Tenant
) -> None:
    client = _finance(app)
    customer = utc.customers["a"].id
    _create(client, customer)
    _create(client, customer, name="Same period")
    _create(client, customer, name="Mid-month", anchor_on="2027-01-15")
    main, same, mid = _contracts(app)
    sub = buy(app, utc, make_product(app, utc.partner.id), 2, TODAY)  # invoiced on Main
    refused = post_form(
        client,
        f"/staff/contracts/{mid.id}/subscriptions",
        {"subscriptions": str(sub)},
        page=f"/staff/contracts/{mid.id}",
    )
    assert refused.status_code == 422
    assert "moving it now would bill some days twice" in refused.get_data(as_text=True)
    done = post_form(
        client,
        f"/staff/contracts/{same.id}/subscriptions",
        {"subscriptions": str(sub)},
        page=f"/staff/contracts/{same.id}",
        follow_redirects=True,
    ).get_data(as_text=True)
    assert "The subscriptions are on Same period now." in done
    with app.app_context(), get_database(app).sessions() as s:
        assert s.get_one(Subscription, sub).billing_contract_id == same.id
        assert s.scalar(sa.select(sa.func.count()).select_from(Invoice)) == 1  # nothing re-billed
    nothing = post_form(
        client,
        f"/staff/contracts/{main.id}/subscriptions",
        {},
        page=f"/staff/contracts/{main.id}",
    )
    assert nothing.status_code == 422
    assert "Choose at least one subscription to move." in nothing.get_data(as_text=True)


@pytest.mark.parametrize("role", ["service", "sales"])
def test_only_finance_and_administrators_change_contracts(
    app: Flask, utc: Tenant, role: str
) -> None:
    client: HttpsClient = app.test_client()  # type: ignore[assignment]
    sign_in(client, f"{role}@staff.alpha.example", staff=True)
    customer = utc.customers["a"].id
    assert client.get(f"/staff/customers/{customer}/contracts").status_code == 403
    token_page = client.get("/staff/").get_data(as_text=True)
    assert "Billing contracts" not in token_page
    assert (
        post_form(
            client, f"/staff/customers/{customer}/contracts", GOOD, page="/staff/"
        ).status_code
        == 403
    )
    assert _contracts(app) == []


def test_the_contract_pages_speak_spanish(app: Flask, utc: Tenant) -> None:
    client = _finance(app)
    customer = utc.customers["a"].id
    page = client.get(f"/staff/customers/{customer}/contracts", headers=ES).get_data(as_text=True)
    assert "Contratos de facturación" in page and "Nuevo contrato" in page
    _create(client, customer)
    (main,) = _contracts(app)
    detail = client.get(f"/staff/contracts/{main.id}", headers=ES).get_data(as_text=True)
    assert "Factura en USD con periodicidad mensual, desde" in detail
    assert "Contrato predeterminado" in detail
