"""Automatic credit hold, end to end from pages, the periodic job and the worker's handlers:
an invoice overdue past the grace period puts the account on hold (audited, customer and
finance team told), a change waits, the Finance Manager pays by card in the portal, the hold
lifts at once and the waiting change is provisioned. Invoices come from a purchase the demo
provider applied and billing invoiced; nothing is inserted."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime

import pytest
import sqlalchemy as sa
import time_machine
from flask import Flask

from portal.cli import migrate
from portal.core.db import get_database
from portal.features.billing.models import BillingSettings, Invoice
from portal.features.billing.services.holds import review_credit_holds
from portal.features.identity.models import AuditEvent
from portal.features.licences.models import LicenceChange, Subscription
from portal.features.licences.rules import ChangeState
from portal.features.licences.services import subscriptions as licences
from portal.features.tenancy.models import Customer, Partner
from portal.integrations.registry import integrations
from tests.conftest import Mailbox
from tests.integration.billing_support import make_product, set_timezone
from tests.integration.payments_support import (
    FINANCE,
    SUCCEEDS,
    back_to_portal,
    card_form,
    pay,
)
from tests.integration.test_purchase_billing import QUIET, buy, contract, drain
from tests.support import HttpsClient, Tenant, post_form, sign_in

ES = {"Accept-Language": "es"}
BOUGHT = date(2027, 1, 5)  # invoiced at once, due 30 days later: 4 February
LATE = datetime(2027, 2, 20, 12, tzinfo=UTC)  # 16 days overdue


@pytest.fixture
def app(payment_apps: Callable[..., Flask]) -> Flask:
    """The payment tests' own database (the demo gateway's tables are migrated there), with
    the demo provider's migrated too: never the shared one, whose other tests migrate without
    the demo gateway's branch."""
    app: Flask = payment_apps(
        PORTAL_PLUGINS="demo_provider,demo_payments",
        PORTAL_PROVIDER="demo",
        PORTAL_PAYMENT_GATEWAY="demo",
        PORTAL_PLUGIN_SETTINGS={"demo_provider": QUIET},
        PORTAL_BROKER_URL="memory://",
        PORTAL_TASK_QUEUE=f"test-{uuid.uuid4().hex[:10]}",
    )
    migrate(app.config["PORTAL_DATABASE_URL"], integrations(app).migration_locations)
    return app


@pytest.fixture
def overdue(app: Flask, tenant: Tenant) -> int:
    """Customer a bought 2 seats on 5 January 2027: its invoice, due 4 February, is unpaid."""
    set_timezone(app, tenant.partner.id, "UTC")
    contract(app, tenant, date(2027, 1, 1))
    sub = buy(app, tenant, make_product(app, tenant.partner.id), 2, BOUGHT)
    with app.app_context(), get_database(app).sessions() as s:
        (invoice,) = s.scalars(sa.select(Invoice)).all()
        assert invoice.due_on == date(2027, 2, 4) and invoice.total_minor == 2_000
    return sub


def _staff(app: Flask, role: str = "finance") -> HttpsClient:
    client: HttpsClient = app.test_client()  # type: ignore[assignment]
    sign_in(client, f"{role}@staff.alpha.example", staff=True)
    return client


def _customer(app: Flask, tenant: Tenant, key: str = "a") -> Customer:
    with app.app_context(), get_database(app).sessions() as s:
        found = s.get_one(Customer, tenant.customers[key].id)
        s.expunge(found)
        return found


def test_overdue_past_grace_holds_the_account_and_paying_lifts_it(
    app: Flask, tenant: Tenant, overdue: int, mailbox: Mailbox
) -> None:
    staff = _staff(app)
    saved = post_form(
        staff,
        "/staff/billing/hold-rules",
        {"grace_days": "10", "hold_limit": ""},
        page="/staff/billing",
        follow_redirects=True,
    ).get_data(as_text=True)
    assert "The automatic credit hold rules are saved." in saved
    with time_machine.travel(datetime(2027, 2, 10, 12, tzinfo=UTC), tick=False):
        assert review_credit_holds(app) == {}  # 6 days overdue: within the grace period
    with time_machine.travel(LATE, tick=False):
        assert review_credit_holds(app) == {"on": 1}
        drain(app)
        assert review_credit_holds(app) == {}  # held already: nothing twice
    held = _customer(app, tenant)
    assert (held.credit_hold, held.credit_hold_automatic) == (True, True)
    with app.app_context(), get_database(app).sessions() as s:
        event = s.scalars(sa.select(AuditEvent).where(AuditEvent.action == "credit.hold_on")).one()
        assert event.actor == "system"
        assert "16 days overdue (grace period 10 days)" in event.detail["reason"]
    told = mailbox.last_to(FINANCE)
    assert told["Subject"] == "alpha customer a is on credit hold"
    assert "16 days overdue, past the 10 days allowed" in Mailbox.body(told)
    assert mailbox.last_to("finance@staff.alpha.example")["Subject"] == (
        "alpha customer a went on credit hold automatically"
    )
    # a change asked for now waits
    with time_machine.travel(LATE, tick=False):
        with app.app_context(), get_database(app).sessions() as s:
            sub = s.get_one(Subscription, overdue)
            change = licences.request_quantity(
                s,
                s.get_one(Partner, tenant.partner.id),
                s.get_one(Customer, sub.customer_id),
                sub,
                5,
                sub.version,
                tenant.users["a:subscription_manager"],
            )
            s.commit()
            change_id = change.id
        drain(app)
    with app.app_context(), get_database(app).sessions() as s:
        assert s.get_one(LicenceChange, change_id).state is ChangeState.AWAITING
    # the Finance Manager pays the invoice by card in the portal
    finance: HttpsClient = app.test_client()  # type: ignore[assignment]
    sign_in(finance, FINANCE)
    assert "Your account is on credit hold." in finance.get("/").get_data(as_text=True)
    with app.app_context(), get_database(app).sessions() as s:
        invoice_id = s.scalars(sa.select(Invoice.id)).one()
    with time_machine.travel(LATE, tick=True):
        sign_in(finance, FINANCE)  # on the day it pays: a session of December has expired
        started = pay(finance, invoice_id)
        back_to_portal(finance, card_form(finance, started.headers["Location"], SUCCEEDS))
        drain(app)
    lifted = _customer(app, tenant)
    assert (lifted.credit_hold, lifted.credit_hold_automatic) == (False, False)
    with app.app_context(), get_database(app).sessions() as s:
        assert s.get_one(LicenceChange, change_id).state is ChangeState.PROVISIONED
        assert s.get_one(Subscription, overdue).quantity == 5
        off = s.scalars(sa.select(AuditEvent).where(AuditEvent.action == "credit.hold_off")).one()
        assert off.actor == "system"
    assert mailbox.last_to(FINANCE)["Subject"] == "alpha customer a is no longer on credit hold"
    assert "Your account is on credit hold." not in finance.get("/").get_data(as_text=True)


def test_over_the_customers_own_limit_holds_and_a_staff_hold_is_never_lifted_by_paying(
    app: Flask, tenant: Tenant, overdue: int
) -> None:
    staff = _staff(app)
    customer_id = tenant.customers["a"].id
    page = f"/staff/customers/{customer_id}"
    saved = post_form(
        staff,
        f"{page}/hold-rules",
        {"credit_limit": "15", "grace_days": ""},
        page=page,
        follow_redirects=True,
    ).get_data(as_text=True)
    assert "The credit limit and grace period of alpha customer a are saved." in saved
    with time_machine.travel(LATE, tick=False):
        assert review_credit_holds(app) == {"on": 1}
    with app.app_context(), get_database(app).sessions() as s:
        event = s.scalars(sa.select(AuditEvent).where(AuditEvent.action == "credit.hold_on")).one()
        assert (
            "overdue balance 20.00 USD above the credit limit of 15.00 USD"
            in (event.detail["reason"])
        )
    shown = staff.get(page).get_data(as_text=True)
    assert "The hold was put automatically: paying the overdue balance lifts it." in shown
    # staff hold it themselves now: it is theirs, and a payment does not lift it
    post_form(staff, f"{page}/credit-hold", {"reason": "keep it", "on_hold": "y"}, page=page)
    assert _customer(app, tenant).credit_hold_automatic is False
    assert "The hold was put by staff: only staff lift it." in staff.get(page).get_data(
        as_text=True
    )
    finance: HttpsClient = app.test_client()  # type: ignore[assignment]
    sign_in(finance, FINANCE)
    with app.app_context(), get_database(app).sessions() as s:
        invoice_id = s.scalars(sa.select(Invoice.id)).one()
    with time_machine.travel(LATE, tick=True):
        sign_in(finance, FINANCE)  # on the day it pays: a session of December has expired
        started = pay(finance, invoice_id)
        back_to_portal(finance, card_form(finance, started.headers["Location"], SUCCEEDS))
        drain(app)
        assert review_credit_holds(app) == {}
    assert _customer(app, tenant).credit_hold is True


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"grace_days": "ten"}, "A grace period is a whole number of days from 0 to 365."),
        ({"grace_days": "-1"}, "A grace period is a whole number of days from 0 to 365."),
        ({"grace_days": "400"}, "A grace period is a whole number of days from 0 to 365."),
        ({"hold_limit": "lots"}, "A credit limit is an amount of 0 or more in USD"),
        ({"hold_limit": "5.001"}, "A credit limit is an amount of 0 or more in USD"),
    ],
)
def test_bad_partner_rules_are_refused_and_nothing_changes(
    app: Flask, tenant: Tenant, data: dict[str, str], message: str
) -> None:
    response = post_form(
        _staff(app),
        "/staff/billing/hold-rules",
        {"grace_days": "", "hold_limit": "", **data},
        page="/staff/billing",
    )
    assert response.status_code == 422 and message in response.get_data(as_text=True)
    with app.app_context(), get_database(app).sessions() as s:
        assert s.scalars(sa.select(BillingSettings.hold_grace_days)).all() in ([], [None])


def test_bad_customer_rules_are_refused_in_spanish_and_nothing_changes(
    app: Flask, tenant: Tenant
) -> None:
    customer_id = tenant.customers["a"].id
    page = f"/staff/customers/{customer_id}"
    client = _staff(app)
    response = post_form(
        client,
        f"{page}/hold-rules",
        {"credit_limit": "-5", "grace_days": "x"},
        page=page,
        headers=ES,
    )
    text = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "Un límite de crédito es un importe de 0 o más en USD" in text
    assert _customer(app, tenant).credit_limit_minor == 100_000  # unchanged
    assert "Bloqueo de crédito automático" in client.get(page, headers=ES).get_data(as_text=True)


def test_only_finance_and_administrators_set_the_rules(app: Flask, tenant: Tenant) -> None:
    client = _staff(app, "service")
    customer_id = tenant.customers["a"].id
    page = f"/staff/customers/{customer_id}"
    assert (
        post_form(client, f"{page}/hold-rules", {"credit_limit": "1"}, page=page).status_code == 403
    )
    assert (
        post_form(client, "/staff/billing/hold-rules", {"grace_days": "1"}, page=page).status_code
        == 403
    )
