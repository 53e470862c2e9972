"""The staff area's billing pages, as staff see them: start a run and watch it finish, review a
draft and issue it (singly or ticked on the list), discard a draft, void an invoice with a
reason (a credit note cancels it, the audit log says who and why), search invoices across
customers, and the deferred revenue report with its CSV. Every refusal says why and changes
nothing; staff roles without billing rights are refused."""

from __future__ import annotations

import csv
import io
import re
from datetime import date, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from portal.core.db import get_database, utcnow
from portal.features.billing.models import (
    BillingRun,
    BillingSettings,
    CreditNote,
    CreditNoteKind,
    Invoice,
    InvoiceState,
)
from portal.features.billing.rules.invoicing import ContractFrequency
from portal.features.billing.services import documents as billing_documents
from portal.features.billing.services import run as billing_run
from portal.features.billing.services import schedule as billing_schedule
from portal.features.identity.models import AuditEvent
from portal.outbox.items import run_item
from portal.outbox.models import OutboxItem, OutboxState
from tests.integration.billing_support import buy, make_contract, make_product
from tests.integration.invoice_pages_support import Line, contract, invoice, pdf_text
from tests.integration.test_invoice_pages import rows, text
from tests.support import HttpsClient, Tenant, csrf_token, post_form, sign_in

TODAY = utcnow().date()
FINANCE_STAFF = "finance@staff.alpha.example"


@pytest.fixture
def app(app_factory: Any) -> Flask:
    """Outbox items go to an in-memory broker: the tests run them, as a worker would."""
    return app_factory(PORTAL_BROKER_URL="memory://")  # type: ignore[no-any-return]


@pytest.fixture
def staff(client: HttpsClient, tenant: Tenant) -> HttpsClient:
    sign_in(client, FINANCE_STAFF, staff=True)
    return client


def _count(app: Flask, model: Any, *where: Any) -> int:
    with app.app_context(), get_database(app).sessions() as s:
        return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def _invoice(app: Flask, invoice_id: int) -> Invoice:
    with app.app_context(), get_database(app).sessions() as s:
        return s.get_one(Invoice, invoice_id)


def _run_pending(app: Flask, kind: str) -> None:
    with app.app_context(), get_database(app).sessions() as s:
        ids = list(
            s.scalars(
                select(OutboxItem.id).where(
                    OutboxItem.kind == kind, OutboxItem.state == OutboxState.PENDING
                )
            )
        )
    with app.app_context():  # as a worker runs them
        for item_id in ids:
            assert run_item(app, item_id) == "done"


@pytest.fixture
def billed(app: Flask, tenant: Tenant) -> dict[str, int]:
    """Customers a and b on monthly contracts from the 1st of this month, 10 seats each."""
    first = TODAY.replace(day=1)
    product = make_product(app, tenant.partner.id)
    ids: dict[str, int] = {}
    for key in ("a", "b"):
        made = make_contract(app, tenant.customers[key].id, anchor_on=first, tax_rate="0.1")
        ids[f"contract:{key}"] = made
        buy(app, made, product, seats=10, on=first - timedelta(days=31))
    return ids


# -- runs -------------------------------------------------------------------------------------


def test_staff_start_a_run_and_see_its_progress_and_results(
    app: Flask, staff: HttpsClient, tenant: Tenant, billed: dict[str, int]
) -> None:
    page = staff.get("/staff/billing")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Run billing for this date" in html
    assert f'value="{TODAY.isoformat()}"' in html  # today, in the partner's zone
    assert "No billing runs yet." in text(html)
    first = TODAY.replace(day=1)
    response = post_form(staff, "/staff/billing/run", {"on": first.isoformat()}, "/staff/billing")
    assert response.status_code == 302 and response.location == "/staff/billing"
    queued = staff.get("/staff/billing").get_data(as_text=True)
    assert "is queued; its progress shows below" in text(queued)
    (row,) = re.findall(r'<tr id="run-\d+">(.*?)</tr>', queued, re.S)
    assert "Queued" in text(row) and "Waiting for a worker" in text(row)
    # the table reloads itself while the run is not finished
    assert 'hx-get="/staff/billing/runs"' in queued and 'hx-trigger="every 2s"' in queued
    assert _count(app, OutboxItem, OutboxItem.kind == billing_schedule.RUN_KIND) == 1
    _run_pending(app, billing_schedule.RUN_KIND)
    done = staff.get("/staff/billing/runs").get_data(as_text=True)
    (row,) = re.findall(r'<tr id="run-\d+">(.*?)</tr>', done, re.S)
    words = text(row)
    assert "Done" in words and "2 of 2 contracts" in words
    assert "2 invoices · 0 credit notes · 2 lines" in words
    assert 'hx-get="/staff/billing/runs"' not in done  # finished: no more polling
    run_id = int(re.search(r'<tr id="run-(\d+)">', done).group(1))  # type: ignore[union-attr]
    assert f'href="/staff/invoices?run={run_id}"' in done
    # review is on by default: the run left drafts, and the page says so
    assert "2 draft invoices are waiting for review." in text(
        staff.get("/staff/billing").get_data(as_text=True)
    )
    # the same day again: a second run that creates nothing
    post_form(staff, "/staff/billing/run", {"on": first.isoformat()}, "/staff/billing")
    _run_pending(app, billing_schedule.RUN_KIND)
    latest = re.findall(
        r'<tr id="run-\d+">(.*?)</tr>',
        staff.get("/staff/billing/runs").get_data(as_text=True),
        re.S,
    )[0]
    assert "0 invoices" in text(latest) and "2 contracts were already invoiced" in text(latest)
    assert _count(app, Invoice) == 2


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "Enter the day to bill, like 2026-05-01."),
        ("01/05/2026", "Enter the day to bill, like 2026-05-01."),
        (
            (TODAY + timedelta(days=1)).isoformat(),
            "A billing run can be for today or an earlier day, not a later one.",
        ),
    ],
)
def test_a_bad_run_date_is_explained_and_starts_nothing(
    app: Flask, staff: HttpsClient, value: str, message: str
) -> None:
    response = post_form(staff, "/staff/billing/run", {"on": value}, "/staff/billing")
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert message in text(html)
    assert 'id="on-error"' in html and 'aria-invalid="true"' in html
    assert f'value="{value}"' in html  # what was typed stays
    assert _count(app, BillingRun) == 0
    assert _count(app, OutboxItem) == 0


def test_review_can_be_switched_off(app: Flask, staff: HttpsClient, tenant: Tenant) -> None:
    response = post_form(staff, "/staff/billing/review", {}, "/staff/billing")
    assert response.status_code == 302
    page = text(staff.get("/staff/billing").get_data(as_text=True))
    assert "issued at once, without review" in page
    with app.app_context(), get_database(app).sessions() as s:
        assert s.scalars(select(BillingSettings)).one().invoice_review is False
        assert s.scalar(
            select(func.count(AuditEvent.id)).where(AuditEvent.action == "billing.review_changed")
        )
    post_form(staff, "/staff/billing/review", {"review": "y"}, "/staff/billing")
    assert "wait for staff review" in text(staff.get("/staff/billing").get_data(as_text=True))


@pytest.mark.parametrize("role", ["service", "sales"])
def test_staff_without_billing_rights_are_refused(
    app: Flask, client: HttpsClient, tenant: Tenant, role: str
) -> None:
    a = contract(app, tenant, "a")
    invoice_id = invoice(
        app, tenant, a, number="INV-0001", period=(date(2026, 5, 1), date(2026, 6, 1)),
        lines=[Line("Seats", "1", "10.00", 1_000)], issued_on=TODAY, due_on=TODAY,
    )  # fmt: skip
    sign_in(client, f"{role}@staff.alpha.example", staff=True)
    for url in (
        "/staff/billing",
        "/staff/billing/runs",
        "/staff/invoices",
        "/staff/invoices.csv",
        f"/staff/invoices/{invoice_id}",
        f"/staff/invoices/{invoice_id}/pdf",
        "/staff/billing/deferred-revenue",
        "/staff/billing/deferred-revenue.csv",
    ):
        assert client.get(url).status_code == 403, url
    token = csrf_token(client.get("/staff/").data)
    for url in (
        "/staff/billing/run",
        f"/staff/invoices/{invoice_id}/void",
        "/staff/invoices/issue",
    ):
        assert client.post(url, data={"csrf_token": token, "on": TODAY.isoformat(),
                                      "reason": "x", "invoice_id": str(invoice_id)}
                           ).status_code == 403, url  # fmt: skip
    assert "/staff/billing" not in client.get("/staff/").get_data(as_text=True)
    assert _invoice(app, invoice_id).state is InvoiceState.ISSUED
    assert _count(app, BillingRun) == 0


# -- review and issue ----------------------------------------------------------------------------


def _drafts(app: Flask, tenant: Tenant) -> list[int]:
    with app.app_context():
        billing_run.run_billing(TODAY.replace(day=1), "test", partner_id=tenant.partner.id)
    with app.app_context(), get_database(app).sessions() as s:
        return list(
            s.scalars(
                select(Invoice.id).where(Invoice.state == InvoiceState.DRAFT).order_by(Invoice.id)
            )
        )


def test_review_a_draft_then_issue_it(
    app: Flask, staff: HttpsClient, tenant: Tenant, billed: dict[str, int], mailbox: Any
) -> None:
    draft_a, draft_b = _drafts(app, tenant)
    listed = staff.get("/staff/invoices?status=draft").get_data(as_text=True)
    assert f'href="/staff/invoices/{draft_a}"' in listed and f"Draft #{draft_a}" in listed
    assert "Issue the selected drafts" in listed
    page = staff.get(f"/staff/invoices/{draft_a}").get_data(as_text=True)
    words = text(page)
    assert "Draft invoice" in words and "alpha customer a" in words
    assert "Microsoft 365 Business Standard" in words and "$100.00" in words
    assert "Subtotal $100.00" in words and "Tax (10 %) $10.00" in words.replace("\xa0", " ")
    assert "Issue invoice" in words and "Void invoice" not in words
    # the customer cannot see the draft yet
    customer: HttpsClient = app.test_client()  # type: ignore[assignment]
    sign_in(customer, "finance_manager@a.alpha.example")
    assert customer.get(f"/invoices/{draft_a}").status_code == 404
    response = post_form(
        staff, f"/staff/invoices/{draft_a}/issue", {}, f"/staff/invoices/{draft_a}"
    )
    assert response.status_code == 302
    issued = _invoice(app, draft_a)
    assert issued.state is InvoiceState.ISSUED and issued.number == "INV-000001"
    after = text(staff.get(f"/staff/invoices/{draft_a}").get_data(as_text=True))
    assert "Invoice INV-000001 is issued" in after and "Void invoice" in after
    with app.app_context(), get_database(app).sessions() as s:
        event = s.scalars(select(AuditEvent).where(AuditEvent.action == "invoice.issued")).one()
        assert event.detail["number"] == "INV-000001"
    # issuing again is refused, and changes nothing
    again = post_form(staff, f"/staff/invoices/{draft_a}/issue", {}, f"/staff/invoices/{draft_a}")
    assert "Only a draft invoice can be issued." in text(
        staff.get(again.location).get_data(as_text=True)
    )
    assert _invoice(app, draft_a).number == "INV-000001"
    # the customer sees it now, and their Finance Manager is emailed a link
    assert customer.get(f"/invoices/{draft_a}").status_code == 200
    _run_pending(app, billing_documents.ISSUED_KIND)
    assert f"/invoices/{draft_a}" in mailbox.body(
        mailbox.last_to("finance_manager@a.alpha.example")
    )
    assert _invoice(app, draft_b).state is InvoiceState.DRAFT


def test_issue_the_drafts_ticked_on_the_list(
    app: Flask, staff: HttpsClient, tenant: Tenant, billed: dict[str, int]
) -> None:
    draft_a, draft_b = _drafts(app, tenant)
    back = "/staff/invoices?status=draft"
    nothing = post_form(staff, "/staff/invoices/issue", {"back": back}, back)
    assert nothing.location == back
    assert "Tick the drafts to issue first." in text(staff.get(back).get_data(as_text=True))
    assert _count(app, Invoice, Invoice.state == InvoiceState.ISSUED) == 0
    token = csrf_token(staff.get(back).data)
    response = staff.post(
        "/staff/invoices/issue",
        data={"csrf_token": token, "back": back, "invoice_id": [str(draft_a), str(draft_b)]},
    )
    assert response.location == back
    page = text(staff.get("/staff/invoices").get_data(as_text=True))
    assert "2 invoices issued: INV-000001, INV-000002." in page
    assert {_invoice(app, i).state for i in (draft_a, draft_b)} == {InvoiceState.ISSUED}
    # a foreign "back" never leaves the invoices page
    token = csrf_token(staff.get(back).data)
    away = staff.post(
        "/staff/invoices/issue",
        data={"csrf_token": token, "back": "https://evil.example/", "invoice_id": "1"},
    )
    assert away.location == "/staff/invoices"


def test_discard_a_draft_needs_a_reason(
    app: Flask, staff: HttpsClient, tenant: Tenant, billed: dict[str, int]
) -> None:
    draft_a, _ = _drafts(app, tenant)
    url = f"/staff/invoices/{draft_a}"
    refused = post_form(staff, f"{url}/discard", {"reason": "   "}, url)
    assert refused.status_code == 422
    assert "Say why, for the record." in text(refused.get_data(as_text=True))
    assert _invoice(app, draft_a).state is InvoiceState.DRAFT
    done = post_form(staff, f"{url}/discard", {"reason": "Wrong seat count"}, url)
    assert done.location == "/staff/invoices?status=draft"
    assert "is discarded" in text(staff.get(done.location).get_data(as_text=True))
    assert staff.get(url).status_code == 404
    with app.app_context(), get_database(app).sessions() as s:
        event = s.scalars(select(AuditEvent).where(AuditEvent.action == "invoice.discarded")).one()
        assert event.detail["reason"] == "Wrong seat count"


# -- void -----------------------------------------------------------------------------------------


@pytest.fixture
def issued(app: Flask, tenant: Tenant) -> int:
    a = contract(app, tenant, "a", tax_rate="0.2")
    return invoice(
        app, tenant, a, number="INV-0042", period=(date(2026, 5, 1), date(2026, 6, 1)),
        lines=[Line("Microsoft 365 Business Standard", "10", "12.50", 12_500),
               Line("Azure usage", "1", "3.33", 333, )],
        tax_rate="0.2", issued_on=TODAY - timedelta(days=2), due_on=TODAY + timedelta(days=28),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("reason", "message"),
    [("", "Say why, for the record."), ("  \n ", "Say why, for the record."),
     ("x" * 1001, "Keep the reason under 1,000 characters.")],
)  # fmt: skip
def test_void_without_a_good_reason_is_refused_and_changes_nothing(
    app: Flask, staff: HttpsClient, issued: int, reason: str, message: str
) -> None:
    url = f"/staff/invoices/{issued}"
    response = post_form(staff, f"{url}/void", {"reason": reason}, url)
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert message in text(html)
    assert 'id="void-error"' in html and 'aria-invalid="true"' in html
    assert _invoice(app, issued).state is InvoiceState.ISSUED
    assert _count(app, CreditNote) == 0
    assert _count(app, AuditEvent, AuditEvent.action == "invoice.voided") == 0


def test_void_with_a_reason_cancels_the_invoice_with_a_credit_note(
    app: Flask, staff: HttpsClient, tenant: Tenant, issued: int
) -> None:
    url = f"/staff/invoices/{issued}"
    response = post_form(staff, f"{url}/void", {"reason": "Ordered by mistake"}, url)
    assert response.status_code == 302 and response.location == url
    page = text(staff.get(url).get_data(as_text=True))
    assert "Invoice INV-0042 is void; credit note CN-000001 cancels it." in page
    assert "This invoice is void. Reason: Ordered by mistake" in page
    assert "Credit note CN-000001" in page and "cancels this invoice" in page
    # 128.33 + 20 % (25.67) = 154.00, all credited: nothing left to pay
    assert "Credit notes applied -$154.00" in page and "Balance due $0.00" in page
    assert "Void invoice" not in page
    with app.app_context(), get_database(app).sessions() as s:
        (note,) = s.scalars(select(CreditNote)).all()
        assert (note.kind, note.total_minor) == (CreditNoteKind.VOID, 15_400)
        event = s.scalars(select(AuditEvent).where(AuditEvent.action == "invoice.voided")).one()
        assert event.actor == f"staff:{tenant.staff['finance'].id}"
        assert event.detail["reason"] == "Ordered by mistake"
        assert event.detail["credit_note"] == "CN-000001"
    # voiding twice: refused, no second credit note
    post_form(staff, f"{url}/void", {"reason": "again"}, url)
    assert "This invoice is already void." in text(staff.get(url).get_data(as_text=True))
    assert _count(app, CreditNote) == 1
    # the customer sees it void, with the credit note
    customer: HttpsClient = app.test_client()  # type: ignore[assignment]
    sign_in(customer, "finance_manager@a.alpha.example")
    assert rows(customer.get("/invoices").get_data(as_text=True))["INV-0042"].endswith("Void")
    assert "CN-000001" in text(customer.get(f"/invoices/{issued}").get_data(as_text=True))


def test_staff_pdf_of_a_draft(app: Flask, staff: HttpsClient, tenant: Tenant) -> None:
    a = contract(app, tenant, "a")
    draft = invoice(
        app, tenant, a, number=None, period=(date(2026, 5, 1), date(2026, 6, 1)),
        lines=[Line("Seats", "3", "10.00", 3_000)], state=InvoiceState.DRAFT,
    )  # fmt: skip
    response = staff.get(f"/staff/invoices/{draft}/pdf")
    assert response.status_code == 200
    assert response.headers["Content-Disposition"] == (
        f"attachment; filename=invoice-draft-{draft}.pdf"
    )
    words = pdf_text(response.get_data())
    assert "Draft invoice" in words and "$30.00" in words


# -- the list across customers ---------------------------------------------------------------


@pytest.fixture
def many(app: Flask, tenant: Tenant, other_tenant: Tenant) -> None:
    for key, number in (("a", "INV-0001"), ("b", "INV-0002"), ("a", "INV-0003")):
        made = contract(app, tenant, key, name=f"Contract {number}")
        invoice(
            app, tenant, made, number=number, period=(date(2026, 5, 1), date(2026, 6, 1)),
            lines=[Line("Seats", "1", "10.00", 1_000)], issued_on=TODAY, due_on=TODAY,
        )  # fmt: skip
    beta = contract(app, other_tenant, "a")
    invoice(
        app, other_tenant, beta, number="BETA-0001", period=(date(2026, 5, 1), date(2026, 6, 1)),
        lines=[Line("Seats", "1", "10.00", 1_000)], issued_on=TODAY, due_on=TODAY,
    )  # fmt: skip


def test_invoices_across_customers_search_and_csv(
    app: Flask, staff: HttpsClient, tenant: Tenant, many: None
) -> None:
    page = staff.get("/staff/invoices").get_data(as_text=True)
    assert set(rows(page)) == {"INV-0001", "INV-0002", "INV-0003"}  # not the other partner's
    only_a = staff.get("/staff/invoices?q=customer a").get_data(as_text=True)
    assert set(rows(only_a)) == {"INV-0001", "INV-0003"}
    several = text(staff.get("/staff/invoices?q=alpha").get_data(as_text=True))
    assert "Several customers match “alpha”. Choose one:" in several
    assert "No customer matches “zzz”." in text(
        staff.get("/staff/invoices?q=zzz").get_data(as_text=True)
    )
    assert set(rows(staff.get("/staff/invoices?number=0002").get_data(as_text=True))) == {
        "INV-0002"
    }
    exported = staff.get(f"/staff/invoices.csv?customer={tenant.customers['b'].id}")
    table = list(csv.reader(io.StringIO(exported.get_data(as_text=True))))
    assert table[0][:2] == ["Number", "Customer"]
    assert [row[:2] for row in table[1:]] == [["INV-0002", "alpha customer b"]]
    assert (table[1][7], table[1][-1]) == ("10.00", "Open")


# -- deferred revenue -------------------------------------------------------------------------


def test_deferred_revenue_report_and_its_csv(
    app: Flask, staff: HttpsClient, tenant: Tenant
) -> None:
    annual = contract(app, tenant, "a", frequency=ContractFrequency.ANNUAL, name="Annual")
    monthly = contract(app, tenant, "b", name="Monthly")
    # 365.00 for 2026, issued on 1 January: 1.00 a day
    invoice(
        app, tenant, annual, number="INV-A", period=(date(2026, 1, 1), date(2027, 1, 1)),
        lines=[Line("Annual plan", "1", "365.00", 36_500)], issued_on=date(2026, 1, 1),
        due_on=date(2026, 1, 31),
    )  # fmt: skip
    # monthly contracts are not deferred
    invoice(
        app, tenant, monthly, number="INV-M", period=(date(2026, 1, 1), date(2026, 2, 1)),
        lines=[Line("Seats", "1", "50.00", 5_000)], issued_on=date(2026, 1, 1),
        due_on=date(2026, 1, 31),
    )  # fmt: skip
    page = staff.get("/staff/billing/deferred-revenue?first=2026-01&last=2026-03")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    months = {
        month: text(row)
        for month, row in re.findall(r'<tr data-month="([\d-]+)">(.*?)</tr>', html, re.S)
    }
    assert months == {
        "2026-01": "January 2026 $31.00 $334.00",
        "2026-02": "February 2026 $28.00 $306.00",
        "2026-03": "March 2026 $31.00 $275.00",
    }
    assert "Total recognised $90.00" in text(html)
    exported = staff.get("/staff/billing/deferred-revenue.csv?first=2026-01&last=2026-03")
    assert exported.headers["Content-Disposition"] == "attachment; filename=deferred-revenue.csv"
    assert list(csv.reader(io.StringIO(exported.get_data(as_text=True)))) == [
        ["Month", "Currency", "Recognised", "Deferred at month end"],
        ["2026-01", "USD", "31.00", "334.00"],
        ["2026-02", "USD", "28.00", "306.00"],
        ["2026-03", "USD", "31.00", "275.00"],
    ]
    # bad months are explained, and the report falls back to the last twelve months
    bad = text(staff.get("/staff/billing/deferred-revenue?first=2026-13&last=2026-03").get_data(
        as_text=True))  # fmt: skip
    assert "Enter a month like 2026-05." in bad
    backwards = text(
        staff.get("/staff/billing/deferred-revenue?first=2026-05&last=2026-03").get_data(
            as_text=True
        )
    )
    assert "The last month is before the first." in backwards
    assert (
        staff.get("/staff/billing/deferred-revenue.csv?first=nope").location
        == "/staff/billing/deferred-revenue?first=nope"
    )
