"""Helpers for the payment tests: an app with the demo gateway on a database of the payment
tests' own, an issued invoice to pay, paying it on the demo card form as a browser would, and
reading back what is stored (attempts, the ledger, the gateway's own payments).

The database is not the session's shared one: other test modules migrate other plugins'
Alembic branches into that (the demo provider's), and a later ``alembic upgrade`` that does not
know those revisions refuses to run. This one is made once per backend and session, with the
core's and the demo gateway's branches.
"""

from __future__ import annotations

import importlib.util
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from flask import Flask
from werkzeug.test import TestResponse

from portal import create_app
from portal.cli import migrate
from portal.core.config import ROOT
from portal.core.db import get_database, utcnow
from portal.features.billing.models import InvoicePayment
from portal.features.payments.models import PaymentAttempt, PaymentProfile
from portal.integrations.registry import integrations
from tests.conftest import (
    PG_URL,
    Mailbox,
    _empty_tables,
    _ensure_pg_database,
    _reset_schema,
    portal_test_config,
)
from tests.integration.invoice_pages_support import Line, contract, invoice
from tests.support import HttpsClient, Tenant, csrf_token

if importlib.util.find_spec("demo_payments") is None:
    sys.path.insert(0, str(ROOT / "plugins" / "demo_payments"))

from demo_payments import MIGRATIONS as DEMO_PAYMENTS_MIGRATIONS
from demo_payments.gateway import DemoPaymentGateway
from demo_payments.models import DemoPayment, DemoPaymentsBase

FINANCE = "finance_manager@a.alpha.example"
ADMIN = "administrator@a.alpha.example"
SUCCEEDS = "4242 4242 4242 4242"
DECLINED = "4000 0000 0000 0002"
AUTHENTICATE = "4000 0025 0000 3155"
ALWAYS_AUTHENTICATE = "4000 0027 6000 3184"
DECLINED_LATER = "4000 0000 0000 0341"
TODAY = utcnow().date()

_PREPARED: dict[str, str] = {}


def payments_database(backend: str, folder: Path) -> str:
    """The payment tests' database on ``backend``, migrated (core and demo gateway) once."""
    if backend in _PREPARED:
        return _PREPARED[backend]
    if backend == "postgresql":
        shared = sa.make_url(PG_URL)
        url = shared.set(database=f"{shared.database}_payments").render_as_string(
            hide_password=False
        )
        _ensure_pg_database(url)
    else:
        url = f"sqlite:///{folder / 'payments.sqlite3'}"
    _reset_schema(url)
    migrate(url, [str(DEMO_PAYMENTS_MIGRATIONS)])
    _PREPARED[backend] = url
    return url


def payments_apps(
    backend: str, smtp_server: tuple[int, Mailbox], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Flask]]:
    """Like the ``app_factory`` fixture, on the payment tests' own database (a test module's
    parametrised fixture yields from it): the apps made for one test share it, emptied for
    the first, the demo gateway's tables too."""
    url = payments_database(backend, tmp_path_factory.getbasetemp())
    made: list[Flask] = []

    def make(**overrides: Any) -> Flask:
        app = create_app(portal_test_config(url, smtp_server[0], **overrides))
        app.test_client_class = HttpsClient
        if not made:
            _empty_tables(app)
            _empty_demo_gateway(app)
        made.append(app)
        return app

    yield make
    for app in made:
        get_database(app).dispose()


def _empty_demo_gateway(app: Flask) -> None:
    """Empty the demo gateway's tables, as the portal's are for each test. Kept, a test's
    gateway customers and cards would be found again by the next test's: the portal makes its
    gateway customer with the key ``portal-customer-<customer id>-<created, in whole
    seconds>``, and the customer ids start again for each test, so a test that seeds its
    customers within the same second as the previous test did gets that test's customer, and
    its saved cards, back from the gateway."""
    with get_database(app).engine.begin() as connection:
        for table in reversed(DemoPaymentsBase.metadata.sorted_tables):
            connection.execute(table.delete())


def payments_app(app_factory: Callable[..., Flask], **overrides: Any) -> Flask:
    """The portal with the demo gateway chosen and an in-memory broker (outbox items are run
    by the tests themselves)."""
    app = app_factory(
        **{
            "PORTAL_PLUGINS": "demo_payments",
            "PORTAL_PAYMENT_GATEWAY": "demo",
            "PORTAL_BROKER_URL": "memory://",
            "PORTAL_TASK_QUEUE": f"test-{uuid.uuid4().hex[:10]}",
            **overrides,
        }
    )
    assert integrations(app).migration_locations in ([], [str(DEMO_PAYMENTS_MIGRATIONS)])
    return app


def demo_gateway(app: Flask) -> DemoPaymentGateway:
    found = integrations(app).payment_gateways.get("demo")
    assert isinstance(found, DemoPaymentGateway)
    return found


def issued_invoice(
    app: Flask,
    tenant: Tenant,
    customer: str = "a",
    *,
    amount_minor: int = 10_000,
    currency: str = "USD",
    due_in_days: int = 30,
    number: str | None = None,
    contract_id: int | None = None,
) -> int:
    """An issued invoice of one line for ``amount_minor``, due in ``due_in_days``."""
    contract_id = contract_id or contract(
        app, tenant, customer, currency=currency, name=f"Contract {uuid.uuid4().hex[:6]}"
    )
    return invoice(
        app,
        tenant,
        contract_id,
        number=number or f"INV-{uuid.uuid4().hex[:8]}",
        period=(TODAY.replace(day=1), TODAY.replace(day=1) + timedelta(days=31)),
        lines=[Line("Microsoft 365 Business Standard", "1", "100.00", amount_minor)],
        issued_on=TODAY,
        due_on=TODAY + timedelta(days=due_in_days),
        currency=currency,
    )


def pay(
    client: HttpsClient, invoice_id: int, amount: str | None = None, **fields: str
) -> TestResponse:
    """Press "Pay now" on the invoice page (``amount`` as typed; None keeps the balance)."""
    page = client.get(f"/invoices/{invoice_id}").get_data(as_text=True)
    data = {"csrf_token": csrf_token(page), **fields}
    if amount is not None:
        data["amount"] = amount
    else:
        data["amount"] = _filled_amount(page)
    return client.post(f"/invoices/{invoice_id}/pay", data=data)


def _filled_amount(page: str) -> str:
    import re

    match = re.search(r'id="amount" name="amount" value="([^"]*)"', page)
    assert match, "no amount field on the invoice page"
    return match.group(1)


def card_form(client: HttpsClient, redirect_url: str, card: str) -> TestResponse:
    """Type a test card on the demo gateway's page (and approve its extra step)."""
    path = urlsplit(redirect_url).path
    page = client.get(path).get_data(as_text=True)
    response = client.post(path, data={"csrf_token": csrf_token(page), "card_number": card})
    location = response.headers.get("Location", "")
    if location.endswith("/authenticate"):
        step = client.get(location).get_data(as_text=True)
        response = client.post(
            location, data={"csrf_token": csrf_token(step), "approve": "Approve"}
        )
    return response


def back_to_portal(client: HttpsClient, response: TestResponse) -> TestResponse:
    """Follow the gateway's redirect back to the portal's return page."""
    assert response.status_code == 302, response.status_code
    parts = urlsplit(response.headers["Location"])
    return client.get(parts.path + (f"?{parts.query}" if parts.query else ""))


def attempts_of(app: Flask, invoice_id: int) -> list[PaymentAttempt]:
    with app.app_context(), get_database(app).sessions() as s:
        return list(
            s.scalars(
                sa.select(PaymentAttempt)
                .where(PaymentAttempt.invoice_id == invoice_id)
                .order_by(PaymentAttempt.number)
            )
        )


def ledger_of(app: Flask, invoice_id: int) -> list[InvoicePayment]:
    with app.app_context(), get_database(app).sessions() as s:
        return list(
            s.scalars(
                sa.select(InvoicePayment)
                .where(InvoicePayment.invoice_id == invoice_id)
                .order_by(InvoicePayment.id)
            )
        )


def gateway_payments(app: Flask, invoice_id: int) -> list[DemoPayment]:
    """What the demo gateway itself holds for the invoice's attempts (its payment sessions and
    charges), found by the attempts' idempotency keys."""
    keys = [attempt.idempotency_key for attempt in attempts_of(app, invoice_id)]
    with get_database(app).engine.connect() as connection, sa.orm.Session(connection) as s:
        return list(
            s.scalars(
                sa.select(DemoPayment)
                .where(DemoPayment.idempotency_key.in_(keys))
                .order_by(DemoPayment.id)
            )
        )


def cards_of(app: Flask, customer_id: int) -> list[PaymentProfile]:
    with app.app_context(), get_database(app).sessions() as s:
        return list(
            s.scalars(
                sa.select(PaymentProfile)
                .where(PaymentProfile.customer_id == customer_id)
                .order_by(PaymentProfile.id)
            )
        )


def signed_in(app: Flask, email: str = FINANCE) -> HttpsClient:
    from tests.support import sign_in

    client: HttpsClient = app.test_client()  # type: ignore[assignment]
    assert sign_in(client, email).status_code == 302
    return client


def today() -> date:
    return TODAY
