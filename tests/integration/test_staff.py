"""The staff area: own sign-in and look, customers listed and searched, credit hold."""

from __future__ import annotations

from flask import Flask
from sqlalchemy import select

from portal.core.db import get_database
from portal.features.identity.models import AuditEvent
from portal.features.tenancy.models import Customer
from tests.support import HttpsClient, Tenant, post_form, sign_in


def _hold(client: HttpsClient, customer_id: int, on: bool, reason: str) -> str:
    data = {"reason": reason} | ({"on_hold": "y"} if on else {})
    response = post_form(
        client,
        f"/staff/customers/{customer_id}/credit-hold",
        data,
        page=f"/staff/customers/{customer_id}",
        follow_redirects=True,
    )
    return response.get_data(as_text=True)


def test_staff_sign_in_lands_on_customers(
    client: HttpsClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    assert client.get("/staff/").location.startswith("/staff/login")
    response = sign_in(client, "sales@staff.alpha.example", staff=True)
    assert response.location == "/staff/"
    page = client.get("/staff/").get_data(as_text=True)
    assert "alpha customer a" in page and "alpha customer b" in page
    assert "beta customer" not in page  # another partner's customers never show
    assert "2 customers" in page
    assert "brand.css" not in page  # the staff area is not partner-themed


def test_search_and_pagination(app: Flask, client: HttpsClient, tenant: Tenant) -> None:
    with app.app_context(), get_database(app).sessions() as s:
        for i in range(30):
            s.add(
                Customer(
                    partner_id=tenant.partner.id,
                    name=f"Zeta {i:02d} GmbH",
                    default_currency="EUR",
                    ms_tenant_id=f"00000000-0000-0000-0000-{i:012d}",
                )
            )
        s.commit()
    sign_in(client, "sales@staff.alpha.example", staff=True)
    found = client.get("/staff/?q=zeta 0").get_data(as_text=True)
    assert "10 customers" in found and "Zeta 09 GmbH" in found and "Zeta 10" not in found
    by_tenant = client.get("/staff/?q=000000000029").get_data(as_text=True)
    assert "Zeta 29 GmbH" in by_tenant and "1 customer" in by_tenant
    first = client.get("/staff/").get_data(as_text=True)
    assert "32 customers" in first and 'aria-current="page">1<' in first
    second = client.get("/staff/?page=2").get_data(as_text=True)
    assert "Zeta 29 GmbH" in second and "alpha customer a" not in second
    nothing = client.get("/staff/?q=no-such-company").get_data(as_text=True)
    assert "No customer matches “no-such-company”." in nothing


def test_credit_hold_on_and_off_is_audited_and_shown_to_the_customer(
    app: Flask, client: HttpsClient, tenant: Tenant
) -> None:
    customer_id = tenant.customers["a"].id
    sign_in(client, "finance@staff.alpha.example", staff=True)
    page = _hold(client, customer_id, True, "invoice 1042 is 60 days overdue")
    assert "alpha customer a is on credit hold." in page
    assert "credit.hold_on — invoice 1042 is 60 days overdue" in page

    customer: HttpsClient = app.test_client()  # type: ignore[assignment]
    sign_in(customer, "finance_manager@a.alpha.example")
    dashboard = customer.get("/").get_data(as_text=True)
    assert "Your account is on credit hold." in dashboard and "help@alpha.example" in dashboard
    other: HttpsClient = app.test_client()  # type: ignore[assignment]
    sign_in(other, "finance_manager@b.alpha.example")
    assert "credit hold" not in other.get("/").get_data(as_text=True)

    page = _hold(client, customer_id, False, "paid in full")
    assert "alpha customer a is no longer on credit hold." in page
    assert "Your account is on credit hold." not in customer.get("/").get_data(as_text=True)
    with app.app_context(), get_database(app).sessions() as s:
        events = list(
            s.scalars(
                select(AuditEvent).where(AuditEvent.action.like("credit.%")).order_by(AuditEvent.id)
            )
        )
    assert [(e.action, e.detail["reason"], e.actor) for e in events] == [
        (
            "credit.hold_on",
            "invoice 1042 is 60 days overdue",
            f"staff:{tenant.staff['finance'].id}",
        ),
        ("credit.hold_off", "paid in full", f"staff:{tenant.staff['finance'].id}"),
    ]


def test_credit_hold_needs_a_reason_and_changes_nothing_without(
    app: Flask, client: HttpsClient, tenant: Tenant
) -> None:
    customer_id = tenant.customers["a"].id
    sign_in(client, "admin@staff.alpha.example", staff=True)
    response = post_form(
        client,
        f"/staff/customers/{customer_id}/credit-hold",
        {"on_hold": "y", "reason": ""},
        page=f"/staff/customers/{customer_id}",
    )
    assert response.status_code == 422
    assert "Give a reason." in response.get_data(as_text=True)
    with app.app_context(), get_database(app).sessions() as s:
        assert s.get_one(Customer, customer_id).credit_hold is False


def test_unknown_customer_is_not_found(client: HttpsClient, tenant: Tenant) -> None:
    sign_in(client, "admin@staff.alpha.example", staff=True)
    assert client.get("/staff/customers/999999").status_code == 404


def test_staff_sign_out(client: HttpsClient, tenant: Tenant) -> None:
    sign_in(client, "admin@staff.alpha.example", staff=True)
    post_form(client, "/staff/logout", {}, page="/staff/")
    assert client.get("/staff/").location.startswith("/staff/login")
