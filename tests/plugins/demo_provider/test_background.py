"""The demo provider's background work: changes queued through the outbox, run by a worker."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from portal.db import get_database
from portal.integrations.registry import integrations
from portal.integrations.results import Succeeded
from portal.models import Customer, OutboxItem, OutboxState
from portal.tasks.outbox import run_item
from portal.testing.support import SeededPartner
from tests.plugins.demo_provider.conftest import QUIET

TENANT = "11111111-2222-4333-8444-555555555555"


@pytest.fixture
def portal_config(demo_settings: dict[str, str]) -> dict[str, Any]:
    # the dispatch after commit goes to an in-memory broker; the test runs the items itself
    return {
        "PORTAL_PLUGIN_SETTINGS": {"demo_provider": demo_settings},
        "PORTAL_BROKER_URL": "memory://",
    }


def _exercise(app: Flask, partner: SeededPartner, count: int) -> list[OutboxItem]:
    with app.app_context(), get_database(app).sessions() as s:
        s.get_one(Customer, partner.customer_id).ms_tenant_id = TENANT
        s.commit()
    result = app.test_cli_runner().invoke(args=["demo-provider", "exercise", "--count", str(count)])
    assert result.exit_code == 0, result.output
    assert f"queued {count} demo quantity changes" in result.output
    with app.app_context():
        for item_id in _ids(app):
            run_item(app, item_id, "test-worker")
    with get_database(app).sessions() as s:
        return list(s.scalars(select(OutboxItem).order_by(OutboxItem.id)))


def _ids(app: Flask) -> list[int]:
    with get_database(app).sessions() as s:
        return list(s.scalars(select(OutboxItem.id).order_by(OutboxItem.id)))


def test_queued_changes_complete_in_order(portal_app: Flask, portal_partner: SeededPartner) -> None:
    items = _exercise(portal_app, portal_partner, 3)
    assert [i.state for i in items] == [OutboxState.DONE] * 3
    assert [i.result for i in items] == [{"quantity": 5}, {"quantity": 6}, {"quantity": 7}]
    assert all(i.customer_id == portal_partner.customer_id for i in items)
    with portal_app.app_context():
        read = (
            integrations(portal_app)
            .providers.get("demo")
            .get_subscription(TENANT, f"demo-m365-{portal_partner.customer_id}")
        )
    assert isinstance(read, Succeeded) and read.value.quantity == 7


@pytest.mark.parametrize("demo_settings", [QUIET | {"REJECTION_RATE": "1"}])
def test_a_rejected_change_is_given_up_with_the_reason(
    portal_app: Flask, portal_partner: SeededPartner
) -> None:
    (item,) = _exercise(portal_app, portal_partner, 1)
    assert item.state == OutboxState.FAILED and item.attempts == 1
    assert "demo.rejected" in (item.last_error or "")


@pytest.mark.parametrize("demo_settings", [QUIET | {"FAILURE_RATE": "1"}])
def test_a_technical_failure_is_retried_later(
    portal_app: Flask, portal_partner: SeededPartner
) -> None:
    (item,) = _exercise(portal_app, portal_partner, 1)
    assert item.state == OutboxState.PENDING and item.attempts == 1
    assert item.available_at > item.created_at and item.last_error


def test_exercise_needs_demo_customers(portal_app: Flask, portal_partner: SeededPartner) -> None:
    result = portal_app.test_cli_runner().invoke(args=["demo-provider", "exercise"])
    assert result.exit_code != 0 and "run `portal demo`" in result.output
