"""Invoices in the customer portal, as the user sees them: the list with derived status and
balance, its filters, pagination and CSV export; one invoice with every line, credit note and
payment; its PDF (the same figures, read back with pypdf); the dashboard's open balance; and
who may see what (roles, other customers, drafts)."""

from __future__ import annotations

import base64
import csv
import io
import re
from datetime import date, timedelta
from html import unescape
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from pypdf import PdfReader

from portal.core.db import get_database, utcnow
from portal.features.billing.models import CreditNoteKind, InvoiceState, PaymentKind
from portal.features.billing.rules.invoicing import LineKind
from portal.features.tenancy.models import Partner
from tests.integration.invoice_pages_support import (
    Line,
    contract,
    credit_note,
    invoice,
    payment,
    pdf_text,
)
from tests.support import HttpsClient, Tenant, sign_in

TODAY = utcnow().date()  # the partner's zone is UTC in these tests
MAY = (date(2026, 5, 1), date(2026, 6, 1))
MAY_TEXT = "May 1 \u2013 31, 2026"  # as Babel writes the period in English (an en dash)
FINANCE = "finance_manager@a.alpha.example"


def text(html: str) -> str:
    """The page's words, tags dropped and whitespace squeezed, as someone reads them."""
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html))).strip()


def rows(html: str) -> dict[str, str]:
    """The invoice list's rows: number -> the row's text."""
    found = {}
    for row in re.findall(r'<tr id="invoice-\d+">(.*?)</tr>', html, re.S):
        words = text(row)
        found[words.split(" ")[0]] = words
    return found


@pytest.fixture
def history(app: Flask, tenant: Tenant) -> dict[str, int]:
    """Customer a: one invoice in each status, a draft; customer b: one invoice."""
    a = contract(app, tenant, "a")
    b = contract(app, tenant, "b")
    one_line = [Line("Microsoft 365 Business Standard", "10", "10.00", 10_000)]
    ids = {
        "paid": invoice(
            app, tenant, a, number="INV-0001", period=(date(2026, 1, 1), date(2026, 2, 1)),
            lines=one_line, issued_on=TODAY - timedelta(days=90), due_on=TODAY - timedelta(days=60),
        ),
        "partial": invoice(
            app, tenant, a, number="INV-0002", period=(date(2026, 2, 1), date(2026, 3, 1)),
            lines=one_line, issued_on=TODAY - timedelta(days=20), due_on=TODAY + timedelta(days=10),
        ),
        "overdue": invoice(
            app, tenant, a, number="INV-0003", period=(date(2026, 3, 1), date(2026, 4, 1)),
            lines=one_line, issued_on=TODAY - timedelta(days=45), due_on=TODAY - timedelta(days=15),
        ),
        "open": invoice(
            app, tenant, a, number="INV-0004", period=(date(2026, 4, 1), date(2026, 5, 1)),
            lines=[Line("Microsoft 365 Business Standard", "12", "10.00", 12_345)],
            issued_on=TODAY - timedelta(days=5), due_on=TODAY + timedelta(days=25),
        ),
        "void": invoice(
            app, tenant, a, number="INV-0005", period=MAY, lines=one_line,
            issued_on=TODAY - timedelta(days=4), due_on=TODAY + timedelta(days=26),
            state=InvoiceState.VOID, void_reason="Billed twice",
        ),
        "draft": invoice(
            app, tenant, a, number=None, period=(date(2026, 6, 1), date(2026, 7, 1)),
            lines=one_line, state=InvoiceState.DRAFT,
        ),
        "other": invoice(
            app, tenant, b, number="INV-0006", period=MAY, lines=one_line,
            issued_on=TODAY - timedelta(days=3), due_on=TODAY - timedelta(days=1),
        ),
    }  # fmt: skip
    payment(app, ids["paid"], 10_000, reference="pay-1", received=TODAY - timedelta(days=70))
    payment(app, ids["partial"], 4_000, reference="pay-2", received=TODAY - timedelta(days=2))
    return ids


@pytest.fixture
def finance(client: HttpsClient, tenant: Tenant) -> HttpsClient:
    sign_in(client, FINANCE)
    return client


# -- the list ------------------------------------------------------------------------------------


def test_list_shows_each_invoice_with_its_status_and_balance(
    finance: HttpsClient, history: dict[str, int]
) -> None:
    response = finance.get("/invoices")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    listed = rows(response.get_data(as_text=True))
    assert list(listed) == ["INV-0005", "INV-0004", "INV-0002", "INV-0003", "INV-0001"]
    assert "Paid" in listed["INV-0001"] and listed["INV-0001"].endswith("$100.00 $0.00 Paid")
    assert listed["INV-0002"].endswith("$100.00 $60.00 Partially paid")
    assert listed["INV-0003"].endswith("$100.00 $100.00 Overdue")
    assert listed["INV-0004"].endswith("$123.45 $123.45 Open")
    assert listed["INV-0005"].endswith("Void")
    # the period and the dates as people write them
    assert "Jan 1 \u2013 31, 2026" in listed["INV-0001"]
    # drafts and the other customer's invoice are not there
    page = response.get_data(as_text=True)
    assert "INV-0006" not in page
    assert f"/invoices/{history['draft']}" not in page


def test_filters_by_status_and_issue_date_and_says_what_is_wrong(
    finance: HttpsClient, history: dict[str, int]
) -> None:
    assert list(rows(finance.get("/invoices?status=overdue").get_data(as_text=True))) == [
        "INV-0003"
    ]
    assert list(rows(finance.get("/invoices?status=partially_paid").get_data(as_text=True))) == [
        "INV-0002"
    ]
    since = (TODAY - timedelta(days=21)).isoformat()
    until = (TODAY - timedelta(days=4)).isoformat()
    ranged = finance.get(f"/invoices?issued_from={since}&issued_to={until}").get_data(as_text=True)
    assert list(rows(ranged)) == ["INV-0005", "INV-0004", "INV-0002"]
    # the filters stay in the form
    assert f'value="{since}"' in ranged and f'value="{until}"' in ranged
    # a date that is not one: said next to the field, that filter left out, nothing else changes
    bad = finance.get("/invoices?issued_from=31/05/2026&status=overdue")
    page = bad.get_data(as_text=True)
    assert bad.status_code == 200
    assert "Enter a date like 2026-05-31." in text(page)
    assert 'aria-invalid="true"' in page and 'value="31/05/2026"' in page
    assert list(rows(page)) == ["INV-0003"]
    backwards = finance.get(f"/invoices?issued_from={until}&issued_to={since}").get_data(
        as_text=True
    )
    assert "The end date is before the start date." in text(backwards)
    unknown = finance.get("/invoices?status=draft").get_data(as_text=True)
    assert "Choose one of the statuses in the list." in text(unknown)
    assert f"/invoices/{history['draft']}" not in unknown
    empty = finance.get("/invoices?status=paid&issued_from=2030-01-01").get_data(as_text=True)
    assert "No invoice matches these filters." in text(empty)


def test_empty_list_says_what_happens_next(finance: HttpsClient) -> None:
    page = text(finance.get("/invoices").get_data(as_text=True))
    assert "No invoices yet" in page
    assert "Download CSV" not in page


def _count_statements(app: Flask, client: HttpsClient, url: str) -> int:
    engine = get_database(app).engine
    seen: list[str] = []

    def count(*args: Any) -> None:
        seen.append(args[2])

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        assert client.get(url).status_code == 200
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    return len(seen)


def test_pages_keep_filters_and_cost_the_same_however_long_the_history(
    app: Flask, finance: HttpsClient, tenant: Tenant
) -> None:
    a = contract(app, tenant, "a")
    month = date(2020, 1, 1)

    def add(count: int, start: int) -> None:
        nonlocal month
        for n in range(start, start + count):
            following = date(month.year + month.month // 12, month.month % 12 + 1, 1)
            invoice(
                app, tenant, a, number=f"INV-{n:04d}", period=(month, following),
                lines=[Line("Seats", "1", "10.00", 1_000)], issued_on=month,
                due_on=TODAY + timedelta(days=30),
            )  # fmt: skip
            month = following

    add(30, 1)
    first = finance.get("/invoices?status=open").get_data(as_text=True)
    assert len(rows(first)) == 25
    assert "30 invoices" in text(first) and "page 1 of 2" in text(first)
    assert 'href="/invoices?page=2&amp;status=open"' in first
    second = rows(finance.get("/invoices?page=2&status=open").get_data(as_text=True))
    assert list(second) == [f"INV-{n:04d}" for n in range(5, 0, -1)]
    # a page past the end shows the last one
    assert rows(finance.get("/invoices?page=99&status=open").get_data(as_text=True)) == second
    statements = _count_statements(app, finance, "/invoices?page=2")
    add(60, 31)
    assert _count_statements(app, finance, "/invoices?page=2") == statements


# -- CSV ------------------------------------------------------------------------------------------


def test_csv_export_is_the_filtered_list_with_exact_amounts(
    finance: HttpsClient, history: dict[str, int]
) -> None:
    page = finance.get("/invoices?status=partially_paid").get_data(as_text=True)
    assert 'href="/invoices.csv?status=partially_paid"' in page
    response = finance.get("/invoices.csv?status=partially_paid")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == "attachment; filename=invoices.csv"
    assert response.headers["Cache-Control"] == "no-store"
    table = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert table[0] == [
        "Number", "Period start", "Period end", "Issued", "Due", "Currency", "Total",
        "Credited", "Paid", "Balance", "Status",
    ]  # fmt: skip
    assert table[1:] == [
        [
            "INV-0002", "2026-02-01", "2026-02-28", (TODAY - timedelta(days=20)).isoformat(),
            (TODAY + timedelta(days=10)).isoformat(), "USD", "100.00", "0.00", "40.00",
            "60.00", "Partially paid",
        ]
    ]  # fmt: skip
    everything = list(csv.reader(io.StringIO(finance.get("/invoices.csv").get_data(as_text=True))))
    assert [row[0] for row in everything[1:]] == [
        "INV-0005", "INV-0004", "INV-0002", "INV-0003", "INV-0001"
    ]  # fmt: skip
    # bad filters: back to the list, which says what is wrong
    bad = finance.get("/invoices.csv?issued_to=yesterday")
    assert bad.status_code == 302 and bad.location == "/invoices?issued_to=yesterday"


# -- one invoice ----------------------------------------------------------------------------------


@pytest.fixture
def detailed(app: Flask, tenant: Tenant) -> int:
    """An invoice with an advance line, a prorated addition, usage and a discount, 20 % tax,
    a credit note for an in-window reduction, a payment and a refund."""
    a = contract(app, tenant, "a", tax_rate="0.2", name="Head office")
    lines = [
        Line("Microsoft 365 Business Standard", "10", "12.50", 12_500),
        Line("Microsoft 365 Business Standard", "3", "12.50", 1_210, LineKind.ADDITION, 12, 31),
        Line("Azure usage", "1234.5", "0.0123", 1_518, LineKind.USAGE),
        Line("Discount", "1", "0", -761, LineKind.DISCOUNT),
    ]
    invoice_id = invoice(
        app, tenant, a, number="INV-2026-0042", period=MAY, lines=lines, tax_rate="0.2",
        issued_on=TODAY - timedelta(days=3), due_on=TODAY + timedelta(days=27),
    )  # fmt: skip
    credit_note(
        app, invoice_id, number="CN-0007", issued_on=TODAY - timedelta(days=3),
        lines=[Line("Microsoft 365 Business Standard", "2", "12.50", 484,
                    LineKind.REDUCTION_CREDIT, 12, 31)],
    )  # fmt: skip
    payment(app, invoice_id, 5_000, reference="ch_001", received=TODAY - timedelta(days=1))
    payment(app, invoice_id, 1_000, reference="re_001", received=TODAY, kind=PaymentKind.REFUND)
    return invoice_id


def test_detail_prints_every_line_and_figures_that_add_up(
    finance: HttpsClient, detailed: int
) -> None:
    response = finance.get(f"/invoices/{detailed}")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    html = response.get_data(as_text=True)
    words = text(html)
    assert "Invoice INV-2026-0042" in words and "Head office" in words
    assert MAY_TEXT in words
    lines = [
        text(row) for row in re.findall(r'<tr class="invoice-line"[^>]*>(.*?)</tr>', html, re.S)
    ]
    assert lines[:4] == [
        f"Microsoft 365 Business Standard {MAY_TEXT} 10 $12.50 $125.00",
        "Microsoft 365 Business Standard 12 of 31 days Seats added during the last period "
        f"{MAY_TEXT} 3 $12.50 $12.10",
        f"Azure usage Usage, billed in arrears {MAY_TEXT} 1,234.5 $0.0123 $15.18",
        f"Discount Contract discount {MAY_TEXT} 1 -$7.61",
    ]
    # subtotal = 125.00 + 12.10 + 15.18 - 7.61 = 144.67; tax 20 % = 28.93; total 173.60
    assert text(re.search(r'id="invoice-subtotal">(.*?)<', html).group(1)) == "$144.67"  # type: ignore[union-attr]
    assert "Tax (20 %) $28.93" in words.replace("\xa0", " ")
    assert text(re.search(r'id="invoice-total">(.*?)<', html).group(1)) == "$173.60"  # type: ignore[union-attr]
    # credit note (4.84 + 20 % = 5.81) and payments (50.00 - 10.00) applied
    assert (
        "Credit note CN-0007" in words
        and "for seats removed within their reduction window" in words
    )
    assert lines[4] == (
        "Microsoft 365 Business Standard 12 of 31 days Seats removed within the reduction window "
        f"{MAY_TEXT} 2 $12.50 $4.84"
    )
    assert "Credit notes applied -$5.81" in words
    assert "Paid -$40.00" in words
    assert "ch_001" in words and "Refund" in words and "re_001" in words
    assert text(re.search(r'id="invoice-balance">(.*?)<', html).group(1)) == "$127.79"  # type: ignore[union-attr]
    assert "Partially paid" in words
    assert f'href="/invoices/{detailed}/pdf"' in html


def test_pdf_is_the_same_invoice_with_a_safe_file_name(finance: HttpsClient, detailed: int) -> None:
    response = finance.get(f"/invoices/{detailed}/pdf")
    assert response.status_code == 200
    assert response.mimetype == "application/pdf"
    assert (
        response.headers["Content-Disposition"] == "attachment; filename=invoice-INV-2026-0042.pdf"
    )
    assert response.headers["Cache-Control"] == "no-store"
    data = response.get_data()
    assert data.startswith(b"%PDF-")
    words = re.sub(r"\s+", " ", pdf_text(data))
    assert "INV-2026-0042" in words and "Alpha Cloud" in words and "alpha customer a" in words
    for amount in ("$125.00", "$12.10", "$15.18", "-$7.61", "$144.67", "$28.93", "$173.60"):
        assert amount in words, amount
    assert "12 of 31 days" in words
    assert "CN-0007" in words and "$4.84" in words and "-$5.81" in words
    assert "$127.79" in words


def test_pdf_file_name_keeps_only_safe_characters() -> None:
    from portal.features.billing.pdf import pdf_file_name

    assert pdf_file_name("INV-2026-0001") == "invoice-INV-2026-0001.pdf"
    assert pdf_file_name('A"; filename=x.exe\r\n/../') == "invoice-A-filename-x.exe.pdf"
    assert pdf_file_name("") == "invoice-invoice.pdf"


def test_pdf_renderer_never_fetches_other_urls(app: Flask, tmp_path: Any) -> None:
    from portal.features.billing.pdf import LocalAssets

    static = tmp_path / "static"
    static.mkdir()
    (static / "a.css").write_text("p {}")
    (tmp_path / "secret.txt").write_text("secret")
    assets = LocalAssets(static, lambda name: None, ":root {}")
    assert assets.fetch("https://portal-a.test/static/a.css").read() == b"p {}"
    assert assets.fetch("https://portal-a.test/brand.css").read() == b":root {}"
    for url in (
        "https://portal-a.test/static/../secret.txt",
        "https://portal-a.test/static/%2e%2e/secret.txt",
        "http://169.254.169.254/latest/meta-data/",
        "https://portal-a.test/theme/logo.png",
        "file:///etc/passwd",
    ):
        with pytest.raises(ValueError):
            assets.fetch(url)


def test_spanish_reader_sees_spanish_words_and_amounts(finance: HttpsClient, detailed: int) -> None:
    page = text(
        finance.get(f"/invoices/{detailed}", headers={"Accept-Language": "es"}).get_data(
            as_text=True
        )
    )
    assert "Factura INV-2026-0042" in page
    assert "173,60 US$" in page.replace("\xa0", " ")
    assert "12 de 31 días" in page


# -- who may see what -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("email", "allowed"),
    [
        ("administrator@a.alpha.example", True),
        ("finance_manager@a.alpha.example", True),
        ("subscription_manager@a.alpha.example", False),
    ],
)
def test_only_administrators_and_finance_managers_see_invoices(
    client: HttpsClient, history: dict[str, int], email: str, allowed: bool
) -> None:
    sign_in(client, email)
    invoice_id = history["open"]
    for url in (
        "/invoices",
        "/invoices.csv",
        f"/invoices/{invoice_id}",
        f"/invoices/{invoice_id}/pdf",
    ):
        assert client.get(url).status_code == (200 if allowed else 403), url
    dashboard = client.get("/").get_data(as_text=True)
    assert ('href="/invoices"' in dashboard) is allowed
    assert ('id="billing-heading"' in dashboard) is allowed


def test_other_customers_invoices_and_drafts_are_not_found(
    finance: HttpsClient, history: dict[str, int]
) -> None:
    for key in ("other", "draft"):
        assert finance.get(f"/invoices/{history[key]}").status_code == 404
        assert finance.get(f"/invoices/{history[key]}/pdf").status_code == 404
    assert finance.get("/invoices/999999").status_code == 404


def test_void_invoice_says_so_and_why(finance: HttpsClient, history: dict[str, int]) -> None:
    page = text(finance.get(f"/invoices/{history['void']}").get_data(as_text=True))
    assert "This invoice is void. Reason: Billed twice" in page


# -- the dashboard --------------------------------------------------------------------------------


def test_dashboard_shows_open_balance_and_overdue_invoices(
    finance: HttpsClient, history: dict[str, int]
) -> None:
    page = text(finance.get("/").get_data(as_text=True))
    # open: 123.45 + 60.00 (partially paid) + 100.00 (overdue); the void and paid ones owe nothing
    assert "Open balance $283.45" in page
    assert "1 invoice is overdue: $100.00" in page
    assert "See overdue invoices" in page
    assert f"Next payment due {(TODAY + timedelta(days=10)).strftime('%b %-d, %Y')}." in page


def test_dashboard_with_nothing_to_pay(finance: HttpsClient) -> None:
    page = text(finance.get("/").get_data(as_text=True))
    assert "Nothing to pay" in page and "Every issued invoice is paid." in page


def test_credit_note_void_kind_is_described(
    app: Flask, tenant: Tenant, finance: HttpsClient
) -> None:
    a = contract(app, tenant, "a")
    voided = invoice(
        app, tenant, a, number="INV-0100", period=MAY, lines=[Line("Seats", "1", "10.00", 1_000)],
        issued_on=TODAY, due_on=TODAY + timedelta(days=30), state=InvoiceState.VOID,
        void_reason="Wrong customer",
    )  # fmt: skip
    credit_note(
        app, voided, number="CN-0100", issued_on=TODAY, kind=CreditNoteKind.VOID,
        reason="Wrong customer", lines=[Line("Seats", "1", "10.00", 1_000)],
    )  # fmt: skip
    page = text(finance.get(f"/invoices/{voided}").get_data(as_text=True))
    assert "Credit note CN-0100" in page and "cancels this invoice" in page
    assert "Void" in page and "Balance due $0.00" in page


PNG_1PX = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


def test_pdf_carries_the_partners_logo_from_its_theme(
    app_factory: Any, tmp_path: Path, tenant: Tenant
) -> None:
    static = tmp_path / tenant.partner.slug / "static" / "img"
    static.mkdir(parents=True)
    (static / "logo.png").write_bytes(PNG_1PX)
    app = app_factory(PORTAL_THEMES_DIR=str(tmp_path))
    with app.app_context(), get_database(app).sessions() as s:
        s.get_one(Partner, tenant.partner.id).logo_filename = "img/logo.png"
        s.commit()
    a = contract(app, tenant, "a")
    invoice_id = invoice(
        app, tenant, a, number="INV-0009", period=MAY, lines=[Line("Seats", "1", "10.00", 1_000)],
        issued_on=TODAY, due_on=TODAY + timedelta(days=30),
    )  # fmt: skip
    client: HttpsClient = app.test_client()  # type: ignore[assignment]
    sign_in(client, FINANCE)
    page = client.get(f"/invoices/{invoice_id}").get_data(as_text=True)
    assert 'src="/theme/img/logo.png"' in page
    reader = PdfReader(io.BytesIO(client.get(f"/invoices/{invoice_id}/pdf").get_data()))
    assert len(reader.pages[0].images) == 1
