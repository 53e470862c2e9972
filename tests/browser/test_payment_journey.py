"""The payment journey in a real browser, on the demo data with the demo gateway: a Finance
Manager signs in, opens the overdue invoice, pays its balance with the demo test card, comes
back to the portal and sees it paid, once, with nothing left to pay; the receipt is mailed once.

The portal runs with the demo gateway and a background thread doing a worker's job (running
due outbox items: the receipt). Screenshots of the invoice, the gateway's card form and the
page after paying go to test-results/.
"""

from __future__ import annotations

import re
import struct
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from playwright.sync_api import Page, expect
from werkzeug.serving import make_server

from portal import create_app
from portal.core.db import get_database
from portal.core.money import to_minor
from portal.demo import DEMO_PASSWORD, create_demo_data
from portal.features.billing.models import InvoicePayment
from portal.features.tenancy.branding.brand import brand_cache
from tests.browser.conftest import LiveServer, run_due_work
from tests.conftest import Mailbox, _empty_tables, portal_test_config
from tests.integration.payments_support import payments_database

pytestmark = pytest.mark.browser

FINANCE_EMAIL = "finance@northwind.example"


@pytest.fixture
def payment_portal(
    database_url: str,
    smtp_server: tuple[int, Mailbox],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LiveServer]:
    """The portal with the demo gateway, on the payment tests' own database of the session's
    backend (the shared one may hold other plugins' migrations)."""
    port, mailbox = smtp_server
    backend = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    url = payments_database(backend, tmp_path_factory.getbasetemp())
    app = create_app(
        portal_test_config(
            url,
            port,
            PORTAL_INSECURE_COOKIES=True,
            PORTAL_PLUGINS="demo_payments",
            PORTAL_PAYMENT_GATEWAY="demo",
            PORTAL_BROKER_URL="memory://",
        )
    )
    _empty_tables(app)
    brand_cache(app).clear()
    with app.app_context():
        create_demo_data()
    mailbox.messages.clear()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    stop = threading.Event()
    worker = threading.Thread(target=run_due_work, args=(app, stop), daemon=True)
    serving.start()
    worker.start()
    try:
        yield LiveServer(f"http://127.0.0.1:{server.server_port}", app, mailbox)
    finally:
        stop.set()
        worker.join(timeout=10)
        server.shutdown()
        serving.join(timeout=10)
        server.server_close()
        get_database(app).dispose()


def squeeze(words: str) -> str:
    return re.sub(r"\s+", " ", words.replace("\xa0", " ")).strip()


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG, from its header."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def test_finance_manager_pays_an_invoice_and_sees_it_paid_once(
    page: Page, payment_portal: LiveServer, screenshots: Path
) -> None:
    base = payment_portal.url
    page.goto(f"{base}/login")
    page.get_by_label("Email").fill(FINANCE_EMAIL)
    page.get_by_label("Password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Welcome, Fran Finance")).to_be_visible()

    # the overdue invoice, from the list
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Invoices").click()
    page.locator("#invoice-list tbody tr", has_text="Overdue").first.get_by_role("link").click()
    expect(page.locator("#invoice-status")).to_have_text("Overdue")
    number = page.locator(".invoice-number").inner_text().strip()
    balance = squeeze(page.locator("#invoice-balance").inner_text())
    assert balance.startswith("€") and balance != "€0.00", balance
    paid_rows = page.locator("#invoice-payments tbody tr").count()
    invoice_url = page.url

    # "Pay now" with the balance filled in
    pay = page.get_by_role("region", name="Pay now")
    amount = pay.get_by_label("Amount to pay (EUR)")
    assert balance == f"€{amount.input_value()}"
    page.screenshot(path=str(screenshots / "payment-1-invoice.png"), full_page=True)
    pay.get_by_role("button", name="Pay now").click()

    # the gateway's page (the demo card form): the amount, and the test card that succeeds
    expect(page.get_by_role("heading", name=f"Pay {balance}")).to_be_visible()
    page.get_by_label("Card number").fill("4242 4242 4242 4242")
    page.screenshot(path=str(screenshots / "payment-2-card-form.png"), full_page=True)
    page.get_by_role("button", name=f"Pay {balance}").click()

    # back in the portal: paid, once, nothing left to pay
    expect(page.get_by_role("heading", name=f"Payment for invoice {number}")).to_be_visible()
    state = page.get_by_test_id("payment-state")
    expect(state).to_have_text("Paid")
    expect(page.get_by_test_id("receipt-amount")).to_have_text(balance)
    expect(page.get_by_test_id("balance-now")).to_have_text("€0.00")
    page.screenshot(path=str(screenshots / "payment-3-paid.png"), full_page=True)
    page.reload()  # coming back again records nothing more
    expect(page.get_by_test_id("payment-state")).to_have_text("Paid")

    page.get_by_role("link", name="Back to the invoice").click()
    assert page.url == invoice_url
    expect(page.locator("#invoice-status")).to_have_text("Paid")
    expect(page.locator("#invoice-balance")).to_have_text("€0.00")
    expect(page.locator("#invoice-payments tbody tr")).to_have_count(paid_rows + 1)
    expect(page.get_by_role("region", name="Pay now")).to_have_count(0)
    page.screenshot(path=str(screenshots / "payment-4-invoice-paid.png"), full_page=True)

    with payment_portal.app.app_context(), get_database().sessions() as s:
        recorded = s.scalars(
            sa.select(InvoicePayment).where(InvoicePayment.recorded_by.like("return_page:%"))
        ).all()
    owed = to_minor(Decimal(balance.removeprefix("€").replace(",", "")), "EUR")
    assert [p.amount_minor for p in recorded] == [owed]

    # the receipt is mailed once (the worker thread sends it)
    deadline = time.monotonic() + 15
    receipts: list[object] = []
    while time.monotonic() < deadline:
        receipts = [
            m
            for m in payment_portal.mailbox.messages
            if m["To"] == FINANCE_EMAIL and number in (m["Subject"] or "")
        ]
        if receipts:
            break
        time.sleep(0.2)
    time.sleep(1)  # a second receipt, were there one, would have come by now
    receipts = [
        m
        for m in payment_portal.mailbox.messages
        if m["To"] == FINANCE_EMAIL and number in (m["Subject"] or "")
    ]
    assert len(receipts) == 1, [m["Subject"] for m in payment_portal.mailbox.messages]

    for name in ("payment-1-invoice", "payment-2-card-form", "payment-3-paid"):
        width, height = png_size(screenshots / f"{name}.png")
        assert width >= 800 and height >= 400, (name, width, height)
