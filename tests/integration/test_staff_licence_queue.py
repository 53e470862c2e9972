"""The staff licence change queue: newest first, filtered and paginated; failed changes retried
(queued again, same request id, one outbox item) or resolved by hand, each audited; every
refusal changes nothing; permissions per staff role; partners apart."""

from __future__ import annotations

import re
import uuid
from datetime import date, timedelta
from html import unescape
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from portal.core.db import get_database, utcnow
from portal.features.catalogue.models import Product
from portal.features.catalogue.rules import (
    BillingFrequency,
    ProductClass,
    ReductionBehaviour,
    SubscriptionType,
    Term,
)
from portal.features.identity.models import AuditEvent
from portal.features.licences.models import LicenceChange, Subscription, SubscriptionStatus
from portal.features.licences.rules import ChangeKind, ChangeState, HoldReason
from portal.outbox.models import OutboxItem
from tests.support import HttpsClient, Tenant, confirmed_acceptance, post_form, sign_in

QUEUE = "/staff/licence-changes"


@pytest.fixture
def app(app_factory: Any) -> Flask:
    """Outbox items are dispatched to an in-memory broker: nothing runs them."""
    return app_factory(PORTAL_BROKER_URL="memory://")  # type: ignore[no-any-return]


def add_subscription(
    app: Flask, tenant: Tenant, customer_key: str = "a", product_name: str = "Teams Essentials"
) -> int:
    """A product and an active 10-seat subscription of the tenant's customer to it."""
    customer = tenant.customers[customer_key]
    with app.app_context(), get_database(app).sessions() as s:
        product = Product(
            partner_id=tenant.partner.id,
            name=product_name,
            product_class=ProductClass.RESALE,
            subscription_type=SubscriptionType.LICENCE,
            provider_offer_id=f"OFFER-{uuid.uuid4().hex[:8]}",
            term=Term.P1Y,
            billing_frequency=BillingFrequency.MONTHLY,
            reduction=ReductionBehaviour.WITHIN_WINDOW,
        )
        s.add(product)
        s.flush()
        subscription = Subscription(
            partner_id=tenant.partner.id,
            customer_id=customer.id,
            product_id=product.id,
            provider_key="demo",
            provider_ref=f"sub-{uuid.uuid4()}",
            status=SubscriptionStatus.ACTIVE,
            quantity=10,
            term=Term.P1Y,
            billing_frequency=BillingFrequency.MONTHLY,
            currency="USD",
            term_ends_on=date.today() + timedelta(days=300),
        )
        s.add(subscription)
        s.commit()
        return subscription.id


def add_change(
    app: Flask,
    subscription_id: int,
    state: ChangeState,
    quantity_to: int = 12,
    minutes_ago: int = 0,
    **values: Any,
) -> int:
    """The subscription's next change (10 → ``quantity_to`` seats) in ``state``."""
    with app.app_context(), get_database(app).sessions() as s:
        subscription = s.get_one(Subscription, subscription_id)
        sequence = len(
            s.scalars(
                select(LicenceChange.id).where(LicenceChange.subscription_id == subscription_id)
            ).all()
        )
        change = LicenceChange(
            partner_id=subscription.partner_id,
            customer_id=subscription.customer_id,
            subscription_id=subscription_id,
            sequence=sequence + 1,
            request_id=str(uuid.uuid4()),
            kind=ChangeKind.QUANTITY,
            state=state,
            quantity_from=10,
            quantity_to=quantity_to,
            currency="USD",
            requested_by="subscription_manager@a.alpha.example",
            requested_at=utcnow() - timedelta(minutes=minutes_ago),
            **values,
        )
        s.add(change)
        s.commit()
        return change.id


def failed_change(app: Flask, subscription_id: int, **values: Any) -> int:
    return add_change(
        app,
        subscription_id,
        ChangeState.FAILED,
        attempts=8,
        provider_answer="Partner Center answered 503 Service Unavailable",
        finished_at=utcnow(),
        **values,
    )


def change_row(app: Flask, change_id: int) -> LicenceChange:
    with app.app_context(), get_database(app).sessions() as s:
        return s.get_one(LicenceChange, change_id)


def subscription_quantity(app: Flask, subscription_id: int) -> int:
    with app.app_context(), get_database(app).sessions() as s:
        return s.get_one(Subscription, subscription_id).quantity


def provision_items(app: Flask) -> list[OutboxItem]:
    with app.app_context(), get_database(app).sessions() as s:
        return list(
            s.scalars(
                select(OutboxItem)
                .where(OutboxItem.kind == "licences.provision")
                .order_by(OutboxItem.id)
            )
        )


def audit_events(app: Flask) -> list[AuditEvent]:
    with app.app_context(), get_database(app).sessions() as s:
        return list(
            s.scalars(
                select(AuditEvent)
                .where(AuditEvent.action.like("licence.%"))
                .order_by(AuditEvent.id)
                .execution_options(unscoped=True)
            )
        )


def text(response: Any) -> str:
    return unescape(response.get_data(as_text=True))


def retry(client: HttpsClient, change_id: int, **data: str) -> Any:
    return post_form(client, f"{QUEUE}/{change_id}/retry", data, page="/staff/")


def resolve(client: HttpsClient, change_id: int, **data: str) -> Any:
    return post_form(client, f"{QUEUE}/{change_id}/resolve", data, page="/staff/")


# -- the list ------------------------------------------------------------------------------------


def test_the_queue_shows_changes_newest_first_with_their_state(
    app: Flask, client: HttpsClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    teams = add_subscription(app, tenant, "a", "Teams Essentials")
    visio = add_subscription(app, tenant, "b", "Visio Plan 2")
    add_change(
        app,
        teams,
        ChangeState.PROVISIONED,
        15,
        minutes_ago=30,
        attempts=1,
        provider_answer="sub-1: 15 seats, active",
    )
    add_change(
        app,
        visio,
        ChangeState.REJECTED,
        2,
        minutes_ago=20,
        attempts=1,
        provider_answer="quantity below minimum",
        provider_code="800002",
    )
    add_change(
        app, teams, ChangeState.AWAITING, 20, minutes_ago=10, hold_reason=HoldReason.CREDIT_HOLD
    )
    failed_change(app, visio)
    add_change(app, add_subscription(app, other_tenant, "a", "Beta's product"), ChangeState.FAILED)
    sign_in(client, "finance@staff.alpha.example", staff=True)
    page = text(client.get(QUEUE))
    assert "4 changes" in page and "Beta's product" not in page
    order = [page.index(s) for s in ("Failed<", "Awaiting<", "Rejected<", "Provisioned<")]
    assert order == sorted(order)  # newest first
    for shown in (
        "alpha customer a",
        "alpha customer b",
        "Teams Essentials",
        "Visio Plan 2",
        "Asked for 20 seats",  # not provisioned: a request, not a move yet
        "Asked for 2 seats",
        "Held: the customer is on credit hold",
        "quantity below minimum",
        "800002",
        "Partner Center answered 503 Service Unavailable",
        "subscription_manager@a.alpha.example",
        "1 change failed and needs someone to act.",
    ):
        assert shown in page, shown
    assert 'class="badge text-bg-danger">Failed<' in page


def test_the_queue_filters_by_state_and_customer(
    app: Flask, client: HttpsClient, tenant: Tenant
) -> None:
    teams = add_subscription(app, tenant, "a", "Teams Essentials")
    visio = add_subscription(app, tenant, "b", "Visio Plan 2")
    add_change(app, teams, ChangeState.PROVISIONED, 15, minutes_ago=5)
    failed_change(app, teams)
    failed_change(app, visio, quantity_to=14)
    add_change(app, visio, ChangeState.QUEUED, 16)
    sign_in(client, "service@staff.alpha.example", staff=True)
    page = text(client.get(QUEUE))
    assert '<option value="failed">Failed (2)</option>' in page
    assert '<option value="queued">Queued (1)</option>' in page
    failed = text(client.get(f"{QUEUE}?state=failed"))
    assert "2 changes" in failed
    assert "Asked for 12 seats" in failed and "Asked for 14 seats" in failed
    assert "10 → 15" not in failed and "Asked for 16 seats" not in failed
    assert '<option value="failed" selected>' in failed
    by_customer = text(client.get(f"{QUEUE}?state=failed&q=CUSTOMER B"))
    assert "1 change" in by_customer and "Asked for 14 seats" in by_customer
    assert "Asked for 12 seats" not in by_customer
    assert '<option value="failed" selected>Failed (1)</option>' in by_customer
    assert 'value="CUSTOMER B"' in by_customer
    nothing = text(client.get(f"{QUEUE}?state=rejected"))
    assert "No licence change matches these filters." in nothing
    # an unknown state is no filter
    assert "4 changes" in text(client.get(f"{QUEUE}?state=lost"))


def test_the_queue_is_paginated(app: Flask, client: HttpsClient, tenant: Tenant) -> None:
    subscription = add_subscription(app, tenant)
    for i in range(30):
        add_change(app, subscription, ChangeState.PROVISIONED, 100 + i, minutes_ago=60 - i)
    sign_in(client, "admin@staff.alpha.example", staff=True)
    first = text(client.get(QUEUE))
    assert "30 changes" in first and "10 → 129" in first and "10 → 105" in first
    assert "10 → 104" not in first and 'aria-current="page">1<' in first
    second = text(client.get(f"{QUEUE}?page=2"))
    assert "10 → 104" in second and "10 → 100" in second and "10 → 105" not in second
    assert "No licence changes yet." not in text(client.get(f"{QUEUE}?page=9"))  # last page


def test_an_empty_queue_says_so(client: HttpsClient, tenant: Tenant) -> None:
    sign_in(client, "admin@staff.alpha.example", staff=True)
    assert "No licence changes yet." in text(client.get(QUEUE))


# -- retry ---------------------------------------------------------------------------------------


def test_retry_queues_a_failed_change_again(
    app: Flask, client: HttpsClient, tenant: Tenant
) -> None:
    subscription = add_subscription(app, tenant)
    change_id = failed_change(app, subscription)
    request_id = change_row(app, change_id).request_id
    with app.app_context(), get_database(app).sessions() as s:
        # a retry is refused without the customer's MCA, as the customer's own request is
        s.add(confirmed_acceptance(tenant.customers["a"], "demo", utcnow()))
        s.commit()
    sign_in(client, "service@staff.alpha.example", staff=True)
    page = text(client.get(f"{QUEUE}?state=failed"))
    assert f'action="{QUEUE}/{change_id}/retry"' in page
    assert f'action="{QUEUE}/{change_id}/resolve"' in page
    response = retry(client, change_id, state="failed")
    assert response.status_code == 302
    assert response.location == f"{QUEUE}?state=failed"  # back to the list as it was filtered
    page = text(client.get(response.location))
    assert f"Change #{change_id} of alpha customer a is queued again" in page
    change = change_row(app, change_id)
    assert change.state is ChangeState.QUEUED and change.request_id == request_id
    [item] = provision_items(app)
    assert item.payload == {"change_id": change_id}
    assert (item.partner_id, item.customer_id) == (tenant.partner.id, tenant.customers["a"].id)
    [event] = audit_events(app)
    assert (event.action, event.detail["change"]) == ("licence.change_retried", change_id)
    assert event.actor == "service@staff.alpha.example"
    # now queued, it is not failed any more: a second retry is refused and adds nothing
    response = retry(client, change_id)
    assert "Only a failed change can be retried." in text(client.get(response.location))
    assert len(provision_items(app)) == 1 and len(audit_events(app)) == 1


@pytest.mark.parametrize(
    "state",
    [ChangeState.QUEUED, ChangeState.PROVISIONED, ChangeState.REJECTED, ChangeState.AWAITING],
)
def test_only_failed_changes_can_be_retried_or_resolved(
    app: Flask, client: HttpsClient, tenant: Tenant, state: ChangeState
) -> None:
    subscription = add_subscription(app, tenant)
    change_id = add_change(app, subscription, state)
    sign_in(client, "admin@staff.alpha.example", staff=True)
    page = text(client.get(QUEUE))
    assert f"{QUEUE}/{change_id}/retry" not in page  # no buttons for it
    response = retry(client, change_id)
    assert response.status_code == 302
    assert "Only a failed change can be retried." in text(client.get(response.location))
    response = resolve(client, change_id, outcome="applied", note="done by hand")
    assert response.status_code == 302
    assert "Only a failed change can be marked resolved." in text(client.get(response.location))
    assert change_row(app, change_id).state is state
    assert subscription_quantity(app, subscription) == 10
    assert provision_items(app) == [] and audit_events(app) == []


# -- resolve -------------------------------------------------------------------------------------


def test_resolve_as_applied_sets_the_quantity_and_releases_the_next_change(
    app: Flask, client: HttpsClient, tenant: Tenant
) -> None:
    subscription = add_subscription(app, tenant)
    change_id = failed_change(app, subscription, minutes_ago=5)
    later = add_change(
        app, subscription, ChangeState.AWAITING, 14, hold_reason=HoldReason.EARLIER_CHANGE
    )
    sign_in(client, "service@staff.alpha.example", staff=True)
    response = resolve(
        client, change_id, outcome="applied", note="Seen at 12 seats in Partner Center"
    )
    assert response.status_code == 302
    page = text(client.get(response.location))
    assert (
        f"Change #{change_id} of alpha customer a is resolved as applied: the subscription has "
        "12 seats." in page
    )
    assert "Resolved by service@staff.alpha.example: Seen at 12 seats in Partner Center" in page
    change = change_row(app, change_id)
    assert change.state is ChangeState.PROVISIONED
    assert change.resolved_by == "service@staff.alpha.example"
    assert change.resolution_note == "Seen at 12 seats in Partner Center"
    assert subscription_quantity(app, subscription) == 12
    # the change it held back goes out now
    assert change_row(app, later).state is ChangeState.QUEUED
    assert [item.payload for item in provision_items(app)] == [{"change_id": later}]
    [event] = audit_events(app)
    assert event.action == "licence.change_resolved"
    assert event.detail == {
        "change": change_id,
        "applied": True,
        "note": "Seen at 12 seats in Partner Center",
    }


def test_resolve_as_not_applied_keeps_the_quantity(
    app: Flask, client: HttpsClient, tenant: Tenant
) -> None:
    subscription = add_subscription(app, tenant)
    change_id = failed_change(app, subscription)
    sign_in(client, "admin@staff.alpha.example", staff=True)
    response = resolve(
        client, change_id, outcome="not_applied", note="Customer withdrew the request"
    )
    page = text(client.get(response.location))
    assert f"Change #{change_id} of alpha customer a is resolved as not applied." in page
    change = change_row(app, change_id)
    assert change.state is ChangeState.REJECTED
    assert change.provider_answer == "Customer withdrew the request"
    assert subscription_quantity(app, subscription) == 10
    [event] = audit_events(app)
    assert (event.action, event.detail["applied"]) == ("licence.change_resolved", False)
    assert provision_items(app) == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"outcome": "applied", "note": ""}, "Say what was done, for the record."),
        ({"outcome": "applied", "note": "   "}, "Say what was done, for the record."),
        ({"note": "done"}, "Say whether the provider applied the change."),
        ({"outcome": "maybe", "note": "done"}, "Not a valid choice."),
    ],
)
def test_resolve_needs_an_outcome_and_a_note(
    app: Flask, client: HttpsClient, tenant: Tenant, data: dict[str, str], message: str
) -> None:
    subscription = add_subscription(app, tenant)
    change_id = failed_change(app, subscription)
    sign_in(client, "service@staff.alpha.example", staff=True)
    response = resolve(client, change_id, state="failed", **data)
    assert response.status_code == 422
    page = text(response)
    assert message in page
    # the form stays open beside its change, the list as it was filtered
    assert re.search(r"<details open>\s*<summary[^>]*>Mark resolved…", page)
    assert '<option value="failed" selected>' in page
    change = change_row(app, change_id)
    assert change.state is ChangeState.FAILED and change.resolved_by is None
    assert subscription_quantity(app, subscription) == 10
    assert audit_events(app) == []


# -- who may -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "sees", "acts"),
    [
        ("admin", True, True),
        ("service", True, True),
        ("finance", True, False),
        ("sales", False, False),
    ],
)
def test_staff_roles_and_the_queue(
    app: Flask, client: HttpsClient, tenant: Tenant, role: str, sees: bool, acts: bool
) -> None:
    subscription = add_subscription(app, tenant)
    change_id = failed_change(app, subscription)
    sign_in(client, f"{role}@staff.alpha.example", staff=True)
    assert (f'href="{QUEUE}"' in text(client.get("/staff/"))) is sees
    listing = client.get(QUEUE)
    assert listing.status_code == (200 if sees else 403)
    if sees:
        page = text(listing)
        assert ("Retry" in page and "Mark resolved" in page) is acts
        assert f"{QUEUE}/{change_id}/retry" in page if acts else "/retry" not in page
    if not acts:
        assert retry(client, change_id).status_code == 403
        response = resolve(client, change_id, outcome="applied", note="done")
        assert response.status_code == 403
        assert change_row(app, change_id).state is ChangeState.FAILED
        assert provision_items(app) == [] and audit_events(app) == []


def test_another_partners_change_is_not_found(
    app: Flask, client: HttpsClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    theirs = failed_change(app, add_subscription(app, other_tenant))
    sign_in(client, "admin@staff.alpha.example", staff=True)
    assert retry(client, theirs).status_code == 404
    assert resolve(client, theirs, outcome="applied", note="done").status_code == 404
    assert change_row(app, theirs).state is ChangeState.FAILED
    assert provision_items(app) == [] and audit_events(app) == []
