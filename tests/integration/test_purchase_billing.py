"""Purchases billed in advance, at once, at the price shown (issue 13, defect 8; DESIGN §4).

Each journey starts from an empty database (a partner, its customers and users, a catalogue
product) and goes through the services: a contract is created, the customer buys, the outbox
provisions the purchase at the demo provider, staff put the subscription on the contract,
billing runs. The clock is moved with time-machine, so the days are the ones named.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any

import pytest
import sqlalchemy as sa
import time_machine
from dateutil.relativedelta import relativedelta
from flask import Flask

from portal.cli import migrate
from portal.core.db import get_database, utcnow
from portal.features.billing.models import BillingContract, Invoice, InvoiceLine, InvoiceState
from portal.features.billing.rules.invoicing import ContractFrequency, LineKind
from portal.features.billing.services import contracts as billing
from portal.features.billing.services import documents, moves
from portal.features.billing.services import run as billing_run
from portal.features.catalogue.models import Product
from portal.features.catalogue.rules import BillingFrequency
from portal.features.identity.models import AuditEvent
from portal.features.licences.models import Subscription, SubscriptionStatus
from portal.features.licences.services import subscriptions as licences
from portal.features.tenancy.models import Customer, Partner
from portal.integrations.registry import integrations
from portal.outbox.items import run_item
from portal.outbox.models import OutboxItem, OutboxState
from tests.integration.billing_support import make_product, set_timezone
from tests.support import Tenant, sign_in

QUIET = {"DELAY_SECONDS": "0", "FAILURE_RATE": "0", "REJECTION_RATE": "0"}
STAFF = "billing@staff.alpha.example"
BUYER = "a:subscription_manager"


@pytest.fixture
def app(app_factory: Any) -> Flask:
    app: Flask = app_factory(
        PORTAL_PLUGINS="demo_provider",
        PORTAL_PROVIDER="demo",
        PORTAL_PLUGIN_SETTINGS={"demo_provider": QUIET},
        PORTAL_BROKER_URL="memory://",
        PORTAL_TASK_QUEUE=f"test-{uuid.uuid4().hex[:10]}",
        PORTAL_PROVISIONING_MAX_ATTEMPTS=3,
    )
    migrate(app.config["PORTAL_DATABASE_URL"], integrations(app).migration_locations)
    return app


def _at(day: date, hour: int = 10) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def drain(app: Flask, leave: tuple[str, ...] = ()) -> None:
    """Run every pending outbox item the way a worker would, until none is left (items of the
    kinds in ``leave`` stay pending: as when their worker never came)."""
    with app.app_context():
        database = get_database(app)
        for _ in range(20):
            with database.sessions() as s:
                s.execute(
                    sa.update(OutboxItem)
                    .where(OutboxItem.state == OutboxState.PENDING)
                    .values(available_at=utcnow() - timedelta(seconds=1))
                )
                s.commit()
                ids = list(
                    s.scalars(
                        sa.select(OutboxItem.id)
                        .where(
                            OutboxItem.state == OutboxState.PENDING,
                            OutboxItem.kind.not_like("billing.invoice%"),
                            OutboxItem.kind.not_in(leave),
                        )
                        .order_by(OutboxItem.id)
                    )
                )
            if not ids:
                return
            for item_id in ids:
                run_item(app, item_id)


def contract(
    app: Flask,
    tenant: Tenant,
    anchor_on: date,
    *,
    frequency: ContractFrequency = ContractFrequency.MONTHLY,
    prepaid_discount: str = "0",
    tax_rate: str = "0",
    review: bool = False,
) -> int:
    with app.app_context(), get_database(app).sessions() as s:
        made = billing.create_contract(
            s,
            s.get_one(Customer, tenant.customers["a"].id),
            name="Main",
            currency="USD",
            frequency=frequency,
            anchor_on=anchor_on,
            by=STAFF,
            prepaid_discount=Decimal(prepaid_discount),
            tax_rate=Decimal(tax_rate),
        )
        documents.set_invoice_review(s, s.get_one(Partner, tenant.partner.id), review, STAFF)
        s.commit()
        return made.id


def buy(
    app: Flask, tenant: Tenant, product_id: int, seats: int, on: date, billed_at_once: bool = True
) -> int:
    """The customer buys on ``on`` and the provider applies it the same day (billed at once by
    the ``billing.purchase`` item, unless ``billed_at_once`` is off: that item is lost)."""
    with time_machine.travel(_at(on), tick=False):
        with app.app_context(), get_database(app).sessions() as s:
            bought = licences.purchase(
                s,
                s.get_one(Partner, tenant.partner.id),
                s.get_one(Customer, tenant.customers["a"].id),
                s.get_one(Product, product_id),
                seats,
                tenant.users[BUYER],
            )
            s.commit()
            bought_id = bought.id
        drain(app, () if billed_at_once else ("billing.purchase",))
    with app.app_context(), get_database(app).sessions() as s:
        found = s.get_one(Subscription, bought_id)
        assert (found.status, found.quantity) == (SubscriptionStatus.ACTIVE, seats)
    return bought_id


def assign(app: Flask, contract_id: int, subscription_id: int, on: date) -> None:
    with (
        time_machine.travel(_at(on, 11), tick=False),
        app.app_context(),
        get_database(app).sessions() as s,
    ):
        moves.assign_subscriptions(
            s, s.get_one(BillingContract, contract_id), [subscription_id], STAFF
        )
        s.commit()


def change_quantity(app: Flask, tenant: Tenant, subscription_id: int, seats: int, on: date) -> None:
    with time_machine.travel(_at(on), tick=False):
        with app.app_context(), get_database(app).sessions() as s:
            sub = s.get_one(Subscription, subscription_id)
            licences.request_quantity(
                s,
                s.get_one(Partner, tenant.partner.id),
                s.get_one(Customer, tenant.customers["a"].id),
                sub,
                seats,
                sub.version,
                tenant.users[BUYER],
            )
            s.commit()
        drain(app)


def request(app: Flask, tenant: Tenant, product_id: int, seats: int, on: date) -> int:
    """The customer buys on ``on``; the provider has not applied it yet (see :func:`apply`)."""
    with (
        time_machine.travel(_at(on), tick=False),
        app.app_context(),
        get_database(app).sessions() as s,
    ):
        bought = licences.purchase(
            s,
            s.get_one(Partner, tenant.partner.id),
            s.get_one(Customer, tenant.customers["a"].id),
            s.get_one(Product, product_id),
            seats,
            tenant.users[BUYER],
        )
        s.commit()
        return bought.id


def apply(app: Flask, on: date) -> None:
    """The provider applies what is pending on ``on``."""
    with time_machine.travel(_at(on, 12), tick=False):
        drain(app)


def billed(app: Flask, subscription_id: int) -> list[tuple[Any, ...]]:
    """Every line of the subscription on any invoice, in the order of the days they bill."""
    found = [
        line
        for invoice in invoices(app)
        for line in lines(app, invoice.id)
        if line[1] == subscription_id
    ]
    return sorted(found, key=lambda line: (line[3], line[4]))


def run(app: Flask, tenant: Tenant, on: date) -> None:
    with time_machine.travel(_at(on, 23), tick=False), app.app_context():
        billing_run.run_billing(on, "schedule", partner_id=tenant.partner.id)


def invoices(app: Flask) -> list[Invoice]:
    with app.app_context(), get_database(app).sessions() as s:
        return list(s.scalars(sa.select(Invoice).order_by(Invoice.id)))


def lines(app: Flask, invoice_id: int) -> list[tuple[Any, ...]]:
    with app.app_context(), get_database(app).sessions() as s:
        return [
            (
                line.kind,
                line.subscription_id,
                line.quantity,
                line.period_start,
                line.period_end,
                line.amount_minor,
            )
            for line in s.scalars(
                sa.select(InvoiceLine)
                .where(InvoiceLine.invoice_id == invoice_id)
                .order_by(InvoiceLine.position)
            )
        ]


@pytest.fixture
def utc(app: Flask, tenant: Tenant) -> Tenant:
    set_timezone(app, tenant.partner.id, "UTC")
    return tenant


JAN_1 = date(2027, 1, 1)
FEB_1 = date(2027, 2, 1)


def test_a_monthly_purchase_is_billed_in_advance_on_an_invoice_for_the_period_it_starts_in(
    app: Flask, utc: Tenant
) -> None:
    """Bought on 10 January (contract periods from the 1st): the seats' first month, 10
    January to 10 February, is invoiced at once, for January's period, at the price shown;
    February's invoice has the next month in advance and no "addition" of the purchase."""
    product = make_product(app, utc.partner.id, price_minor=1_000)
    contract_id = contract(app, utc, JAN_1)
    run(app, utc, JAN_1)  # nothing on the contract yet: no invoice
    sub = buy(app, utc, product, 4, date(2027, 1, 10))
    assign(app, contract_id, sub, date(2027, 1, 10))
    (made,) = invoices(app)
    assert (made.period_start, made.period_end, made.state) == (JAN_1, FEB_1, InvoiceState.ISSUED)
    assert made.number is not None and made.issued_on == date(2027, 1, 10)
    assert lines(app, made.id) == [
        (LineKind.ADVANCE, sub, 4, date(2027, 1, 10), date(2027, 2, 10), 4_000)
    ]
    assert made.total_minor == 4_000
    run(app, utc, FEB_1)
    first, february = invoices(app)
    assert first.id == made.id
    assert (february.period_start, february.purchase_change_id) == (FEB_1, None)
    assert lines(app, february.id) == [
        (LineKind.ADVANCE, sub, 4, date(2027, 2, 10), date(2027, 3, 10), 4_000)
    ]


def test_an_annual_prepaid_purchase_gets_its_discount_and_is_billed_at_once(
    app: Flask, utc: Tenant
) -> None:
    """An annual product bought on 1 January on a contract with a 5 % prepaid discount and
    20 % tax: the whole first year at 114.00 a seat, at once (not in February at 120.00); a
    seat added mid-term is still an addition at the list price, on the next invoice."""
    annual = make_product(
        app, utc.partner.id, price_minor=12_000, frequency=BillingFrequency.ANNUAL
    )
    contract_id = contract(app, utc, JAN_1, prepaid_discount="0.05", tax_rate="0.2")
    sub = buy(app, utc, annual, 10, JAN_1)
    assign(app, contract_id, sub, JAN_1)
    (made,) = invoices(app)
    assert (made.period_start, made.period_end) == (JAN_1, FEB_1)
    assert lines(app, made.id) == [(LineKind.ADVANCE, sub, 10, JAN_1, date(2028, 1, 1), 114_000)]
    assert (made.subtotal_minor, made.tax_minor, made.total_minor) == (114_000, 22_800, 136_800)
    run(app, utc, JAN_1)  # the period's own run, after the purchase: nothing more
    run(app, utc, FEB_1)
    assert [i.id for i in invoices(app)] == [made.id]
    change_quantity(app, utc, sub, 12, date(2027, 7, 2))
    run(app, utc, date(2027, 8, 1))
    august = invoices(app)[-1]
    # 2 seats x 120.00 x 183/365 = 120.328… -> 120.33, at the list price
    assert lines(app, august.id) == [
        (LineKind.ADDITION, sub, 2, date(2027, 7, 2), date(2028, 1, 1), 12_033)
    ]


def test_a_purchase_after_its_periods_invoice_was_issued_gets_an_invoice_at_once(
    app: Flask, utc: Tenant
) -> None:
    """January's invoice is issued on 1 January for what the contract had; a purchase on
    15 January is invoiced at once on an invoice of its own for January's period, numbered
    after it, and February's invoice does not charge it again."""
    product = make_product(app, utc.partner.id, price_minor=1_000)
    contract_id = contract(app, utc, date(2026, 12, 1))
    older = buy(app, utc, product, 2, date(2026, 12, 1))
    assign(app, contract_id, older, date(2026, 12, 1))
    run(app, utc, JAN_1)
    december, january = invoices(app)
    assert january.state is InvoiceState.ISSUED and january.purchase_change_id is None
    assert lines(app, january.id) == [(LineKind.ADVANCE, older, 2, JAN_1, FEB_1, 2_000)]
    sub = buy(app, utc, product, 3, date(2027, 1, 15))
    assign(app, contract_id, sub, date(2027, 1, 15))
    *_, made = invoices(app)
    assert made.id not in (december.id, january.id)
    assert (made.period_start, made.period_end, made.state) == (JAN_1, FEB_1, InvoiceState.ISSUED)
    assert made.number is not None and made.number != january.number
    assert lines(app, made.id) == [
        (LineKind.ADVANCE, sub, 3, date(2027, 1, 15), date(2027, 2, 15), 3_000)
    ]
    # again, or a run: nothing new for it
    with (
        time_machine.travel(_at(date(2027, 1, 16)), tick=False),
        app.app_context(),
        get_database(app).sessions() as s,
    ):
        from portal.features.billing.services.purchases import bill_purchases

        assert bill_purchases(s, utc.partner.id, by=STAFF) == []
    run(app, utc, FEB_1)
    run(app, utc, FEB_1)
    february = invoices(app)[-1]
    assert february.period_start == FEB_1
    assert lines(app, february.id) == [
        (LineKind.ADVANCE, older, 2, FEB_1, date(2027, 3, 1), 2_000),
        (LineKind.ADVANCE, sub, 3, date(2027, 2, 15), date(2027, 3, 15), 3_000),
    ]
    assert len(invoices(app)) == 4


def test_a_purchase_whose_invoice_was_missed_is_billed_by_the_next_run(
    app: Flask, utc: Tenant
) -> None:
    """Put on the contract before the provider applied it (nothing to bill then): the next
    day's run invoices it first, for the period it started in, before the day's contracts."""
    product = make_product(app, utc.partner.id, price_minor=1_000)
    contract_id = contract(app, utc, JAN_1, review=True)
    with (
        time_machine.travel(_at(date(2027, 1, 20)), tick=False),
        app.app_context(),
        get_database(app).sessions() as s,
    ):
        bought = licences.purchase(
            s,
            s.get_one(Partner, utc.partner.id),
            s.get_one(Customer, utc.customers["a"].id),
            s.get_one(Product, product),
            5,
            utc.users[BUYER],
        )
        s.commit()
        sub = bought.id
    assign(app, contract_id, sub, date(2027, 1, 20))
    assert invoices(app) == []  # not provisioned yet: nothing to bill
    with time_machine.travel(_at(date(2027, 1, 20), 12), tick=False):
        drain(app)
    run(app, utc, date(2027, 1, 21))
    (made,) = invoices(app)
    assert (made.period_start, made.state) == (JAN_1, InvoiceState.DRAFT)  # review on
    assert lines(app, made.id) == [
        (LineKind.ADVANCE, sub, 5, date(2027, 1, 20), date(2027, 2, 20), 5_000)
    ]


def test_the_purchase_handler_bills_a_provisioned_purchase_once(app: Flask, utc: Tenant) -> None:
    """``billing.purchase`` (to be queued when a purchase is provisioned): its invoice at once,
    and nothing more when it comes again."""
    from portal.features.billing.services.purchases import PURCHASE_KIND, bill_purchase
    from portal.features.licences.models import LicenceChange
    from portal.outbox.handlers import Done

    product = make_product(app, utc.partner.id, price_minor=1_000)
    contract_id = contract(app, utc, JAN_1)
    sub = buy(app, utc, product, 2, date(2027, 1, 5), billed_at_once=False)
    with app.app_context(), get_database(app).sessions() as s:
        change_id = s.scalars(
            sa.select(LicenceChange.id).where(LicenceChange.subscription_id == sub)
        ).one()
        # provisioned, on no contract yet: the handler puts it on the default one
        assert s.get_one(Subscription, sub).billing_contract_id is None
    assert invoices(app) == []
    for _ in range(2):
        with (
            time_machine.travel(_at(date(2027, 1, 5), 12), tick=False),
            app.app_context(),
            get_database(app).sessions() as s,
        ):
            item = OutboxItem(kind=PURCHASE_KIND, payload={"change_id": change_id})
            assert isinstance(bill_purchase(item, s), Done)
            s.commit()
    (made,) = invoices(app)
    assert (made.period_start, made.state) == (JAN_1, InvoiceState.ISSUED)
    assert made.billing_contract_id == contract_id
    assert lines(app, made.id) == [
        (LineKind.ADVANCE, sub, 2, date(2027, 1, 5), date(2027, 2, 5), 2_000)
    ]


def test_a_purchase_put_on_a_contract_before_it_was_provisioned_is_invoiced_when_it_is(
    app: Flask, utc: Tenant
) -> None:
    """Staff put the pending purchase on the contract (nothing to bill yet); the provider then
    applies it and the provisioning queues ``billing.purchase``: the invoice is made by the
    worker, with no billing run."""
    product = make_product(app, utc.partner.id, price_minor=1_000)
    contract_id = contract(app, utc, JAN_1)
    day = date(2027, 1, 10)
    sub = request(app, utc, product, 3, day)
    assign(app, contract_id, sub, day)
    assert invoices(app) == [], "nothing was provisioned yet"
    with time_machine.travel(_at(day, 12), tick=False):
        drain(app)
    (made,) = invoices(app)
    assert made.purchase_change_id is not None and made.period_start == JAN_1
    assert lines(app, made.id) == [(LineKind.ADVANCE, sub, 3, day, date(2027, 2, 10), 3_000)]
    with time_machine.travel(_at(day, 13), tick=False):
        drain(app)
    assert len(invoices(app)) == 1


def three_months_in_advance(sub: int, start: date) -> list[tuple[Any, ...]]:
    """Two seats at 1,000 a month, billed in advance month by month from ``start``."""
    months = [start + relativedelta(months=n) for n in range(4)]
    return [(LineKind.ADVANCE, sub, 2, begin, end, 2_000) for begin, end in pairwise(months)]


@pytest.mark.parametrize("applied_on", [FEB_1, date(2027, 2, 3)])
def test_a_purchase_applied_in_a_later_period_than_it_was_requested_in_is_billed_every_day(
    app: Flask, utc: Tenant, applied_on: date
) -> None:
    """Monthly contract from the 1st; requested on 31 January, applied by the provider on
    1 February (before February's run) or on 3 February (after it): the subscription starts
    when the provider created it, and every day from then is billed exactly once, across the
    purchase's invoice and the runs that follow (none before: the provider had no seats)."""
    product = make_product(app, utc.partner.id, price_minor=1_000)
    contract_id = contract(app, utc, JAN_1)
    sub = request(app, utc, product, 2, date(2027, 1, 31))
    assign(app, contract_id, sub, date(2027, 1, 31))
    if applied_on == FEB_1:
        apply(app, FEB_1)
        run(app, utc, FEB_1)
    else:
        run(app, utc, FEB_1)
        apply(app, applied_on)
    run(app, utc, date(2027, 3, 1))
    run(app, utc, date(2027, 4, 1))
    purchase = [i for i in invoices(app) if i.purchase_change_id is not None]
    assert len(purchase) == 1
    assert billed(app, sub) == three_months_in_advance(sub, applied_on)


@pytest.mark.parametrize("applied_on", [JAN_1, date(2027, 1, 3)])
def test_a_purchase_requested_before_its_contracts_first_day_and_applied_on_or_after_it(
    app: Flask, utc: Tenant, applied_on: date
) -> None:
    """Requested on 31 December, the day before the contract's first day, applied on 1 or
    3 January: the subscription starts on the provider's day and its periods are each billed
    exactly once (the first one is not lost), before or after January's run."""
    product = make_product(app, utc.partner.id, price_minor=1_000)
    contract_id = contract(app, utc, JAN_1)
    sub = request(app, utc, product, 2, date(2026, 12, 31))
    assign(app, contract_id, sub, date(2026, 12, 31))
    if applied_on == JAN_1:
        apply(app, JAN_1)
        run(app, utc, JAN_1)
    else:
        run(app, utc, JAN_1)
        apply(app, applied_on)
    run(app, utc, FEB_1)
    run(app, utc, date(2027, 3, 1))
    assert billed(app, sub) == three_months_in_advance(sub, applied_on)


def test_a_seat_added_after_a_purchase_applied_in_a_later_period_is_settled_once(
    app: Flask, utc: Tenant
) -> None:
    """Requested 31 January, applied 3 February (the subscription's periods start then), a
    seat added on 10 February: charged once, from 10 February to the end of its period."""
    product = make_product(app, utc.partner.id, price_minor=2_800)
    contract_id = contract(app, utc, JAN_1)
    sub = request(app, utc, product, 2, date(2027, 1, 31))
    assign(app, contract_id, sub, date(2027, 1, 31))
    run(app, utc, FEB_1)
    apply(app, date(2027, 2, 3))
    change_quantity(app, utc, sub, 3, date(2027, 2, 10))
    run(app, utc, date(2027, 3, 1))
    run(app, utc, date(2027, 4, 1))
    got = billed(app, sub)
    advance = [line for line in got if line[0] is LineKind.ADVANCE]
    assert [(line[2], line[3], line[4]) for line in advance] == [
        (2, date(2027, 2, 3), date(2027, 3, 3)),
        (3, date(2027, 3, 3), date(2027, 4, 3)),
        (3, date(2027, 4, 3), date(2027, 5, 3)),
    ]
    additions = [line for line in got if line[0] is LineKind.ADDITION]
    assert [(line[2], line[3], line[4], line[5]) for line in additions] == [
        (1, date(2027, 2, 10), date(2027, 3, 3), 2_100),  # 21 of the period's 28 days
    ]


def test_a_purchase_shown_at_no_charge_is_billed_at_no_charge(app: Flask, utc: Tenant) -> None:
    """Bought when the catalogue price was 0 (the customer was shown 0): billed at 0 after
    the price went up, not at the catalogue's price."""
    from portal.features.catalogue.models import ProductPrice

    product = make_product(app, utc.partner.id, price_minor=0)
    contract_id = contract(app, utc, JAN_1)
    sub = buy(app, utc, product, 3, date(2027, 1, 10))
    with app.app_context(), get_database(app).sessions() as s:
        s.execute(
            sa.update(ProductPrice)
            .where(ProductPrice.product_id == product)
            .values(price_minor=1_000)
        )
        s.commit()
    assign(app, contract_id, sub, date(2027, 1, 10))
    assert all(line[5] == 0 for line in billed(app, sub))
    assert all(invoice.total_minor == 0 for invoice in invoices(app))


def test_one_purchase_that_fails_to_bill_does_not_stop_the_run(
    app: Flask, utc: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two purchases left unbilled; billing the first fails: the run logs it and goes on (the
    second purchase and the contract's period are invoiced, the run reports the failure), and
    the next run bills the first."""
    from portal.features.billing.services import purchases

    product = make_product(app, utc.partner.id, price_minor=1_000)
    contract_id = contract(app, utc, date(2026, 12, 1))
    older = buy(app, utc, product, 1, date(2026, 12, 1))
    assign(app, contract_id, older, date(2026, 12, 1))
    # the items that would have billed them at once are lost: the run finds them (within
    # the week it places purchases on no contract)
    first = buy(app, utc, product, 2, date(2026, 12, 27), billed_at_once=False)
    second = buy(app, utc, product, 3, date(2026, 12, 28), billed_at_once=False)
    original = purchases._bill_one

    def failing(db_session: Any, partner_id: int, row: Any, *args: Any) -> int | None:
        if row.subscription_id == first:
            raise RuntimeError("boom")
        return original(db_session, partner_id, row, *args)

    monkeypatch.setattr(purchases, "_bill_one", failing)
    with time_machine.travel(_at(JAN_1, 23), tick=False), app.app_context():
        (done,) = billing_run.run_billing(JAN_1, "schedule", partner_id=utc.partner.id)
    assert done.error is not None and "boom" in done.error
    first_period = (LineKind.ADVANCE, first, 2, date(2026, 12, 27), date(2027, 1, 27), 2_000)
    assert first_period not in billed(app, first)
    assert (LineKind.ADVANCE, second, 3, date(2026, 12, 28), date(2027, 1, 28), 3_000) in billed(
        app, second
    )
    assert (LineKind.ADVANCE, older, 1, JAN_1, FEB_1, 1_000) in billed(app, older)
    monkeypatch.setattr(purchases, "_bill_one", original)
    run(app, utc, date(2027, 1, 2))
    assert first_period in billed(app, first)
    assert len([line for line in billed(app, first) if line == first_period]) == 1


# -- every purchase lands on a contract (issue 14) ---------------------------------------------


def test_a_customer_with_no_contract_gets_a_default_one_at_its_first_purchase(
    app: Flask, utc: Tenant
) -> None:
    """Nobody made a contract: the provisioned purchase lands on a new default contract, monthly
    from the day the provider applied it, and is invoiced at once; the run bills it on."""
    product = make_product(app, utc.partner.id, price_minor=1_000)
    sub = buy(app, utc, product, 3, date(2027, 1, 10))
    with app.app_context(), get_database(app).sessions() as s:
        (made_contract,) = s.scalars(sa.select(BillingContract)).all()
        assert (made_contract.name, made_contract.currency) == ("Default (USD)", "USD")
        assert (made_contract.is_default, made_contract.anchor_on) == (True, date(2027, 1, 10))
        assert s.get_one(Subscription, sub).billing_contract_id == made_contract.id
        placed = s.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == "billing.purchase_placed")
        ).one()
        assert placed.detail["subscription"] == sub
    (made,) = invoices(app)
    assert lines(app, made.id) == [
        (LineKind.ADVANCE, sub, 3, date(2027, 1, 10), date(2027, 2, 10), 3_000)
    ]
    run(app, utc, date(2027, 2, 10))
    assert (LineKind.ADVANCE, sub, 3, date(2027, 2, 10), date(2027, 3, 10), 3_000) in billed(
        app, sub
    )
    # a second purchase lands on the same default contract
    other = buy(app, utc, product, 1, date(2027, 2, 12))
    with app.app_context(), get_database(app).sessions() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(BillingContract)) == 1
        assert s.get_one(Subscription, other).billing_contract_id == made_contract.id


def test_a_purchase_lands_on_the_contract_staff_made_the_default(app: Flask, utc: Tenant) -> None:
    product = make_product(app, utc.partner.id, price_minor=1_000)
    first = contract(app, utc, JAN_1)
    with app.app_context(), get_database(app).sessions() as s:
        customer = s.get_one(Customer, utc.customers["a"].id)
        second = billing.create_contract(
            s,
            customer,
            name="Projects",
            currency="USD",
            frequency="monthly",
            anchor_on=JAN_1,
            by=STAFF,
        )
        assert (s.get_one(BillingContract, first).is_default, second.is_default) == (True, False)
        billing.make_default(s, second, STAFF)
        s.commit()
        second_id = second.id
        assert s.get_one(BillingContract, first).is_default is False
    sub = buy(app, utc, product, 2, date(2027, 1, 3))
    with app.app_context(), get_database(app).sessions() as s:
        assert s.get_one(Subscription, sub).billing_contract_id == second_id
    (made,) = invoices(app)
    assert made.billing_contract_id == second_id


def test_a_purchase_left_on_no_contract_for_more_than_a_week_waits_for_staff(
    app: Flask, utc: Tenant
) -> None:
    """Its item lost, a purchase found on no contract ten days later is not placed by the run:
    billing it then would bill its first period and none of those since. It stays for staff,
    and the customer's contracts page says so; one found within the week is placed."""
    product = make_product(app, utc.partner.id, price_minor=1_000)
    late = buy(app, utc, product, 2, date(2027, 1, 5), billed_at_once=False)
    run(app, utc, date(2027, 1, 15))
    with app.app_context(), get_database(app).sessions() as s:
        assert s.get_one(Subscription, late).billing_contract_id is None
        assert s.scalar(sa.select(sa.func.count()).select_from(BillingContract)) == 0
    assert invoices(app) == []
    recent = buy(app, utc, product, 1, date(2027, 1, 12), billed_at_once=False)
    run(app, utc, date(2027, 1, 15))
    with app.app_context(), get_database(app).sessions() as s:
        assert s.get_one(Subscription, recent).billing_contract_id is not None
        assert s.get_one(Subscription, late).billing_contract_id is None
    staff: Any = app.test_client()
    with time_machine.travel(_at(date(2027, 1, 15), 12), tick=False):
        sign_in(staff, "finance@staff.alpha.example", staff=True)
        page = staff.get(f"/staff/customers/{utc.customers['a'].id}/contracts")
        assert "1 subscription is on no contract and is not invoiced:" in page.get_data(
            as_text=True
        )
