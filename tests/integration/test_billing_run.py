"""The billing run (issue 5; reliability notes C7): one invoice per contract and period, by
database constraint, whatever runs again or at the same time; gapless numbers; proration from
the licence change log, end to end; staff review on and off; the CLI and the schedule."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from portal.core.db import get_database
from portal.features.billing.models import (
    BillingRun,
    BillingRunState,
    BillingSettings,
    CreditNote,
    CreditNoteState,
    Invoice,
    InvoiceLine,
    InvoiceNumberCounter,
    InvoiceState,
)
from portal.features.billing.rules.invoicing import LineKind
from portal.features.billing.services import contracts as billing
from portal.features.billing.services import documents as billing_documents
from portal.features.billing.services import run as billing_run
from portal.features.billing.services import schedule as billing_schedule
from portal.features.billing.services.documents import ConcurrentChange, issue_invoices
from portal.features.catalogue.rules import BillingFrequency, ReductionBehaviour
from portal.features.identity.models import AuditEvent
from portal.outbox.items import run_item
from portal.outbox.models import OutboxItem
from tests.integration.billing_support import (
    PRICE,
    at_noon,
    buy,
    change,
    make_contract,
    make_product,
    set_timezone,
)
from tests.support import Tenant

JAN_1 = date(2026, 1, 1)
FEB_1 = date(2026, 2, 1)


@pytest.fixture
def app(app_factory: Any) -> Flask:
    return app_factory(PORTAL_BROKER_URL="memory://")  # type: ignore[no-any-return]


def _review(app: Flask, partner_id: int, on: bool) -> None:
    with app.app_context(), get_database(app).sessions() as s:
        s.add(BillingSettings(partner_id=partner_id, invoice_review=on))
        s.commit()


def _run(app: Flask, on: date, partner_id: int, **kwargs: Any) -> BillingRun:
    with app.app_context():
        (run,) = billing_run.run_billing(on, "test", partner_id=partner_id, **kwargs)
    return run


def _invoices(app: Flask, *where: Any) -> list[Invoice]:
    with app.app_context(), get_database(app).sessions() as s:
        return list(s.scalars(select(Invoice).where(*where).order_by(Invoice.id)))


def _lines(app: Flask, invoice_id: int) -> list[InvoiceLine]:
    with app.app_context(), get_database(app).sessions() as s:
        return list(
            s.scalars(
                select(InvoiceLine)
                .where(InvoiceLine.invoice_id == invoice_id)
                .order_by(InvoiceLine.position)
            )
        )


@pytest.fixture
def monthly(app: Flask, tenant: Tenant) -> dict[str, int]:
    """Customers a and b each on a monthly contract from 1 January with 10 seats bought on
    1 December (own periods on the 1st)."""
    product = make_product(app, tenant.partner.id)
    ids: dict[str, int] = {"product": product}
    for key in ("a", "b"):
        contract = make_contract(app, tenant.customers[key].id, anchor_on=JAN_1)
        ids[f"contract:{key}"] = contract
        ids[f"sub:{key}"] = buy(app, contract, product, seats=10, on=date(2025, 12, 1))
    return ids


# -- C7: idempotency ----------------------------------------------------------------------------


def test_running_a_period_twice_creates_nothing_new(app: Flask, tenant: Tenant, monthly) -> None:
    first = _run(app, JAN_1, tenant.partner.id)
    assert (first.state, first.invoices_created, first.lines_created) == (
        BillingRunState.DONE,
        2,
        2,
    )
    again = _run(app, JAN_1, tenant.partner.id)
    assert again.state is BillingRunState.DONE
    assert (again.invoices_created, again.lines_created, again.contracts_skipped) == (0, 0, 2)
    invoices = _invoices(app)
    assert len(invoices) == 2
    assert {(i.billing_contract_id, i.period_start) for i in invoices} == {
        (monthly["contract:a"], JAN_1),
        (monthly["contract:b"], JAN_1),
    }
    # a day on which no contract's period starts bills nothing
    assert _run(app, date(2026, 1, 2), tenant.partner.id).contracts_total == 0


def test_the_constraint_not_a_check_keeps_a_second_insert_out(
    app: Flask, tenant: Tenant, monthly, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run whose read of what is invoiced is stale (as when another run commits between the
    read and the insert) still inserts nothing twice: the unique constraint decides."""
    _run(app, JAN_1, tenant.partner.id)
    real = billing_run._due_contracts

    def stale(session: Any, partner_id: int, on: date) -> tuple[list[int], int]:
        due, _ = real(session, partner_id, on)
        return sorted([monthly["contract:a"], monthly["contract:b"], *due]), 0

    monkeypatch.setattr(billing_run, "_due_contracts", stale)
    run = _run(app, JAN_1, tenant.partner.id)
    assert (run.invoices_created, run.lines_created, run.contracts_skipped) == (0, 0, 2)
    assert len(_invoices(app)) == 2
    with app.app_context(), get_database(app).sessions() as s:
        assert s.scalar(select(func.count(InvoiceLine.id))) == 2


def test_two_runs_at_once_make_one_invoice_per_contract_and_numbers_without_gaps(
    app: Flask, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    if get_database(app).engine.dialect.name != "postgresql":
        pytest.skip("SQLite serialises writers: concurrent runs are a PostgreSQL question")
    monkeypatch.setattr(billing_run, "CHUNK", 4)  # many small transactions interleave
    _review(app, tenant.partner.id, False)
    product = make_product(app, tenant.partner.id)
    contracts = []
    for index in range(24):
        customer = tenant.customers["a" if index % 2 else "b"]
        contract = make_contract(app, customer.id, anchor_on=JAN_1, name=f"C{index}")
        buy(app, contract, product, seats=1 + index, on=date(2025, 12, 1))
        contracts.append(contract)
    start = threading.Barrier(3)
    results: list[Any] = []

    def run() -> None:
        start.wait()
        try:
            results.append(_run(app, JAN_1, tenant.partner.id))
        except Exception as error:
            results.append(error)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(isinstance(result, BillingRun) for result in results), results
    assert sum(result.invoices_created for result in results) == 24
    assert all(result.state is BillingRunState.DONE for result in results)
    invoices = _invoices(app)
    assert sorted(i.billing_contract_id for i in invoices) == sorted(contracts)
    numbers = sorted(int(i.number[4:]) for i in invoices if i.number)
    assert numbers == list(range(1, 25))
    assert {i.state for i in invoices} == {InvoiceState.ISSUED}


# -- numbering --------------------------------------------------------------------------------


def test_numbers_have_no_gap_after_a_failed_transaction(
    app: Flask, tenant: Tenant, monthly
) -> None:
    _run(app, JAN_1, tenant.partner.id)  # review on: two drafts
    first, second = _invoices(app)
    with app.app_context(), get_database(app).sessions() as s:
        partner = s.get_one(type(tenant.partner), tenant.partner.id)
        issued = issue_invoices(s, partner, [first.id], "staff", today=JAN_1)
        assert [i.number for i in issued] == ["INV-000001"]
        s.rollback()  # the transaction fails after taking a number
    with app.app_context(), get_database(app).sessions() as s:
        partner = s.get_one(type(tenant.partner), tenant.partner.id)
        issued = issue_invoices(s, partner, [second.id, first.id], "staff", today=JAN_1)
        s.commit()
    assert [(i.id, i.number) for i in issued] == [
        (first.id, "INV-000001"),
        (second.id, "INV-000002"),
    ]
    with app.app_context(), get_database(app).sessions() as s:
        counter = s.scalars(select(InvoiceNumberCounter)).one()
        assert counter.last_number == 2


def test_a_run_that_fails_part_way_leaves_no_gap_and_a_rerun_finishes_it(
    app: Flask, tenant: Tenant, monthly, monkeypatch: pytest.MonkeyPatch
) -> None:
    _review(app, tenant.partner.id, False)
    monkeypatch.setattr(billing_run, "CHUNK", 1)
    real = billing_run.issue_drafts
    calls: list[int] = []

    def fail_second(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        numbers = real(*args, **kwargs)  # takes the number, then the transaction fails
        if len(calls) == 2:
            raise RuntimeError("the database went away")
        return numbers

    monkeypatch.setattr(billing_run, "issue_drafts", fail_second)
    with pytest.raises(RuntimeError):
        _run(app, JAN_1, tenant.partner.id)
    with app.app_context(), get_database(app).sessions() as s:
        failed = s.scalars(select(BillingRun)).one()
        assert failed.state is BillingRunState.FAILED
        assert "the database went away" in (failed.error or "")
        assert failed.invoices_created == 1
    assert [i.number for i in _invoices(app)] == ["INV-000001"]
    monkeypatch.setattr(billing_run, "issue_drafts", real)
    again = _run(app, JAN_1, tenant.partner.id)
    assert (again.invoices_created, again.contracts_skipped) == (1, 1)
    assert [i.number for i in _invoices(app)] == ["INV-000001", "INV-000002"]


# -- review ---------------------------------------------------------------------------------------


def test_with_review_on_invoices_wait_as_drafts_and_staff_issue_them(
    app: Flask, tenant: Tenant, monthly
) -> None:
    _run(app, JAN_1, tenant.partner.id)
    drafts = _invoices(app)
    assert {(i.state, i.number, i.issued_on) for i in drafts} == {(InvoiceState.DRAFT, None, None)}
    with app.app_context(), get_database(app).sessions() as s:
        assert s.scalar(select(func.count(OutboxItem.id))) == 0  # nobody is told of a draft
        partner = s.get_one(type(tenant.partner), tenant.partner.id)
        issue_invoices(s, partner, [i.id for i in drafts], "finance@staff", today=date(2026, 1, 2))
        s.commit()
        items = list(s.scalars(select(OutboxItem)))
        assert {item.kind for item in items} == {billing_documents.ISSUED_KIND}
        assert len(items) == 2
        assert (
            s.scalar(select(func.count(AuditEvent.id)).where(AuditEvent.action == "invoice.issued"))
            == 2
        )
    issued = _invoices(app)
    assert [(i.state, i.number, i.issued_on, i.due_on) for i in issued] == [
        (InvoiceState.ISSUED, "INV-000001", date(2026, 1, 2), date(2026, 2, 1)),
        (InvoiceState.ISSUED, "INV-000002", date(2026, 1, 2), date(2026, 2, 1)),
    ]
    with app.app_context(), get_database(app).sessions() as s:
        partner = s.get_one(type(tenant.partner), tenant.partner.id)
        assert issue_invoices(s, partner, [issued[0].id], "again") == []  # no longer drafts
        with pytest.raises(billing.ServiceError):
            billing_documents.issue_invoice(s, partner, s.get_one(Invoice, issued[0].id), "again")


def test_with_review_off_the_run_issues_at_once(app: Flask, tenant: Tenant, monthly) -> None:
    _review(app, tenant.partner.id, False)
    _run(app, JAN_1, tenant.partner.id, today=JAN_1)
    invoices = _invoices(app)
    assert [(i.state, i.number, i.issued_on, i.due_on, i.issued_by) for i in invoices] == [
        (InvoiceState.ISSUED, "INV-000001", JAN_1, date(2026, 1, 31), "test"),
        (InvoiceState.ISSUED, "INV-000002", JAN_1, date(2026, 1, 31), "test"),
    ]
    with app.app_context(), get_database(app).sessions() as s:
        kinds = [item.kind for item in s.scalars(select(OutboxItem))]
    assert kinds == [billing_documents.ISSUED_KIND, billing_documents.ISSUED_KIND]


# -- what is on the invoice ---------------------------------------------------------------------


def test_a_seat_added_mid_period_is_prorated_on_the_next_invoice(
    app: Flask, tenant: Tenant, monthly
) -> None:
    """10 seats from 1 December; 2 more on 13 January: the February invoice charges 12 seats
    in advance and the 2 added for 19 of January's 31 days (the day of the change counts)."""
    sub = monthly["sub:a"]
    change(app, sub, 12, on=date(2026, 1, 13))
    _run(app, JAN_1, tenant.partner.id)
    january = _invoices(app, Invoice.billing_contract_id == monthly["contract:a"])[0]
    assert [(line.kind, line.quantity, line.amount_minor) for line in _lines(app, january.id)] == [
        (LineKind.ADVANCE, 10, 10 * PRICE)
    ]
    _run(app, FEB_1, tenant.partner.id)
    february = _invoices(
        app, Invoice.billing_contract_id == monthly["contract:a"], Invoice.period_start == FEB_1
    )[0]
    lines = _lines(app, february.id)
    assert [
        (
            line.kind,
            line.quantity,
            line.period_start,
            line.period_end,
            line.days,
            line.total_days,
            line.amount_minor,
        )
        for line in lines
    ] == [
        (LineKind.ADVANCE, 12, FEB_1, date(2026, 3, 1), None, None, 12 * PRICE),
        # 2 seats x 10.00 x 19/31 = 12.258… -> 12.26
        (LineKind.ADDITION, 2, date(2026, 1, 13), FEB_1, 19, 31, 1226),
    ]
    assert (february.subtotal_minor, february.tax_minor, february.total_minor) == (
        13226,
        0,
        13226,
    )
    assert (february.period_start, february.period_end) == (FEB_1, date(2026, 3, 1))


def test_a_reduction_inside_its_window_is_credited_and_outside_it_is_not(
    app: Flask, tenant: Tenant
) -> None:
    windowed = make_product(app, tenant.partner.id, name="Windowed")
    anytime = make_product(
        app, tenant.partner.id, name="Anytime", reduction=ReductionBehaviour.ALLOWED
    )
    contract = make_contract(app, tenant.customers["a"].id, anchor_on=JAN_1)
    inside = buy(app, contract, windowed, seats=10, on=date(2025, 12, 1))
    outside = buy(app, contract, windowed, seats=10, on=date(2025, 12, 1))
    no_refund = buy(app, contract, anytime, seats=10, on=date(2025, 12, 1))
    change(app, inside, 13, on=date(2026, 1, 10))  # 3 added: their window opens
    change(app, inside, 11, on=date(2026, 1, 12))  # 2 removed within 168 hours: credited
    change(app, outside, 8, on=date(2026, 1, 12))  # term window long closed: no refund
    change(app, no_refund, 7, on=date(2026, 1, 12))  # reducible any time, never refunded
    _run(app, FEB_1, tenant.partner.id)
    (invoice,) = _invoices(app)
    kinds = [(line.subscription_id, line.kind, line.quantity) for line in _lines(app, invoice.id)]
    assert kinds == [
        (inside, LineKind.ADVANCE, 11),
        (inside, LineKind.ADDITION, 3),
        (outside, LineKind.ADVANCE, 8),
        (no_refund, LineKind.ADVANCE, 7),
    ]
    with app.app_context(), get_database(app).sessions() as s:
        (credit,) = s.scalars(select(CreditNote)).all()
        assert (credit.invoice_id, credit.state, credit.number) == (
            invoice.id,
            CreditNoteState.DRAFT,
            None,
        )
        assert [
            (line.kind, line.quantity, line.days, line.total_days, line.amount_minor)
            for line in credit.lines
        ] == [
            # 2 seats x 10.00 x 20/31 = 12.903… -> 12.90
            (LineKind.REDUCTION_CREDIT, 2, 20, 31, 1290)
        ]
        assert credit.total_minor == 1290


def test_changes_count_on_the_partners_day_not_utcs(app: Flask, tenant: Tenant) -> None:
    """A seat added at 23:30 on 31 January in New York (04:30 on 1 February UTC) belongs to
    January: it is settled on February's invoice, for 1 day of 31."""
    zone = "America/New_York"
    set_timezone(app, tenant.partner.id, zone)
    product = make_product(app, tenant.partner.id)
    contract = make_contract(app, tenant.customers["a"].id, anchor_on=JAN_1)
    sub = buy(app, contract, product, seats=10, on=date(2025, 12, 1), zone=zone)
    late = datetime(2026, 2, 1, 4, 30, tzinfo=UTC)
    change(app, sub, 11, on=date(2026, 1, 31), at=late)
    _run(app, FEB_1, tenant.partner.id)
    (invoice,) = _invoices(app)
    assert [
        (line.kind, line.quantity, line.days, line.total_days, line.amount_minor)
        for line in _lines(app, invoice.id)
    ] == [
        (LineKind.ADVANCE, 11, None, None, 11 * PRICE),
        (LineKind.ADDITION, 1, 1, 31, 32),  # 10.00 x 1/31 = 0.3225… -> 0.32
    ]


def test_a_purchase_is_charged_in_advance_for_the_period_it_starts_in_not_on_the_next(
    app: Flask, tenant: Tenant
) -> None:
    """Issue 13, defect 8: a purchase on 20 January is invoiced in advance, on an invoice of
    its own for January's period (the run of the 1st came before it); February's invoice
    charges its next period in advance and does not charge the first again."""
    product = make_product(app, tenant.partner.id)
    contract = make_contract(app, tenant.customers["a"].id, anchor_on=JAN_1)
    sub = buy(app, contract, product, seats=4, on=date(2026, 1, 20))
    _run(app, FEB_1, tenant.partner.id)
    purchase, february = _invoices(app)
    assert purchase.purchase_change_id is not None
    assert (purchase.period_start, purchase.period_end) == (JAN_1, FEB_1)
    assert [
        (line.kind, line.quantity, line.period_start, line.period_end, line.amount_minor)
        for line in _lines(app, purchase.id)
    ] == [(LineKind.ADVANCE, 4, date(2026, 1, 20), FEB_1 + timedelta(days=19), 4 * PRICE)]
    assert february.purchase_change_id is None
    assert [
        (line.kind, line.quantity, line.period_start, line.period_end, line.amount_minor)
        for line in _lines(app, february.id)
    ] == [
        # its next own period starts in the contract's February period: in advance
        (LineKind.ADVANCE, 4, date(2026, 2, 20), date(2026, 3, 20), 4 * PRICE),
    ]
    assert purchase.total_minor + february.total_minor == 8 * PRICE
    assert sub


def test_a_bundle_is_one_line_naming_its_parts(app: Flask, tenant: Tenant) -> None:
    bundle = make_product(
        app, tenant.partner.id, name="Secure Mail", components=("Exchange", "Defender")
    )
    contract = make_contract(app, tenant.customers["a"].id, anchor_on=JAN_1)
    buy(app, contract, bundle, seats=5, on=date(2025, 12, 1))
    _run(app, JAN_1, tenant.partner.id)
    (invoice,) = _invoices(app)
    assert [(line.description, line.amount_minor) for line in _lines(app, invoice.id)] == [
        ("Secure Mail (Exchange, Defender)", 5 * PRICE)
    ]


def test_annual_prepaid_discount_is_not_given_on_seats_added_mid_term(
    app: Flask, tenant: Tenant
) -> None:
    annual = make_product(
        app, tenant.partner.id, price_minor=12_000, frequency=BillingFrequency.ANNUAL
    )
    contract = make_contract(
        app, tenant.customers["a"].id, anchor_on=JAN_1, prepaid_discount="0.05", tax_rate="0.2"
    )
    sub = buy(app, contract, annual, seats=10, on=JAN_1)
    change(app, sub, 12, on=date(2026, 7, 2))  # 2 seats for 183 of 365 days
    _run(app, JAN_1, tenant.partner.id)  # the purchase first, on an invoice of its own
    _run(app, FEB_1, tenant.partner.id)
    _run(app, date(2026, 8, 1), tenant.partner.id)
    invoices = _invoices(app)
    by_period = {i.period_start: i for i in invoices}
    assert FEB_1 not in by_period  # nothing more to charge in February
    bought = _lines(app, by_period[JAN_1].id)
    # the purchase on 1 January: its whole first year in advance, with the upfront discount
    # (issue 13, defect 8: not in February as an addition at the list price)
    assert by_period[JAN_1].purchase_change_id is not None
    assert [(line.kind, line.quantity, line.amount_minor) for line in bought] == [
        (LineKind.ADVANCE, 10, 114_000)
    ]
    assert by_period[JAN_1].tax_minor == 22_800
    august = _lines(app, by_period[date(2026, 8, 1)].id)
    # 2 seats x 120.00 x 183/365 = 120.328… -> 120.33, at the list price
    assert [
        (line.kind, line.quantity, line.days, line.total_days, line.amount_minor) for line in august
    ] == [(LineKind.ADDITION, 2, 183, 365, 12_033)]
    assert by_period[date(2026, 8, 1)].tax_minor == 2407  # 20 % of 120.33, rounded once
    _run(app, date(2027, 1, 1), tenant.partner.id)
    renewal = _lines(app, _invoices(app, Invoice.period_start == date(2027, 1, 1))[0].id)
    # the renewal year in advance: 12 seats at 120.00 less 5 % = 114.00 each
    assert [(line.kind, line.quantity, line.amount_minor) for line in renewal] == [
        (LineKind.ADVANCE, 12, 12 * 11_400)
    ]


def test_a_contract_without_a_price_in_its_currency_is_reported_and_the_rest_billed(
    app: Flask, tenant: Tenant, monthly
) -> None:
    euro = make_contract(app, tenant.customers["a"].id, anchor_on=JAN_1, currency="EUR")
    buy(app, euro, monthly["product"], seats=3, on=date(2025, 12, 1))  # priced in USD only
    run = _run(app, JAN_1, tenant.partner.id)
    assert run.state is BillingRunState.FAILED
    assert run.invoices_created == 2
    assert "has no price in EUR" in (run.error or "")
    assert len(_invoices(app)) == 2


# -- how runs are started -----------------------------------------------------------------------


def test_the_cli_prints_what_it_made_and_refuses_a_bad_date(
    app: Flask, tenant: Tenant, monthly
) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(args=["portal", "billing", "run", "--date", "2026-01-01"])
    assert result.exit_code == 0, result.output
    assert "Alpha Cloud, 2026-01-01: 2 invoices created, 2 lines, 0 credit notes" in result.output
    again = runner.invoke(args=["portal", "billing", "run", "--date", "2026-01-01"])
    assert "0 invoices created, 0 lines" in again.output
    assert "2 contracts already invoiced" in again.output
    for bad in ("2026-13-01", "01/02/2026", "yesterday"):
        refused = runner.invoke(args=["portal", "billing", "run", "--date", bad])
        assert refused.exit_code == 2
        assert "Invalid value for '--date'" in refused.output
        assert "YYYY-MM-DD" in refused.output or "%Y-%m-%d" in refused.output
    assert len(_invoices(app)) == 2
    future = runner.invoke(args=["portal", "billing", "run", "--date", "2999-01-01"])
    assert future.exit_code == 1
    assert "2999-01-01 is after today" in future.output
    assert len(_invoices(app)) == 2
    unknown = runner.invoke(args=["portal", "billing", "run", "--partner", "nobody"])
    assert unknown.exit_code == 1 and "no partner with the slug 'nobody'" in unknown.output


def test_the_staff_button_queues_a_run_that_a_worker_runs_once(
    app: Flask, tenant: Tenant, monthly
) -> None:
    with app.app_context(), get_database(app).sessions() as s:
        partner = s.get_one(type(tenant.partner), tenant.partner.id)
        with pytest.raises(billing.ServiceError):
            billing_schedule.request_billing_run(
                s, partner, date.today() + timedelta(days=2), "staff"
            )
        run = billing_schedule.request_billing_run(s, partner, JAN_1, "admin@staff")
        s.commit()
        item = s.scalars(
            select(OutboxItem).where(OutboxItem.kind == billing_schedule.RUN_KIND)
        ).one()
        assert run.state is BillingRunState.QUEUED
    with app.app_context():
        assert run_item(app, item.id) == "done"
    with app.app_context(), get_database(app).sessions() as s:
        done = s.get_one(BillingRun, run.id)
        assert (done.state, done.invoices_created, done.started_by) == (
            BillingRunState.DONE,
            2,
            "admin@staff",
        )
        assert done.finished_at is not None
        assert s.scalar(select(func.count(BillingRun.id))) == 1


def test_the_schedule_queues_each_missed_day_once(app: Flask, tenant: Tenant, monthly) -> None:
    now = datetime(2026, 2, 3, 9, 0, tzinfo=UTC)
    first = billing_schedule.schedule_due_runs(app, now)
    assert len(first) == billing_schedule.CATCH_UP_DAYS  # a week back, up to today
    assert billing_schedule.schedule_due_runs(app, now) == []  # nothing again the same day
    later = billing_schedule.schedule_due_runs(app, now + timedelta(days=1))
    assert len(later) == 1
    with app.app_context(), get_database(app).sessions() as s:
        days = list(s.scalars(select(BillingRun.run_on).order_by(BillingRun.run_on)))
        assert days == [date(2026, 1, 28) + timedelta(days=n) for n in range(8)]
        items = list(
            s.scalars(select(OutboxItem.id).where(OutboxItem.kind == billing_schedule.RUN_KIND))
        )
    with app.app_context():
        for item_id in items:
            assert run_item(app, item_id) == "done"
    february = _invoices(app, Invoice.period_start == FEB_1)
    assert len(february) == 2  # 1 February was among the days caught up


def test_the_beat_schedule_has_the_billing_entry(app: Flask) -> None:
    from portal.default_plugin.schedule import BILLING_SCHEDULE_TASK
    from portal.integrations.registry import integrations
    from portal.outbox.celery_app import make_celery

    entry = integrations(app).beat_schedule["portal.billing.schedule"]
    assert entry["task"] == BILLING_SCHEDULE_TASK
    assert BILLING_SCHEDULE_TASK in make_celery(app).tasks


def test_issue_refuses_when_someone_else_issued_meanwhile(
    app: Flask, tenant: Tenant, monthly
) -> None:
    _run(app, JAN_1, tenant.partner.id)
    draft = _invoices(app)[0]
    from portal.features.billing.services.documents import Draft, billing_settings, issue_drafts

    with app.app_context(), get_database(app).sessions() as s:
        issue_invoices(s, s.get_one(type(tenant.partner), tenant.partner.id), [draft.id], "a")
        s.commit()
        with pytest.raises(ConcurrentChange):
            issue_drafts(
                s,
                tenant.partner.id,
                [Draft(draft.id, draft.customer_id, 30)],
                today=JAN_1,
                by="b",
                settings=billing_settings(s, tenant.partner.id),
            )
        s.rollback()
    assert [i.number for i in _invoices(app)] == ["INV-000001", None]
    assert at_noon(JAN_1)
