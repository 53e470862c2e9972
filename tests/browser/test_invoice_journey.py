"""The invoice journey in a real browser, on the demo data: a Finance Manager signs in, sees
what is owed on the dashboard, opens an invoice, reads its lines, downloads its PDF, and the
PDF says what the page says (number, every line amount, total, balance).

Screenshots of the invoice page and of the PDF's first page (when poppler's ``pdftoppm`` is
installed) go to test-results/ for a look.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from portal.demo import DEMO_PASSWORD
from tests.browser.conftest import LiveServer
from tests.integration.invoice_pages_support import pdf_text

pytestmark = pytest.mark.browser

FINANCE_EMAIL = "finance@northwind.example"


def squeeze(words: str) -> str:
    return re.sub(r"\s+", " ", words.replace("\xa0", " ")).strip()


def test_finance_manager_reads_an_invoice_and_its_pdf(
    page: Page, demo_portal: LiveServer, screenshots: Path
) -> None:
    page.goto("/login")
    page.get_by_label("Email").fill(FINANCE_EMAIL)
    page.get_by_label("Password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Welcome, Fran Finance")).to_be_visible()

    # the dashboard: Northwind paid its first invoice only, so the next one is overdue
    card = page.get_by_role("region", name="Invoices")
    expect(card.get_by_test_id("open-balance")).to_contain_text("€")
    expect(card.get_by_test_id("overdue")).to_contain_text("overdue")

    # the list, then the overdue invoice
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Invoices").click()
    expect(page.get_by_role("heading", name="Invoices", exact=True)).to_be_visible()
    overdue = page.locator("#invoice-list tbody tr", has_text="Overdue").first
    expect(overdue).to_be_visible()
    overdue.get_by_role("link").click()

    heading = page.get_by_role("heading", level=1)
    expect(heading).to_contain_text("Invoice")
    number = page.locator(".invoice-number").inner_text().strip()
    assert re.fullmatch(r"INV-\d+", number), number
    expect(page.locator("#invoice-status")).to_have_text("Overdue")
    lines = page.locator("#invoice-lines tbody tr.invoice-line")
    assert lines.count() >= 1
    descriptions = [squeeze(t) for t in lines.locator("td:first-child").all_inner_texts()]
    amounts = [squeeze(t) for t in lines.locator(".line-amount").all_inner_texts()]
    total = squeeze(page.locator("#invoice-total").inner_text())
    balance = squeeze(page.locator("#invoice-balance").inner_text())
    assert all(a.startswith("€") or a.startswith("-€") for a in amounts), amounts
    assert total == balance  # nothing paid on it yet
    page.screenshot(path=str(screenshots / "invoice-page.png"), full_page=True)

    # the PDF: downloaded with a safe name, and it says the same
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download PDF").click()
    download = download_info.value
    assert download.suggested_filename == f"invoice-{number}.pdf"
    saved = screenshots / download.suggested_filename
    download.save_as(saved)
    data = saved.read_bytes()
    assert data.startswith(b"%PDF-")
    words = squeeze(pdf_text(data))
    assert number in words
    assert "Contoso Cloud" in words and "Northwind Traders" in words
    for description in descriptions:
        assert description.split(" ")[0] in words, description
    for amount in amounts:
        assert amount in words, amount
    assert f"Total {total}" in words
    assert f"Balance due {balance}" in words
    assert "Overdue" in words

    pdftoppm = shutil.which("pdftoppm")
    if pdftoppm:  # a picture of the first page, to look at beside the page's screenshot
        subprocess.run(
            [pdftoppm, "-png", "-r", "70", "-f", "1", "-l", "1", str(saved),
             str(screenshots / "invoice-pdf")],
            check=True, timeout=60,
        )  # fmt: skip
