"""``flask portal demo-changes`` on the demo data: licence changes through the portal's own use
case, provisioned against the demo provider by the outbox (what a fresh ``make run`` shows)."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from portal.core.db import get_database
from portal.demo import create_demo_data
from portal.features.licences.models import LicenceChange, Subscription
from portal.features.licences.rules import ChangeKind, ChangeState, HoldReason
from portal.features.tenancy.models import Customer
from portal.outbox.items import run_item
from portal.outbox.models import OutboxItem, OutboxState
from portal.testing.support import SeededPartner


@pytest.fixture
def portal_config(demo_settings: dict[str, str]) -> dict[str, Any]:
    # the dispatch after commit goes to an in-memory broker; the test runs the items itself
    return {
        "PORTAL_PLUGIN_SETTINGS": {"demo_provider": demo_settings},
        "PORTAL_BROKER_URL": "memory://",
        "PORTAL_PROVIDER": "demo",
    }


def _exercise(app: Flask, count: int) -> str:
    with app.app_context():
        create_demo_data()
    result = app.test_cli_runner().invoke(args=["portal", "demo-changes", "--count", str(count)])
    assert result.exit_code == 0, result.output
    return result.output


def _run_all(app: Flask) -> None:
    with app.app_context(), get_database(app).sessions() as s:
        ids = list(s.scalars(select(OutboxItem.id).where(OutboxItem.state == OutboxState.PENDING)))
    with app.app_context():
        for item_id in ids:
            run_item(app, item_id, "test-worker")


def _requested(app: Flask) -> list[tuple[str, LicenceChange]]:
    with get_database(app).sessions() as s:
        found = s.execute(
            select(Customer.name, LicenceChange)
            .join(Customer, Customer.id == LicenceChange.customer_id)
            .where(LicenceChange.kind == ChangeKind.QUANTITY)
            .order_by(LicenceChange.id)
        )
        return [(name, change) for name, change in found]


def test_exercise_requests_changes_that_follow_the_rules(
    portal_app: Flask, portal_partner: SeededPartner
) -> None:
    output = _exercise(portal_app, 5)
    # Fabrikam's three subscriptions, Northwind (no agreement: refused), Tailspin (on hold)
    assert "requested 4 demo licence changes (1 refused by the rules)" in output
    assert "Northwind Traders: Accept the Microsoft Customer Agreement" in output
    _run_all(portal_app)
    requested = _requested(portal_app)
    states = {(name, change.state, change.hold_reason) for name, change in requested}
    assert ("Fabrikam Ltd", ChangeState.PROVISIONED, None) in states
    assert ("Tailspin Toys", ChangeState.AWAITING, HoldReason.CREDIT_HOLD) in states
    with get_database(portal_app).sessions() as s:
        for name, change in requested:
            if name == "Fabrikam Ltd":
                assert (
                    s.get_one(Subscription, change.subscription_id).quantity == change.quantity_to
                )


@pytest.mark.parametrize(
    "demo_settings", [{"DELAY_SECONDS": "0", "FAILURE_RATE": "0", "REJECTION_RATE": "1"}]
)
def test_a_rejected_change_is_final_with_the_reason(
    portal_app: Flask, portal_partner: SeededPartner
) -> None:
    _exercise(portal_app, 1)
    _run_all(portal_app)
    ((_, change),) = _requested(portal_app)
    assert change.state is ChangeState.REJECTED and change.provider_code == "demo.rejected"


@pytest.mark.parametrize(
    "demo_settings", [{"DELAY_SECONDS": "0", "FAILURE_RATE": "1", "REJECTION_RATE": "0"}]
)
def test_a_technical_failure_is_retried_later(
    portal_app: Flask, portal_partner: SeededPartner
) -> None:
    _exercise(portal_app, 1)
    _run_all(portal_app)
    ((_, change),) = _requested(portal_app)
    assert change.state is ChangeState.RETRYING and change.attempts == 1
    with get_database(portal_app).sessions() as s:
        item = s.scalars(select(OutboxItem).where(OutboxItem.kind == "licences.provision")).one()
        assert item.state == OutboxState.PENDING and item.available_at > item.created_at


def test_exercise_needs_demo_subscriptions(
    portal_app: Flask, portal_partner: SeededPartner
) -> None:
    result = portal_app.test_cli_runner().invoke(args=["portal", "demo-changes"])
    assert result.exit_code != 0
    assert "run `flask portal demo` first" in result.output
