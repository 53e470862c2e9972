"""Renewals (issue 14, point 4) through the test client and the outbox, against the demo
provider (a real adapter with its own tables): terms renew at their end or expire, once; the
customer turns auto-renew on/off and schedules the next term's quantity, each sent to the
provider once; reminders go once at 30 and 7 days; billing bills the renewed term and not an
expired one.

No worker runs here: :func:`drain` runs the outbox items as a worker would (as the other
licence tests do).
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from demo_provider.models import DemoSubscription
from flask import Flask

from portal.core.db import get_database, utcnow
from portal.features.billing.models import Invoice, InvoiceLine
from portal.features.billing.services import run as billing_run
from portal.features.catalogue.models import Product
from portal.features.catalogue.rules import BillingFrequency
from portal.features.licences.models import (
    InstructionState,
    RenewalInstruction,
    RenewalReminder,
    Subscription,
    SubscriptionStatus,
)
from portal.features.licences.rules import ChangeKind
from portal.features.licences.services import renewals
from portal.features.licences.services.subscriptions import window_seats
from portal.integrations.providers import QuantityChange
from portal.integrations.registry import integrations
from portal.outbox.items import enqueue
from portal.outbox.models import OutboxItem, OutboxState
from tests.conftest import Mailbox
from tests.integration.billing_support import buy, make_contract, make_product
from tests.integration.test_licences import changes_of, drain, licence_app, subscription
from tests.integration.test_licences import text as html_text
from tests.support import Tenant, post_form, seed_licences, sign_in

ES = {"Accept-Language": "es"}


def text(response: Any) -> str:
    """What the reader sees: the page without its tags, whitespace collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html_text(response))).replace(" :", ":")


ADMIN = "administrator@a.alpha.example"


@pytest.fixture
def app(app_factory: Any) -> Flask:
    return licence_app(app_factory)


@pytest.fixture
def licensed(app: Flask, tenant: Tenant) -> Tenant:
    return seed_licences(app, tenant)


def _today() -> date:
    return utcnow().date()  # the seeded partner's time zone is UTC


def _set_term(app: Flask, subscription_id: int, ends_on: date, **values: Any) -> None:
    """The subscription's current term ends on ``ends_on`` (a year long)."""
    started = datetime.combine(ends_on + timedelta(days=1), time(), tzinfo=UTC)
    with app.app_context(), get_database(app).sessions() as s:
        row = s.get_one(Subscription, subscription_id)
        row.term_ends_on = ends_on
        row.term_started_at = started.replace(year=started.year - 1)
        for name, value in values.items():
            setattr(row, name, value)
        s.commit()


def _known_to_the_demo_provider(app: Flask, tenant: Tenant, subscription_id: int) -> None:
    """The demo provider holds the seeded subscription (with its quantity; no term)."""
    row = subscription(app, subscription_id)
    customer = tenant.customers["a"]
    with app.app_context():
        adapter = integrations(app).providers.get("demo")
        assert adapter is not None
        adapter.set_quantity(
            QuantityChange(
                str(uuid.uuid4()), customer.ms_tenant_id or "", row.provider_ref or "", 10
            )
        )


def _demo_row(app: Flask, subscription_id: int) -> DemoSubscription:
    ref = subscription(app, subscription_id).provider_ref
    with app.app_context(), get_database(app).sessions() as s:
        return s.scalars(
            sa.select(DemoSubscription).where(DemoSubscription.subscription_ref == ref)
        ).one()


def _renew(app: Flask, today: date | None = None) -> list[str]:
    renewals.renew_due(app, today)
    return drain(app)


def _instructions(app: Flask, subscription_id: int) -> list[RenewalInstruction]:
    with app.app_context(), get_database(app).sessions() as s:
        return list(
            s.scalars(
                sa.select(RenewalInstruction)
                .where(RenewalInstruction.subscription_id == subscription_id)
                .order_by(RenewalInstruction.id)
            )
        )


# -- renewing ------------------------------------------------------------------------------------


def test_an_auto_renew_term_renews_once_and_reopens_the_reduction_window(
    app: Flask, client: Any, licensed: Tenant
) -> None:
    sub_id = licensed.subscriptions["a"]
    old_end = _today() - timedelta(days=1)
    _set_term(app, sub_id, old_end)
    _renew(app)
    renewed = subscription(app, sub_id)
    new_start = old_end + timedelta(days=1)
    assert renewed.status is SubscriptionStatus.ACTIVE
    assert renewed.term_started_at == datetime.combine(new_start, time(), tzinfo=UTC)
    assert renewed.term_ends_on == date(new_start.year + 1, new_start.month, new_start.day) - (
        timedelta(days=1)
    )
    assert renewed.quantity == 10
    log = changes_of(app, sub_id)
    assert [c.kind for c in log].count(ChangeKind.RENEWAL) == 1
    with app.app_context(), get_database(app).sessions() as s:
        window = window_seats(s, s.get_one(Subscription, sub_id), utcnow())
    assert sum(seats.quantity for seats in window) == 10  # the whole quantity again

    # a rerun, and a duplicate item run at once, renew nothing twice
    _renew(app)
    with app.app_context(), get_database(app).sessions() as s:
        enqueue(  # a duplicate of the item that renewed it (two runs at once)
            s,
            renewals.RENEW_KIND,
            {"subscription_id": sub_id, "term_ends_on": old_end.isoformat()},
            partner_id=licensed.partner.id,
            customer_id=licensed.customers["a"].id,
        )
        s.commit()
    drain(app)
    assert [c.kind for c in changes_of(app, sub_id)].count(ChangeKind.RENEWAL) == 1
    assert subscription(app, sub_id).term_ends_on == renewed.term_ends_on

    sign_in(client, ADMIN)
    page = text(client.get(f"/subscriptions/{sub_id}"))
    assert "Renewed for 1 year" in page and "Renews on" in page
    assert str(renewed.term_ends_on.year) in page
    page = text(client.get(f"/subscriptions/{sub_id}", headers=ES))
    assert "Renovada por 1 año" in page and "Se renueva el" in page


def test_without_auto_renew_the_subscription_expires_and_shows_it(
    app: Flask, client: Any, licensed: Tenant
) -> None:
    sub_id = licensed.subscriptions["a"]
    old_end = _today() - timedelta(days=1)
    _set_term(app, sub_id, old_end, auto_renew=False)
    sign_in(client, ADMIN)
    assert "Expires on" in text(client.get(f"/subscriptions/{sub_id}"))
    _renew(app)
    expired = subscription(app, sub_id)
    assert expired.status is SubscriptionStatus.EXPIRED and expired.term_ends_on == old_end
    assert ChangeKind.RENEWAL not in [c.kind for c in changes_of(app, sub_id)]
    _renew(app)  # nothing more happens
    assert subscription(app, sub_id).version == expired.version
    page = text(client.get(f"/subscriptions/{sub_id}"))
    assert "Expired on" in page and "Expired" in page
    assert "Turn off automatic renewal" not in page and "Preview the change" not in page
    page = text(client.get(f"/subscriptions/{sub_id}", headers=ES))
    assert "Venció el" in page and "Vencida" in page
    assert "Vencida" in text(client.get("/subscriptions", headers=ES))

    # changing its renewal is refused, with a message, and nothing changes
    url = f"/subscriptions/{sub_id}"
    answer = post_form(
        client,
        f"{url}/renewal-quantity",
        {"renewal_quantity": "12", "version": str(expired.version)},
        page=url,
    )
    assert answer.status_code == 422
    assert "no longer active" in text(answer)
    answer = post_form(
        client, f"{url}/auto-renew", {"auto_renew": "on", "version": str(expired.version)}, page=url
    )
    assert answer.status_code == 422 and "no longer active" in text(answer)
    assert _instructions(app, sub_id) == []


# -- the customer's instructions ----------------------------------------------------------------


def test_turning_auto_renew_off_and_on_is_sent_to_the_provider_once_each(
    app: Flask, client: Any, licensed: Tenant
) -> None:
    sub_id = licensed.subscriptions["a"]
    _known_to_the_demo_provider(app, licensed, sub_id)
    before = _demo_row(app, sub_id).version
    sign_in(client, ADMIN)
    url = f"/subscriptions/{sub_id}"
    answer = post_form(client, f"{url}/auto-renew", {"auto_renew": "off", "version": "0"}, page=url)
    assert answer.status_code == 302
    page = text(client.get(url))
    assert "Turning automatic renewal off: this is being sent to Microsoft." in page
    assert "Being sent to Microsoft" in page
    drain(app)
    assert subscription(app, sub_id).auto_renew is False
    assert _demo_row(app, sub_id).auto_renew is False
    assert _demo_row(app, sub_id).version == before + 1
    # its item run again (a redelivery): no second effect at the provider
    with app.app_context(), get_database(app).sessions() as s:
        s.execute(
            sa.update(OutboxItem)
            .where(OutboxItem.kind == renewals.INSTRUCT_KIND)
            .values(state=OutboxState.PENDING)
        )
        s.commit()
    drain(app)
    assert _demo_row(app, sub_id).version == before + 1
    [done] = _instructions(app, sub_id)
    assert done.state is InstructionState.DONE
    page = text(client.get(url))
    assert "Expires on" in page and "Turn automatic renewal off: Done" in page
    es = text(client.get(url, headers=ES))
    assert "Vence el" in es and "Desactivar la renovación automática: Hecho" in es

    version = subscription(app, sub_id).version
    answer = post_form(
        client, f"{url}/auto-renew", {"auto_renew": "on", "version": str(version)}, page=url
    )
    assert answer.status_code == 302
    drain(app)
    assert subscription(app, sub_id).auto_renew is True
    assert _demo_row(app, sub_id).version == before + 2
    # already on: refused with a message
    version = subscription(app, sub_id).version
    answer = post_form(
        client, f"{url}/auto-renew", {"auto_renew": "on", "version": str(version)}, page=url
    )
    assert answer.status_code == 422 and "Automatic renewal is already on." in text(answer)
    answer = post_form(
        client,
        f"{url}/auto-renew",
        {"auto_renew": "on", "version": str(version)},
        page=url,
        headers=ES,
    )
    assert "La renovación automática ya está activada." in text(answer)
    assert len(_instructions(app, sub_id)) == 2


def test_a_scheduled_quantity_is_sent_once_and_applied_at_renewal(
    app: Flask, client: Any, licensed: Tenant
) -> None:
    sub_id = licensed.subscriptions["a"]
    _known_to_the_demo_provider(app, licensed, sub_id)
    sign_in(client, ADMIN)
    url = f"/subscriptions/{sub_id}"
    answer = post_form(
        client, f"{url}/renewal-quantity", {"renewal_quantity": "12", "version": "0"}, page=url
    )
    assert answer.status_code == 302
    assert "12 seats from the renewal: this is being sent to Microsoft." in text(client.get(url))
    drain(app)
    assert subscription(app, sub_id).renewal_quantity == 12
    assert _demo_row(app, sub_id).renewal_quantity == 12
    assert subscription(app, sub_id).quantity == 10  # the current term keeps its seats
    page = text(client.get(url))
    assert "Seats at renewal" in page and "12 seats at renewal: Done" in page
    assert "Puestos en la renovación" in text(client.get(url, headers=ES))

    old_end = _today() - timedelta(days=1)
    _set_term(app, sub_id, old_end)
    _renew(app)
    renewed = subscription(app, sub_id)
    assert (renewed.quantity, renewed.renewal_quantity) == (12, None)
    assert renewed.term_ends_on > old_end
    assert _demo_row(app, sub_id).quantity == 12
    [renewal] = [c for c in changes_of(app, sub_id) if c.kind is ChangeKind.RENEWAL]
    assert (renewal.quantity_from, renewal.quantity_to) == (10, 12)
    with app.app_context(), get_database(app).sessions() as s:
        window = window_seats(s, s.get_one(Subscription, sub_id), utcnow())
    assert sum(seats.quantity for seats in window) == 12
    page = text(client.get(url))
    assert "Renewed for 1 year (10 → 12)" in page
    assert "Seats at renewal" not in page


@pytest.mark.parametrize(
    ("value", "english", "spanish"),
    [
        ("0", "Enter a whole number of seats, 1 or more.", "puestos"),
        ("51", "allows at most 50 seats.", "50"),
        ("abc", "Enter a whole number of seats, 1 or more.", "puestos"),
        ("", "Enter a whole number of seats, 1 or more.", "puestos"),
        ("3", "needs at least 5 seats.", "5"),
    ],
)
def test_a_bad_renewal_quantity_is_refused_with_a_message_and_changes_nothing(
    app: Flask, client: Any, licensed: Tenant, value: str, english: str, spanish: str
) -> None:
    with app.app_context(), get_database(app).sessions() as s:
        s.get_one(Product, licensed.products["standard"]).min_quantity = 5
        s.commit()
    sub_id = licensed.subscriptions["a"]
    sign_in(client, ADMIN)
    url = f"/subscriptions/{sub_id}"
    data = {"renewal_quantity": value, "version": "0"}
    answer = post_form(client, f"{url}/renewal-quantity", data, page=url)
    assert answer.status_code == 422
    assert english in text(answer)
    answer = post_form(client, f"{url}/renewal-quantity", data, page=url, headers=ES)
    assert answer.status_code == 422 and spanish in text(answer)
    assert "Enter a whole number" not in text(answer)
    assert _instructions(app, sub_id) == []
    assert subscription(app, sub_id).version == 0


def test_a_finance_manager_cannot_change_the_renewal(
    app: Flask, client: Any, licensed: Tenant
) -> None:
    sub_id = licensed.subscriptions["a"]
    sign_in(client, "finance_manager@a.alpha.example")
    url = f"/subscriptions/{sub_id}"
    page = text(client.get(url))
    assert "Turn off automatic renewal" not in page
    answer = post_form(client, f"{url}/auto-renew", {"auto_renew": "off", "version": "0"}, page=url)
    assert answer.status_code in (403, 404)
    assert _instructions(app, sub_id) == []


# -- reminders -----------------------------------------------------------------------------------


def test_reminders_go_once_at_30_and_7_days_to_the_administrators(
    app: Flask, licensed: Tenant, mailbox: Mailbox
) -> None:
    sub_id = licensed.subscriptions["a"]
    today = _today()
    renews_on = today + timedelta(days=30)
    _set_term(app, sub_id, renews_on - timedelta(days=1))
    with app.app_context(), get_database(app).sessions() as s:
        # the other seeded subscriptions renew in a year: no reminder for them
        from portal.features.identity.models import User

        s.get_one(User, licensed.users["a:administrator"].id).locale = "es"
        s.commit()

    def reminders() -> list[Any]:
        return [m for m in mailbox.messages if "renueva" in str(m["Subject"])]

    assert renewals.send_reminders(app, today) == 1
    drain(app)
    assert len(reminders()) == 1
    message = mailbox.last_to(ADMIN)
    assert "Microsoft 365 Business Standard se renueva el" in str(message["Subject"])
    body = Mailbox.body(message)
    assert f"https://{licensed.host}/subscriptions/{sub_id}" in body
    assert "con 10 puestos" in body
    assert all(m["To"] == ADMIN for m in mailbox.messages)  # the Administrators only
    # a rerun on the same day, and the days after, send nothing more until 7 days before
    for day in (today, today + timedelta(days=1), today + timedelta(days=22)):
        assert renewals.send_reminders(app, day) == 0
    drain(app)
    assert len(reminders()) == 1
    assert renewals.send_reminders(app, today + timedelta(days=23)) == 1  # 7 days before
    assert renewals.send_reminders(app, today + timedelta(days=23)) == 0
    drain(app)
    assert len(reminders()) == 2
    with app.app_context(), get_database(app).sessions() as s:
        sent = s.scalars(sa.select(RenewalReminder.days).order_by(RenewalReminder.days)).all()
    assert sent == [7, 30]


def test_no_reminder_for_a_monthly_term_or_one_that_does_not_renew(
    app: Flask, licensed: Tenant, mailbox: Mailbox
) -> None:
    today = _today()
    _set_term(app, licensed.subscriptions["a"], today + timedelta(days=5), auto_renew=False)
    assert renewals.send_reminders(app, today) == 0
    drain(app)
    assert mailbox.messages == []


# -- billing ------------------------------------------------------------------------------------


JAN_1_2025 = date(2025, 1, 1)
JAN_1_2026 = date(2026, 1, 1)


def _lines(app: Flask, contract: int, period_start: date) -> list[tuple[date, date, Decimal]]:
    with app.app_context(), get_database(app).sessions() as s:
        return [
            (line.period_start, line.period_end, line.quantity)
            for line in s.scalars(
                sa.select(InvoiceLine)
                .join(Invoice, Invoice.id == InvoiceLine.invoice_id)
                .where(
                    Invoice.billing_contract_id == contract, Invoice.period_start == period_start
                )
                .order_by(InvoiceLine.position)
            )
        ]


@pytest.mark.parametrize("auto_renew", [True, False])
def test_the_next_invoice_bills_the_renewed_term_and_never_an_expired_one(
    app: Flask, tenant: Tenant, auto_renew: bool
) -> None:
    customer = tenant.customers["a"].id
    product = make_product(app, tenant.partner.id, frequency=BillingFrequency.ANNUAL)
    contract = make_contract(app, customer, anchor_on=JAN_1_2025)
    sub_id = buy(app, contract, product, seats=4, on=JAN_1_2025)
    with app.app_context(), get_database(app).sessions() as s:
        row = s.get_one(Subscription, sub_id)
        row.auto_renew = auto_renew
        row.term_started_at = datetime.combine(JAN_1_2025, time(), tzinfo=UTC)
        s.commit()
    assert subscription(app, sub_id).term_ends_on == date(2025, 12, 31)
    with app.app_context():  # its purchase is billed (at once, in practice) before it renews
        billing_run.run_billing(JAN_1_2025, "test", partner_id=tenant.partner.id)
    _renew(app, JAN_1_2026)
    renewed = subscription(app, sub_id)
    with app.app_context():
        billing_run.run_billing(JAN_1_2026, "test", partner_id=tenant.partner.id)
        billing_run.run_billing(date(2026, 2, 1), "test", partner_id=tenant.partner.id)
    if auto_renew:
        assert renewed.term_ends_on == date(2026, 12, 31)
        assert _lines(app, contract, JAN_1_2026) == [(JAN_1_2026, date(2027, 1, 1), Decimal(4))]
        assert _lines(app, contract, date(2026, 2, 1)) == []  # the renewal settles nothing
    else:
        assert renewed.status is SubscriptionStatus.EXPIRED
        assert _lines(app, contract, JAN_1_2026) == []
        assert _lines(app, contract, date(2026, 2, 1)) == []
