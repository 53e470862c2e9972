"""The staff "Plugins and background work" page: loaded plugins and the queue, by state."""

from __future__ import annotations

from datetime import timedelta

from flask import Flask

from portal.core.db import get_database, utcnow
from portal.outbox.models import OutboxItem, OutboxState
from tests.support import HttpsClient, Tenant, sign_in


def _items(app: Flask, tenant: Tenant, other: Tenant) -> None:
    now = utcnow()
    with app.app_context(), get_database(app).sessions() as s:
        s.add_all(
            [
                OutboxItem(
                    kind="alpha.done",
                    partner_id=tenant.partner.id,
                    state=OutboxState.DONE,
                    attempts=1,
                    finished_at=now,
                ),
                OutboxItem(
                    kind="alpha.retrying",
                    partner_id=tenant.partner.id,
                    state=OutboxState.PENDING,
                    attempts=2,
                    available_at=now + timedelta(minutes=5),
                    last_error="provider answered 503",
                ),
                OutboxItem(
                    kind="alpha.failed",
                    partner_id=tenant.partner.id,
                    state=OutboxState.FAILED,
                    attempts=8,
                    last_error="retries exhausted",
                ),
                OutboxItem(kind="beta.secret", partner_id=other.partner.id, state=OutboxState.DONE),
            ]
        )
        s.commit()


def test_staff_see_their_queue_by_state(app: Flask, tenant: Tenant, other_tenant: Tenant) -> None:
    _items(app, tenant, other_tenant)
    client: HttpsClient = app.test_client()  # type: ignore[assignment]
    sign_in(client, "service@staff.alpha.example", staff=True)
    page = client.get("/staff/system").get_data(as_text=True)
    assert "alpha.done" in page and "alpha.retrying" in page and "alpha.failed" in page
    assert "provider answered 503" in page and "2 / 8" in page
    assert "beta.secret" not in page  # another partner's work is not shown
    assert "No plugins are loaded" in page
    failed = client.get("/staff/system?state=failed").get_data(as_text=True)
    assert "alpha.failed" in failed and "alpha.done" not in failed
    assert "retries exhausted" in failed


def test_the_page_is_for_admin_and_service_staff(app: Flask, tenant: Tenant) -> None:
    for role, status in [("admin", 200), ("service", 200), ("finance", 403), ("sales", 403)]:
        client: HttpsClient = app.test_client()  # type: ignore[assignment]
        sign_in(client, f"{role}@staff.alpha.example", staff=True)
        assert client.get("/staff/system").status_code == status, role
