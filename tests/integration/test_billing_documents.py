"""Invoices after the run: voiding (audited, with its credit note), what is paid and owed
derived from the ledger, the mail to Finance Managers, discarding a draft, and the read side
the pages use (lists, filters, the dashboard, deferred revenue)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from portal.core.db import get_database
from portal.core.errors import ServiceError
from portal.core.scoping import Scope, set_scope
from portal.features.billing.models import (
    BillingSettings,
    CreditNote,
    CreditNoteKind,
    Invoice,
    InvoicePayment,
    InvoiceState,
    InvoiceStatus,
    PaymentKind,
)
from portal.features.billing.rules.invoicing import ContractFrequency
from portal.features.billing.services import documents as billing_documents
from portal.features.billing.services import queries as billing_queries
from portal.features.billing.services import run as billing_run
from portal.features.catalogue.rules import BillingFrequency
from portal.features.identity.models import AuditEvent, Membership, User
from portal.features.tenancy.models import Partner
from portal.outbox.items import run_item
from portal.outbox.models import OutboxItem
from tests.conftest import Mailbox
from tests.integration.billing_support import PRICE, buy, change, make_contract, make_product
from tests.support import Tenant

JAN_1 = date(2026, 1, 1)
FEB_1 = date(2026, 2, 1)


@pytest.fixture
def app(app_factory: Any) -> Flask:
    return app_factory(PORTAL_BROKER_URL="memory://")  # type: ignore[no-any-return]


@pytest.fixture
def issued(app: Flask, tenant: Tenant) -> dict[str, int]:
    """January invoices, issued on 1 January and due on the 31st: customer a 100.00 (10
    seats), customer b 50.00 (5 seats)."""
    with app.app_context(), get_database(app).sessions() as s:
        s.add(BillingSettings(partner_id=tenant.partner.id, invoice_review=False))
        s.commit()
    product = make_product(app, tenant.partner.id)
    ids: dict[str, int] = {}
    for key, seats in (("a", 10), ("b", 5)):
        contract = make_contract(app, tenant.customers[key].id, anchor_on=JAN_1)
        ids[f"sub:{key}"] = buy(app, contract, product, seats=seats, on=date(2025, 12, 1))
    with app.app_context():
        billing_run.run_billing(JAN_1, "test", partner_id=tenant.partner.id, today=JAN_1)
    with app.app_context(), get_database(app).sessions() as s:
        for invoice in s.scalars(select(Invoice)):
            key = "a" if invoice.customer_id == tenant.customers["a"].id else "b"
            ids[key] = invoice.id
    return ids


def _pay(
    app: Flask,
    invoice_id: int,
    amount: int,
    reference: str,
    kind: PaymentKind = PaymentKind.PAYMENT,
) -> InvoicePayment | None:
    with app.app_context(), get_database(app).sessions() as s:
        invoice = s.get_one(Invoice, invoice_id)
        payment = billing_documents.record_payment(
            s,
            invoice,
            kind=kind,
            amount_minor=amount,
            gateway_key="demo",
            gateway_reference=reference,
            received_at=datetime(2026, 1, 10, tzinfo=UTC),
            recorded_by="webhook",
        )
        s.commit()
        return payment


def _scoped(app: Flask, partner_id: int, customer_id: int | None = None) -> Any:
    session = get_database(app).sessions()
    set_scope(session, Scope(partner_id, customer_id))
    return session


# -- what is owed, derived ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payments", "today", "status", "balance"),
    [
        ((), date(2026, 1, 15), InvoiceStatus.OPEN, 10_000),
        ((4_000,), date(2026, 1, 15), InvoiceStatus.PARTIALLY_PAID, 6_000),
        ((4_000,), date(2026, 2, 1), InvoiceStatus.OVERDUE, 6_000),  # due 31 Jan
        ((), date(2026, 1, 31), InvoiceStatus.OPEN, 10_000),  # due today is not late
        ((4_000, 6_000), date(2026, 3, 1), InvoiceStatus.PAID, 0),
        ((12_000,), date(2026, 1, 15), InvoiceStatus.PAID, -2_000),  # paid too much: owed back
    ],
)
def test_status_and_balance_follow_from_the_ledger(
    app: Flask, tenant: Tenant, issued, payments, today, status, balance
) -> None:
    for number, amount in enumerate(payments):
        _pay(app, issued["a"], amount, f"pi_{number}")
    with app.app_context(), _scoped(app, tenant.partner.id, tenant.customers["a"].id) as s:
        detail = billing_queries.invoice_detail(s, issued["a"], today=today)
        assert detail is not None
        assert (detail.status, detail.balance_minor) == (status, balance)
        page = billing_queries.list_invoices(s, today=today)
        assert [(row.invoice.id, row.status, row.balance_minor) for row in page.rows] == [
            (issued["a"], status, balance)
        ]  # the scoped session shows customer a's invoice only
        filtered = billing_queries.list_invoices(s, today=today, statuses=[status])
        assert filtered.total == 1
        others = [s_ for s_ in InvoiceStatus if s_ is not status]
        assert billing_queries.list_invoices(s, today=today, statuses=others).total == 0


def test_a_refund_lowers_what_was_paid(app: Flask, tenant: Tenant, issued) -> None:
    _pay(app, issued["a"], 10_000, "pi_1")
    _pay(app, issued["a"], 2_500, "re_1", PaymentKind.REFUND)
    with app.app_context(), _scoped(app, tenant.partner.id) as s:
        detail = billing_queries.invoice_detail(s, issued["a"], today=date(2026, 1, 15))
        assert detail is not None
        assert (detail.paid_minor, detail.balance_minor, detail.status) == (
            7_500,
            2_500,
            InvoiceStatus.PARTIALLY_PAID,
        )


def test_a_payment_is_recorded_once_per_gateway_reference(
    app: Flask, tenant: Tenant, issued
) -> None:
    assert _pay(app, issued["a"], 4_000, "pi_same") is not None
    assert _pay(app, issued["a"], 4_000, "pi_same") is None  # the webhook again
    with app.app_context(), get_database(app).sessions() as s:
        assert s.scalar(select(func.count(InvoicePayment.id))) == 1
        assert (
            s.scalar(
                select(func.count(AuditEvent.id)).where(
                    AuditEvent.action == "invoice.payment_recorded"
                )
            )
            == 1
        )
        invoice = s.get_one(Invoice, issued["a"])
        for bad in (0, -5, True):
            with pytest.raises(ServiceError):
                billing_documents.record_payment(
                    s,
                    invoice,
                    kind=PaymentKind.PAYMENT,
                    amount_minor=bad,
                    gateway_key="demo",
                    gateway_reference=f"bad-{bad}",
                    received_at=datetime(2026, 1, 10, tzinfo=UTC),
                    recorded_by="x",
                )
        with pytest.raises(ServiceError, match="EUR"):
            billing_documents.record_payment(
                s,
                invoice,
                kind=PaymentKind.PAYMENT,
                amount_minor=100,
                gateway_key="demo",
                gateway_reference="eur",
                received_at=datetime(2026, 1, 10, tzinfo=UTC),
                recorded_by="x",
                currency="EUR",
            )


def test_the_dashboard_sums_what_is_open_and_counts_what_is_overdue(
    app: Flask, tenant: Tenant, issued
) -> None:
    customer = tenant.customers["a"].id
    with app.app_context(), _scoped(app, tenant.partner.id, customer) as s:
        early = billing_queries.account_summary(s, customer, date(2026, 1, 15))
        assert (early.open_balance_minor, early.overdue_count, early.next_due_on) == (
            {"USD": 10_000},
            0,
            date(2026, 1, 31),
        )
    _pay(app, issued["a"], 3_000, "pi_1")
    with app.app_context(), _scoped(app, tenant.partner.id, customer) as s:
        late = billing_queries.account_summary(s, customer, date(2026, 2, 2))
        assert (late.open_balance_minor, late.overdue_count, late.overdue_minor) == (
            {"USD": 7_000},
            1,
            {"USD": 7_000},
        )
    with app.app_context(), _scoped(app, tenant.partner.id) as s:
        overdue = billing_queries.overdue_invoices(s, date(2026, 2, 2))
        assert sorted(row.invoice.id for row in overdue) == sorted([issued["a"], issued["b"]])


# -- voiding --------------------------------------------------------------------------------------


def test_voiding_an_invoice_makes_its_credit_note_and_is_audited(
    app: Flask, tenant: Tenant, issued
) -> None:
    with app.app_context(), get_database(app).sessions() as s:
        partner = s.get_one(Partner, tenant.partner.id)
        invoice = s.get_one(Invoice, issued["a"])
        with pytest.raises(ServiceError):
            billing_documents.void_invoice(s, partner, invoice, "finance@staff", "  ")
        credit = billing_documents.void_invoice(
            s, partner, invoice, "finance@staff", "Billed twice by hand"
        )
        s.commit()
        assert (invoice.state, invoice.voided_by, invoice.void_reason) == (
            InvoiceState.VOID,
            "finance@staff",
            "Billed twice by hand",
        )
        assert (credit.kind, credit.number, credit.total_minor, credit.invoice_id) == (
            CreditNoteKind.VOID,
            "CN-000001",
            invoice.total_minor,
            invoice.id,
        )
        assert [(line.kind, line.amount_minor) for line in credit.lines] == [
            (line.kind, line.amount_minor) for line in invoice.lines
        ]
        event = s.scalars(select(AuditEvent).where(AuditEvent.action == "invoice.voided")).one()
        assert (event.actor, event.customer_id) == ("finance@staff", tenant.customers["a"].id)
        assert event.detail["number"] == invoice.number
        assert event.detail["credit_note"] == "CN-000001"
        assert event.detail["reason"] == "Billed twice by hand"
        with pytest.raises(ServiceError):
            billing_documents.void_invoice(s, partner, invoice, "finance@staff", "again")
        assert s.scalar(select(func.count(CreditNote.id))) == 1
    with app.app_context(), _scoped(app, tenant.partner.id) as s:
        detail = billing_queries.invoice_detail(s, issued["a"], today=date(2026, 3, 1))
        assert detail is not None
        assert (detail.status, detail.credited_minor, detail.balance_minor) == (
            InvoiceStatus.VOID,
            10_000,
            0,
        )
        assert [note.number for note in detail.credit_notes] == ["CN-000001"]


def test_a_draft_is_discarded_not_voided_and_the_next_run_makes_it_again(
    app: Flask, tenant: Tenant
) -> None:
    product = make_product(app, tenant.partner.id)
    contract = make_contract(app, tenant.customers["a"].id, anchor_on=JAN_1)
    sub = buy(app, contract, product, seats=10, on=date(2025, 12, 1))
    with app.app_context():
        billing_run.run_billing(JAN_1, "test", partner_id=tenant.partner.id)
    with app.app_context(), get_database(app).sessions() as s:
        partner = s.get_one(Partner, tenant.partner.id)
        draft = s.scalars(select(Invoice)).one()
        with pytest.raises(ServiceError, match="discarded"):
            billing_documents.void_invoice(s, partner, draft, "staff", "wrong")
        billing_documents.discard_draft(s, partner, draft, "staff", "Wrong seat count")
        s.commit()
        assert s.scalar(select(func.count(Invoice.id))) == 0
        assert (
            s.scalars(select(AuditEvent).where(AuditEvent.action == "invoice.discarded"))
            .one()
            .detail["reason"]
            == "Wrong seat count"
        )
    change(app, sub, 9, on=date(2025, 12, 30))  # the fact staff corrected
    with app.app_context():
        (run,) = billing_run.run_billing(JAN_1, "test", partner_id=tenant.partner.id)
    assert run.invoices_created == 1
    with app.app_context(), get_database(app).sessions() as s:
        assert s.scalars(select(Invoice)).one().total_minor == 9 * PRICE


# -- the mail to Finance Managers -------------------------------------------------------------


def test_issuing_emails_the_finance_managers_a_link(
    app: Flask, tenant: Tenant, issued, mailbox: Mailbox
) -> None:
    with app.app_context(), get_database(app).sessions() as s:
        finance = s.scalars(
            select(User).where(User.email == "finance_manager@a.alpha.example")
        ).one()
        finance.locale = "es"
        s.commit()
        items = list(
            s.scalars(
                select(OutboxItem)
                .where(OutboxItem.kind == billing_documents.ISSUED_KIND)
                .order_by(OutboxItem.id)
            )
        )
        assert len(items) == 2
    with app.app_context():
        assert [run_item(app, item.id) for item in items] == ["done", "done"]
    to_a = mailbox.last_to("finance_manager@a.alpha.example")
    body = Mailbox.body(to_a)
    assert to_a["Subject"] == "Factura INV-000001 de Alpha Cloud"
    assert f"https://portal-a.test/invoices/{issued['a']}" in body
    assert "100,00" in body  # in Spanish
    to_b = mailbox.last_to("finance_manager@b.alpha.example")
    assert to_b["Subject"] == "Invoice INV-000002 from Alpha Cloud"
    assert "$50.00" in Mailbox.body(to_b)
    assert "due on Jan 31, 2026" in Mailbox.body(to_b)
    # only Finance Managers: no one else of the accounts is written to
    assert {message["To"] for message in mailbox.messages} == {
        "finance_manager@a.alpha.example",
        "finance_manager@b.alpha.example",
    }


def test_without_a_finance_manager_the_administrators_are_told(
    app: Flask, tenant: Tenant, issued, mailbox: Mailbox
) -> None:
    with app.app_context(), get_database(app).sessions() as s:
        s.delete(s.get_one(Membership, tenant.memberships["b:finance_manager"].id))
        s.commit()
        item = s.scalars(
            select(OutboxItem).where(OutboxItem.customer_id == tenant.customers["b"].id)
        ).one()
    with app.app_context():
        assert run_item(app, item.id) == "done"
    assert [message["To"] for message in mailbox.messages] == ["administrator@b.alpha.example"]


# -- lists and reports --------------------------------------------------------------------------


def test_lists_filter_and_page_and_staff_see_drafts(app: Flask, tenant: Tenant) -> None:
    product = make_product(app, tenant.partner.id)
    contract = make_contract(app, tenant.customers["a"].id, anchor_on=JAN_1)
    buy(app, contract, product, seats=1, on=date(2025, 12, 1))
    with app.app_context():
        for month in range(1, 8):
            billing_run.run_billing(date(2026, month, 1), "test", partner_id=tenant.partner.id)
    with app.app_context(), get_database(app).sessions() as s:
        partner = s.get_one(Partner, tenant.partner.id)
        drafts = list(s.scalars(select(Invoice.id).order_by(Invoice.period_start)))[:5]
        for number, invoice_id in enumerate(drafts):
            billing_documents.issue_invoices(
                s, partner, [invoice_id], "staff", today=date(2026, 1 + number, 1)
            )
        s.commit()
    today = date(2026, 7, 15)
    with app.app_context(), _scoped(app, tenant.partner.id, tenant.customers["a"].id) as s:
        first = billing_queries.list_invoices(s, today=today, per_page=2)
        assert (first.total, first.pages, first.has_next) == (5, 3, True)
        assert [row.invoice.number for row in first.rows] == ["INV-000005", "INV-000004"]
        third = billing_queries.list_invoices(s, today=today, per_page=2, page=3)
        assert [row.invoice.number for row in third.rows] == ["INV-000001"]
        spring = billing_queries.list_invoices(
            s, today=today, issued_from=date(2026, 2, 1), issued_to=date(2026, 3, 31)
        )
        assert [row.invoice.number for row in spring.rows] == ["INV-000003", "INV-000002"]
        assert billing_queries.list_invoices(s, today=today, number="0004").total == 1
        # a customer never sees a draft, even by its id
        assert billing_queries.invoice_detail(s, drafts[-1] + 1, today=today) is None
        exported = list(billing_queries.iter_invoices(s, today=today, batch=2))
        assert len(exported) == 5
    with app.app_context(), _scoped(app, tenant.partner.id) as s:
        staff = billing_queries.list_invoices(s, today=today, include_drafts=True)
        assert staff.total == 7
        assert [row.status for row in staff.rows[:2]] == [InvoiceStatus.DRAFT] * 2
    with app.app_context(), _scoped(app, tenant.partner.id + 999) as s:
        assert billing_queries.list_invoices(s, today=today, include_drafts=True).total == 0


def test_the_deferred_revenue_report_recognises_an_annual_invoice_month_by_month(
    app: Flask, tenant: Tenant
) -> None:
    annual = make_product(
        app, tenant.partner.id, price_minor=36_500, frequency=BillingFrequency.ANNUAL
    )
    contract = make_contract(
        app, tenant.customers["a"].id, anchor_on=JAN_1, frequency=ContractFrequency.ANNUAL
    )
    buy(app, contract, annual, seats=1, on=date(2025, 1, 1))
    with app.app_context(), get_database(app).sessions() as s:
        s.add(BillingSettings(partner_id=tenant.partner.id, invoice_review=False))
        s.commit()
    with app.app_context():
        billing_run.run_billing(JAN_1, "test", partner_id=tenant.partner.id, today=JAN_1)
    with app.app_context(), _scoped(app, tenant.partner.id) as s:
        report = billing_queries.deferred_revenue_report(
            s, first_month=date(2026, 1, 1), last_month=date(2026, 12, 1)
        )
    months = report.by_currency()["USD"]
    # 365.00 over 365 days: 1.00 a day
    assert [m.recognised_minor for m in months] == [
        3100,
        2800,
        3100,
        3000,
        3100,
        3000,
        3100,
        3100,
        3000,
        3100,
        3000,
        3100,
    ]
    assert sum(m.recognised_minor for m in months) == 36_500
    assert months[0].deferred_minor == 36_500 - 3100
    assert months[-1].deferred_minor == 0
