"""The demo has contracts and a few months of invoices in every status a customer meets."""

from __future__ import annotations

from flask import Flask
from sqlalchemy import func, select

from portal.core.db import get_database, utcnow
from portal.features.billing.models import BillingContract, Invoice
from portal.features.billing.services import queries as billing_queries
from portal.features.tenancy.models import Customer, Partner
from portal.features.tenancy.services import local_today
from portal.outbox.models import OutboxItem


def test_the_demo_bills_a_few_months_paid_partially_paid_and_overdue(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["portal", "demo"])
    assert result.exit_code == 0, result.output
    with app.app_context(), get_database(app).sessions() as s:
        partner = s.scalars(select(Partner)).one()
        today = local_today(partner, utcnow())
        assert s.scalar(select(func.count(BillingContract.id))) == 3
        rows = billing_queries.list_invoices(s, today=today, per_page=100).rows
        statuses = {(row.customer_name, row.status.value) for row in rows}
        assert {status for _, status in statuses} >= {"paid", "partially_paid", "overdue"}
        assert ("Fabrikam Ltd", "partially_paid") in statuses
        assert ("Northwind Traders", "overdue") in statuses
        months = {row.invoice.period_start for row in rows}
        assert len(months) >= 3
        # history is not mailed again
        assert s.scalar(select(func.count(OutboxItem.id))) == 0
        assert s.scalar(select(func.count(Customer.id))) == 3
        count = s.scalar(select(func.count(Invoice.id)))
    again = app.test_cli_runner().invoke(args=["portal", "demo"])
    assert "demo data already present" in again.output
    with app.app_context(), get_database(app).sessions() as s:
        assert s.scalar(select(func.count(Invoice.id))) == count
