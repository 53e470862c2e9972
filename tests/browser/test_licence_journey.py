"""The licence journey in a real browser, against the demo provider: a customer accepts the
Microsoft Customer Agreement, adds seats and watches the change go from queued to provisioned,
tries a reduction outside the window and is told why not, and sees a rejected change's reason.

The portal runs with the demo provider (answering after five seconds, so the page, polling every
three, sees "Provisioning") and a background thread that does a worker's job: it runs due
outbox items with :func:`portal.outbox.items.run_item`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from playwright.sync_api import Page, expect
from werkzeug.serving import make_server

from portal import create_app
from portal.cli import migrate
from portal.core.db import get_database
from portal.demo import DEMO_PASSWORD, create_demo_data
from portal.features.catalogue.models import Product
from portal.features.tenancy.branding.brand import brand_cache
from portal.integrations.registry import integrations
from tests.browser.conftest import LiveServer, run_due_work
from tests.conftest import Mailbox, _empty_tables, portal_test_config

pytestmark = pytest.mark.browser

NORTHWIND_ADMIN = "admin@northwind.example"


@pytest.fixture
def licence_portal(database_url: str, smtp_server: tuple[int, Mailbox]) -> Iterator[LiveServer]:
    port, mailbox = smtp_server
    app = create_app(
        portal_test_config(
            database_url,
            port,
            PORTAL_INSECURE_COOKIES=True,
            PORTAL_PLUGINS="demo_provider",
            PORTAL_PROVIDER="demo",
            PORTAL_BROKER_URL="memory://",
            PORTAL_PLUGIN_SETTINGS={
                "demo_provider": {
                    "DELAY_SECONDS": "5",
                    "FAILURE_RATE": "0",
                    "REJECTION_RATE": "0",
                }
            },
        )
    )
    migrate(database_url, integrations(app).migration_locations)
    _empty_tables(app)
    brand_cache(app).clear()
    with app.app_context():
        create_demo_data()
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


def _sign_in(page: Page, base: str, email: str) -> None:
    page.goto(f"{base}/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Welcome, Alex Admin")).to_be_visible()


def _change_seats(page: Page, quantity: int) -> None:
    page.get_by_label("New number of seats").fill(str(quantity))
    page.get_by_role("button", name="Preview the change").click()


def test_licence_journey(page: Page, licence_portal: LiveServer, screenshots: Path) -> None:
    base = licence_portal.url
    _sign_in(page, base, NORTHWIND_ADMIN)

    # 1. no agreement yet: the subscriptions page says so and links to it
    page.get_by_role("link", name="Subscriptions").click()
    expect(page.get_by_role("alert")).to_contain_text("Microsoft Customer Agreement")
    page.get_by_role("link", name="Accept the agreement").first.click()
    page.get_by_label("First name").fill("Nancy")
    page.get_by_label("Last name").fill("Davolio")
    page.get_by_label("Phone (optional)").fill("+44 20 7946 0000")
    page.get_by_role("button", name="Accept the agreement").click()
    expect(page.get_by_text("Tick the box to accept the agreement.").first).to_be_visible()
    page.get_by_label("I have read the Microsoft Customer Agreement").check()
    page.get_by_role("button", name="Accept the agreement").click()
    status = page.locator("#agreement-status")
    # the worker may confirm before the page is drawn: either state is right at this point
    expect(status).to_contain_text(
        re.compile("being confirmed with Microsoft|confirmed by Microsoft")
    )
    expect(status).to_contain_text("confirmed by Microsoft", timeout=15_000)
    page.screenshot(path=str(screenshots / "licences-1-agreement.png"), full_page=True)

    # 2. add seats: the preview shows the prorated charge, then the change is provisioned
    page.get_by_role("link", name="Subscriptions").click()
    page.get_by_role("link", name="Microsoft 365 Business Premium").click()
    _change_seats(page, 14)
    expect(page.locator("#from-to")).to_have_text("12 → 14 seats")
    expect(page.locator("#price-effect")).to_contain_text("A prorated charge of")
    page.screenshot(path=str(screenshots / "licences-2-preview.png"), full_page=True)
    page.get_by_role("button", name="Confirm the change").click()
    expect(
        page.get_by_text("Your change is recorded and is being sent to Microsoft.")
    ).to_be_visible()
    latest = page.locator("#change-log tbody tr").first
    expect(latest).to_contain_text("Asked for 14 seats")  # a request until the provider did it
    expect(latest.locator(".change-state")).to_contain_text("Provisioning", timeout=10_000)
    page.screenshot(path=str(screenshots / "licences-3-provisioning.png"), full_page=True)
    expect(latest.locator(".change-state")).to_contain_text("Provisioned", timeout=15_000)
    expect(latest).to_contain_text("12 → 14")
    page.reload()
    expect(page.locator("#seats")).to_have_text("14")

    # 3. only the two seats just added are inside their window: a larger reduction is refused,
    # with the reason, before any charge or credit is computed
    _change_seats(page, 11)
    expect(page.locator("#quantity-error")).to_contain_text("Only 2 seats can still be reduced")
    page.screenshot(path=str(screenshots / "licences-4-refused.png"), full_page=True)

    # 4. a change the provider rejects shows the provider's reason
    with licence_portal.app.app_context(), get_database().sessions() as s:
        s.execute(sa.update(Product).values(max_quantity=20_000))
        s.commit()
    page.reload()
    _change_seats(page, 10_001)
    page.get_by_role("button", name="Confirm the change").click()
    latest = page.locator("#change-log tbody tr").first
    expect(latest.locator(".change-state")).to_contain_text(
        "Rejected by the provider", timeout=15_000
    )
    expect(latest).to_contain_text("The quantity cannot be more than 10,000")
    page.screenshot(path=str(screenshots / "licences-5-rejected.png"), full_page=True)
