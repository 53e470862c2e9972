"""Licences through the test client: list and detail, quantity changes with their preview, the
server-side rules, the change log's states, credit hold, the MCA gate, purchases, and the
provisioning handler driven against the demo provider (a real adapter with its own tables).

No worker runs here: :func:`drain` runs the outbox items the way a worker would
(:func:`portal.outbox.items.run_item`).
"""

from __future__ import annotations

import re
import threading
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from portal.cli import migrate
from portal.core.db import get_database, utcnow
from portal.features.catalogue.models import Product
from portal.features.identity.models import AuditEvent
from portal.features.licences.models import (
    AgreementAcceptance,
    AttestationState,
    LicenceChange,
    Subscription,
    SubscriptionStatus,
)
from portal.features.licences.rules import ChangeState, HoldReason
from portal.features.licences.services.pacing import CallSlots
from portal.features.tenancy.models import Customer
from portal.integrations.registry import integrations
from portal.outbox.items import run_item
from portal.outbox.models import OutboxItem, OutboxState
from tests.conftest import Mailbox
from tests.support import PRICE_MINOR, Tenant, csrf_token, post_form, seed_licences, sign_in

QUIET = {"DELAY_SECONDS": "0", "FAILURE_RATE": "0", "REJECTION_RATE": "0"}


def licence_app(app_factory: Any, config: dict[str, Any] | None = None, **demo: str) -> Flask:
    app: Flask = app_factory(
        **(config or {}),
        PORTAL_PLUGINS="demo_provider",
        PORTAL_PROVIDER="demo",
        PORTAL_PLUGIN_SETTINGS={"demo_provider": {**QUIET, **demo}},
        PORTAL_BROKER_URL="memory://",
        PORTAL_TASK_QUEUE=f"test-{uuid.uuid4().hex[:10]}",
        PORTAL_SERVICE_TEAM_EMAIL="service-team@alpha.example",
        PORTAL_PROVISIONING_MAX_ATTEMPTS=3,
    )
    # the demo provider's own tables (its Alembic branch)
    migrate(app.config["PORTAL_DATABASE_URL"], integrations(app).migration_locations)
    return app


@pytest.fixture
def app(app_factory: Any) -> Flask:
    return licence_app(app_factory)


@pytest.fixture
def licensed(app: Flask, tenant: Tenant) -> Tenant:
    return seed_licences(app, tenant)


def drain(app: Flask, rounds: int = 20) -> list[str]:
    """Run every pending item (due or not: time is made to pass) until none is left."""
    outcomes: list[str] = []
    with app.app_context():
        database = get_database(app)
        for _ in range(rounds):
            with database.sessions() as s:
                s.execute(
                    sa.update(OutboxItem)
                    .where(OutboxItem.state == OutboxState.PENDING)
                    .values(available_at=utcnow() - timedelta(seconds=1))
                )
                s.commit()
                ids = list(
                    s.scalars(
                        sa.select(OutboxItem.id)
                        .where(OutboxItem.state == OutboxState.PENDING)
                        .order_by(OutboxItem.id)
                    )
                )
            if not ids:
                return outcomes
            outcomes += [run_item(app, item_id) for item_id in ids]
    return outcomes


def rows(app: Flask, statement: Any) -> list[Any]:
    with app.app_context(), get_database(app).sessions() as s:
        return list(s.scalars(statement))


def changes_of(app: Flask, subscription_id: int) -> list[LicenceChange]:
    return rows(
        app,
        sa.select(LicenceChange)
        .where(LicenceChange.subscription_id == subscription_id)
        .order_by(LicenceChange.sequence),
    )


def subscription(app: Flask, subscription_id: int) -> Subscription:
    with app.app_context(), get_database(app).sessions() as s:
        return s.get_one(Subscription, subscription_id)


def preview(client: Any, subscription_id: int, quantity: str, version: int = 0) -> Any:
    url = f"/subscriptions/{subscription_id}"
    return post_form(
        client, f"{url}/preview", {"quantity": quantity, "version": str(version)}, page=url
    )


def confirm(client: Any, subscription_id: int, quantity: int | str, version: int = 0) -> Any:
    url = f"/subscriptions/{subscription_id}"
    return post_form(
        client, f"{url}/change", {"quantity": str(quantity), "version": str(version)}, page=url
    )


def text(response: Any) -> str:
    return re.sub(r"\s+", " ", response.get_data(as_text=True))


# -- list and detail -------------------------------------------------------------------------


def test_list_shows_the_customers_subscriptions_only(client: Any, licensed: Tenant) -> None:
    sign_in(client, "administrator@a.alpha.example")
    page = text(client.get("/subscriptions"))
    assert "Microsoft 365 Business Standard" in page
    assert page.count("/subscriptions/") >= 2
    assert f'/subscriptions/{licensed.subscriptions["a"]}"' in page
    assert f'/subscriptions/{licensed.subscriptions["b"]}"' not in page
    assert "Active" in page


def test_detail_shows_term_renewal_window_and_log(client: Any, licensed: Tenant) -> None:
    sign_in(client, "subscription_manager@a.alpha.example")
    page = text(client.get(f"/subscriptions/{licensed.subscriptions['a:new']}"))
    assert "5 seats can be reduced until" in page
    assert "Bought 5 seats" in page and "Provisioned" in page
    old = text(client.get(f"/subscriptions/{licensed.subscriptions['a']}"))
    assert "The reduction window has closed" in old


def test_another_customers_subscription_is_not_found(client: Any, licensed: Tenant) -> None:
    sign_in(client, "administrator@a.alpha.example")
    foreign = licensed.subscriptions["b"]
    assert client.get(f"/subscriptions/{foreign}").status_code == 404
    token = csrf_token(client.get("/subscriptions").data)
    for action in ("preview", "change"):
        answer = client.post(
            f"/subscriptions/{foreign}/{action}",
            data={"csrf_token": token, "quantity": "11", "version": "0"},
        )
        assert answer.status_code == 404
    assert len(changes_of(client.application, foreign)) == 1


def test_finance_manager_cannot_change_licences(client: Any, licensed: Tenant) -> None:
    sign_in(client, "finance_manager@a.alpha.example")
    sub = licensed.subscriptions["a"]
    assert client.get(f"/subscriptions/{sub}").status_code == 403
    token = csrf_token(client.get("/").data)
    answer = client.post(
        f"/subscriptions/{sub}/change", data={"csrf_token": token, "quantity": "12", "version": "0"}
    )
    assert answer.status_code == 403
    assert len(changes_of(client.application, sub)) == 1


# -- adding seats, end to end ---------------------------------------------------------------


def test_adding_seats_previews_the_prorated_charge_then_provisions(
    client: Any, app: Flask, licensed: Tenant, mailbox: Mailbox
) -> None:
    sub_id = licensed.subscriptions["a"]
    sign_in(client, "subscription_manager@a.alpha.example")
    page = preview(client, sub_id, "12")
    assert page.status_code == 200
    body = text(page)
    assert "10 → 12 seats" in body
    # 2 seats at 10.00 for the rest of the monthly period: the amount is shown before anything
    match = re.search(r"A prorated charge of ([0-9.]+) USD", body)
    assert match, body
    charged = match.group(1)
    assert 0 < float(charged) <= 2 * PRICE_MINOR / 100
    assert len(changes_of(app, sub_id)) == 1, "a preview changes nothing"

    done = confirm(client, sub_id, 12)
    assert done.status_code == 302
    follow = text(client.get(done.headers["Location"]))
    assert "Your change is recorded and is being sent to Microsoft." in follow
    assert "Queued" in follow
    change = changes_of(app, sub_id)[-1]
    assert (change.state, change.quantity_from, change.quantity_to) == (ChangeState.QUEUED, 10, 12)
    assert f"{change.amount_minor / 100:.2f}" == charged
    assert change.requested_by == "subscription_manager@a.alpha.example"

    assert drain(app)[0] == "done"
    assert subscription(app, sub_id).quantity == 12
    final = text(client.get(f"/subscriptions/{sub_id}"))
    assert "Provisioned" in final and "10 → 12" in final
    mail = mailbox.last_to("subscription_manager@a.alpha.example")
    assert "12" in Mailbox.body(mail)
    with app.app_context(), get_database(app).sessions() as s:
        audit = s.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == "licence.change_requested")
        ).one()
        assert audit.detail["quantity_to"] == 12


@pytest.mark.parametrize(
    ("quantity", "message"),
    [
        ("0", "Enter a whole number of seats, 1 or more."),
        ("-3", "Enter a whole number of seats, 1 or more."),
        ("2.5", "Enter a whole number of seats, 1 or more."),
        ("lots", "Enter a whole number of seats, 1 or more."),
        ("", "Enter a whole number of seats, 1 or more."),
        ("51", "allows at most 50 seats"),
        ("10", "already has 10 seats"),
    ],
)
def test_bad_quantities_are_refused_with_a_message_and_change_nothing(
    client: Any, app: Flask, licensed: Tenant, quantity: str, message: str
) -> None:
    sub_id = licensed.subscriptions["a"]
    sign_in(client, "administrator@a.alpha.example")
    for step in (preview, confirm):
        answer = step(client, sub_id, quantity)
        assert answer.status_code == 422
        assert message in text(answer)
    assert len(changes_of(app, sub_id)) == 1
    assert rows(app, sa.select(OutboxItem)) == []


def test_reduction_outside_the_window_is_refused_with_the_reason(
    client: Any, app: Flask, licensed: Tenant
) -> None:
    sub_id = licensed.subscriptions["a"]
    sign_in(client, "administrator@a.alpha.example")
    answer = preview(client, sub_id, "8")
    assert answer.status_code == 422
    assert "The reduction window has closed" in text(answer)
    # whatever the browser sends, the server refuses: straight to the confirmation step
    assert confirm(client, sub_id, 8).status_code == 422
    assert len(changes_of(app, sub_id)) == 1


def test_reduction_inside_the_window_previews_a_credit(
    client: Any, app: Flask, licensed: Tenant
) -> None:
    sub_id = licensed.subscriptions["a:new"]
    sign_in(client, "administrator@a.alpha.example")
    body = text(preview(client, sub_id, "3"))
    assert "A prorated credit of" in body
    assert confirm(client, sub_id, 3).status_code == 302
    assert changes_of(app, sub_id)[-1].amount_minor < 0
    drain(app)
    assert subscription(app, sub_id).quantity == 3


def test_seats_added_later_open_their_own_window(client: Any, app: Flask, licensed: Tenant) -> None:
    sub_id = licensed.subscriptions["a"]
    sign_in(client, "administrator@a.alpha.example")
    assert confirm(client, sub_id, 13).status_code == 302
    drain(app)
    page = text(client.get(f"/subscriptions/{sub_id}"))
    assert "3 seats can be reduced until" in page
    assert confirm(client, sub_id, 9, version=1).status_code == 422  # 4 > 3 seats in window
    assert confirm(client, sub_id, 10, version=1).status_code == 302
    assert changes_of(app, sub_id)[-1].amount_minor < 0


def test_a_request_from_a_stale_page_loses_with_a_clear_message(
    client: Any, app: Flask, licensed: Tenant
) -> None:
    sub_id = licensed.subscriptions["a"]
    sign_in(client, "administrator@a.alpha.example")
    other = app.test_client()
    sign_in(other, "subscription_manager@a.alpha.example")
    # both looked at version 0; the first to confirm wins
    assert confirm(client, sub_id, 15, version=0).status_code == 302
    lost = confirm(other, sub_id, 12, version=0)
    assert lost.status_code == 409
    assert "Someone else changed this subscription" in text(lost)
    assert "now comes to 15 seats" in text(lost)
    assert [c.quantity_to for c in changes_of(app, sub_id)] == [10, 15]


# -- the order of changes, and holds -----------------------------------------------------------


def test_changes_apply_in_order_and_an_earlier_one_holds_back_the_next(
    client: Any, app: Flask, licensed: Tenant
) -> None:
    sub_id = licensed.subscriptions["a"]
    sign_in(client, "administrator@a.alpha.example")
    assert confirm(client, sub_id, 11, version=0).status_code == 302
    assert confirm(client, sub_id, 14, version=1).status_code == 302
    first, second = changes_of(app, sub_id)[1:]
    assert first.state is ChangeState.QUEUED
    assert (second.state, second.hold_reason) == (ChangeState.AWAITING, HoldReason.EARLIER_CHANGE)
    assert second.quantity_from == 11
    assert len(rows(app, sa.select(OutboxItem))) == 1
    drain(app)
    assert [c.state for c in changes_of(app, sub_id)[1:]] == [ChangeState.PROVISIONED] * 2
    assert subscription(app, sub_id).quantity == 14


def _licence_mails(mailbox: Mailbox, address: str) -> list[str]:
    return [
        f"{m['Subject']}\n{Mailbox.body(m)}"
        for m in mailbox.messages
        if m["To"] == address and "seats" in str(m["Subject"])
    ]


def test_a_run_of_changes_is_told_once_to_each_requester(
    client: Any, app: Flask, licensed: Tenant, mailbox: Mailbox
) -> None:
    sub_id = licensed.subscriptions["a"]
    sign_in(client, "administrator@a.alpha.example")
    manager = app.test_client()
    sign_in(manager, "subscription_manager@a.alpha.example")
    assert confirm(client, sub_id, 11, version=0).status_code == 302
    assert confirm(manager, sub_id, 13, version=1).status_code == 302
    assert confirm(manager, sub_id, 15, version=2).status_code == 302
    drain(app)
    changes = changes_of(app, sub_id)[1:]
    assert [c.state for c in changes] == [ChangeState.PROVISIONED] * 3
    assert all(c.notified_at is not None for c in changes)
    [admin_mail] = _licence_mails(mailbox, "administrator@a.alpha.example")
    assert "from 10 to 11 seats is complete" in admin_mail
    [manager_mail] = _licence_mails(mailbox, "subscription_manager@a.alpha.example")
    assert "now has 15 seats" in manager_mail
    assert "from 11 to 15 seats is complete" in manager_mail


def _request_id_for(demo_fails: bool, rate: float) -> str:
    """A request id the demo provider fails (or not) on its first attempt, at ``rate``."""
    from demo_provider.adapter import fails_technically

    while True:
        candidate = str(uuid.uuid4())
        if fails_technically(candidate, 1, rate) is demo_fails:
            return candidate


def test_changes_done_before_one_that_retries_are_told_at_once(
    app_factory: Any, tenant: Tenant, mailbox: Mailbox
) -> None:
    app = licence_app(app_factory, FAILURE_RATE="0.5", RETRY_AFTER_SECONDS="0")
    licensed = seed_licences(app, tenant)
    client = app.test_client()
    sub_id = licensed.subscriptions["a"]
    sign_in(client, "administrator@a.alpha.example")
    confirm(client, sub_id, 12, version=0)
    confirm(client, sub_id, 14, version=1)
    first, second = changes_of(app, sub_id)[1:]
    with app.app_context(), get_database(app).sessions() as s:
        # the demo's dice are fixed by the request id: the first goes through, the second fails
        for change, fails in ((first, False), (second, True)):
            s.execute(
                sa.update(LicenceChange)
                .where(LicenceChange.id == change.id)
                .values(request_id=_request_id_for(fails, 0.5))
            )
        s.commit()
        [item] = s.scalars(sa.select(OutboxItem.id)).all()
    with app.app_context():
        assert run_item(app, item) == "done"  # the first, then the second as its follow-up
    first, second = changes_of(app, sub_id)[1:]
    assert (first.state, second.state) == (ChangeState.PROVISIONED, ChangeState.RETRYING)
    assert _licence_mails(mailbox, "administrator@a.alpha.example") == []
    with app.app_context(), get_database(app).sessions() as s:
        [notice] = s.scalars(
            sa.select(OutboxItem.id).where(
                OutboxItem.kind == "licences.notify", OutboxItem.state == OutboxState.PENDING
            )
        ).all()
    with app.app_context():
        assert run_item(app, notice) == "done"
    [mail] = _licence_mails(mailbox, "administrator@a.alpha.example")
    assert "from 10 to 12 seats is complete" in mail
    assert changes_of(app, sub_id)[1].notified_at is not None


def test_credit_hold_records_changes_as_awaiting_until_staff_lift_it(
    client: Any, app: Flask, licensed: Tenant
) -> None:
    customer_id = licensed.customers["a"].id
    with app.app_context(), get_database(app).sessions() as s:
        s.get_one(Customer, customer_id).credit_hold = True
        s.commit()
    sub_id = licensed.subscriptions["a"]
    sign_in(client, "administrator@a.alpha.example")
    answer = confirm(client, sub_id, 12)
    assert answer.status_code == 302
    assert "credit hold" in text(client.get(answer.headers["Location"]))
    assert confirm(client, sub_id, 13, version=1).status_code == 302
    held = changes_of(app, sub_id)[1:]
    assert [(c.state, c.hold_reason) for c in held] == [
        (ChangeState.AWAITING, HoldReason.CREDIT_HOLD)
    ] * 2
    assert drain(app) == [] and subscription(app, sub_id).quantity == 10

    staff = app.test_client()
    sign_in(staff, "finance@staff.alpha.example", staff=True)
    lifted = post_form(
        staff,
        f"/staff/customers/{customer_id}/credit-hold",
        {"on_hold": "", "reason": "paid"},
        page=f"/staff/customers/{customer_id}",
    )
    assert lifted.status_code in (302, 303)
    assert changes_of(app, sub_id)[1].state is ChangeState.QUEUED
    drain(app)
    assert [c.state for c in changes_of(app, sub_id)[1:]] == [ChangeState.PROVISIONED] * 2
    assert subscription(app, sub_id).quantity == 13


# -- provider outcomes --------------------------------------------------------------------------


def test_a_rejected_change_shows_the_providers_reason_and_tells_the_service_team(
    app_factory: Any, tenant: Tenant, mailbox: Mailbox
) -> None:
    app = licence_app(app_factory, REJECTION_RATE="1")
    licensed = seed_licences(app, tenant)
    client = app.test_client()
    sub_id = licensed.subscriptions["a"]
    sign_in(client, "administrator@a.alpha.example")
    confirm(client, sub_id, 12)
    assert drain(app)[0] == "done"
    change = changes_of(app, sub_id)[-1]
    assert change.state is ChangeState.REJECTED
    assert change.provider_code == "demo.rejected"
    page = text(client.get(f"/subscriptions/{sub_id}"))
    assert "Rejected by the provider" in page
    assert "Quantity not allowed by the demo rules" in page
    assert subscription(app, sub_id).quantity == 10
    assert "rejected" in Mailbox.body(mailbox.last_to("service-team@alpha.example")).lower()
    # a rejection is final and holds nothing back: the next change goes out at once
    assert confirm(client, sub_id, 11, version=1).status_code == 302
    assert changes_of(app, sub_id)[-1].state is ChangeState.QUEUED


def test_technical_failures_retry_then_fail_for_staff(
    app_factory: Any, tenant: Tenant, mailbox: Mailbox
) -> None:
    app = licence_app(app_factory, FAILURE_RATE="1", RETRY_AFTER_SECONDS="0")
    licensed = seed_licences(app, tenant)
    client = app.test_client()
    sub_id = licensed.subscriptions["a"]
    sign_in(client, "administrator@a.alpha.example")
    confirm(client, sub_id, 12)
    with app.app_context(), get_database(app).sessions() as s:
        item = s.scalars(sa.select(OutboxItem)).one()
    with app.app_context():
        assert run_item(app, item.id) == "retry"
    change = changes_of(app, sub_id)[-1]
    assert (change.state, change.attempts) == (ChangeState.RETRYING, 1)
    assert "Retrying" in text(client.get(f"/subscriptions/{sub_id}"))
    drain(app)
    change = changes_of(app, sub_id)[-1]
    assert (change.state, change.attempts) == (ChangeState.FAILED, 3)
    assert "Failed" in text(client.get(f"/subscriptions/{sub_id}"))
    assert "failed" in Mailbox.body(mailbox.last_to("service-team@alpha.example")).lower()
    # a failed change holds the next one back
    assert confirm(client, sub_id, 13, version=1).status_code == 302
    assert changes_of(app, sub_id)[-1].state is ChangeState.AWAITING


# -- the MCA gate --------------------------------------------------------------------------------


def _withdraw_agreement(app: Flask, customer_id: int) -> None:
    with app.app_context(), get_database(app).sessions() as s:
        s.execute(
            sa.delete(AgreementAcceptance).where(AgreementAcceptance.customer_id == customer_id)
        )
        s.commit()


def test_without_the_mca_every_purchase_and_change_is_refused(
    client: Any, app: Flask, licensed: Tenant
) -> None:
    _withdraw_agreement(app, licensed.customers["a"].id)
    sign_in(client, "administrator@a.alpha.example")
    sub_id = licensed.subscriptions["a"]
    refused = confirm(client, sub_id, 12)
    assert refused.status_code == 422
    assert "Accept the Microsoft Customer Agreement" in text(refused)
    assert "/agreement" in text(refused)
    product_id = licensed.products["standard"]
    url = f"/subscriptions/buy/{product_id}"
    bought = post_form(client, url, {"quantity": "3", "confirmed": "yes"})
    assert bought.status_code == 422
    assert "Accept the Microsoft Customer Agreement" in text(bought)
    assert len(changes_of(app, sub_id)) == 1
    assert rows(app, sa.select(OutboxItem)) == []
    assert len(rows(app, sa.select(Subscription))) == 3


def test_accepting_the_mca_records_the_signer_and_attests_it(
    client: Any, app: Flask, licensed: Tenant
) -> None:
    customer_id = licensed.customers["a"].id
    _withdraw_agreement(app, customer_id)
    sign_in(client, "administrator@a.alpha.example")
    page = text(client.get("/agreement"))
    assert "https://www.microsoft.com/licensing/docs/customeragreement" in page
    missing = post_form(
        client, "/agreement", {"first_name": "Ada", "last_name": "", "email": "ada@a.example"}
    )
    assert missing.status_code == 422
    body = text(missing)
    assert "Enter the last name." in body and "Tick the box to accept the agreement." in body
    assert rows(app, sa.select(AgreementAcceptance)) != [] and all(
        a.customer_id != customer_id for a in rows(app, sa.select(AgreementAcceptance))
    )
    accepted = post_form(
        client,
        "/agreement",
        {
            "first_name": "Ada",
            "last_name": "Lovelace",
            "email": "ada@a.example",
            "phone": "+1 555 0100",
            "accept": "y",
        },
    )
    assert accepted.status_code == 302
    assert "being confirmed with Microsoft" in text(client.get("/agreement"))
    # still pending: no change yet
    assert confirm(client, licensed.subscriptions["a"], 12).status_code == 422
    drain(app)
    assert "confirmed by Microsoft" in text(client.get("/agreement"))
    with app.app_context(), get_database(app).sessions() as s:
        acceptance = s.scalars(
            sa.select(AgreementAcceptance).where(AgreementAcceptance.customer_id == customer_id)
        ).one()
        assert acceptance.state is AttestationState.CONFIRMED
        assert acceptance.template_id == "demo-mca-2026-11"
        assert acceptance.ip and acceptance.user_id == licensed.users["a:administrator"].id
        assert (acceptance.first_name, acceptance.phone) == ("Ada", "+1 555 0100")
    assert confirm(client, licensed.subscriptions["a"], 12).status_code == 302


# -- buying -------------------------------------------------------------------------------------


def test_buying_from_the_catalogue_previews_then_provisions(
    client: Any, app: Flask, licensed: Tenant
) -> None:
    sign_in(client, "subscription_manager@a.alpha.example")
    catalogue = text(client.get("/subscriptions/buy"))
    assert "Microsoft 365 Business Standard" in catalogue and "10.00" in catalogue
    url = f"/subscriptions/buy/{licensed.products['standard']}"
    step = text(post_form(client, url, {"quantity": "3"}))
    assert "Confirm the purchase" in step and "30.00" in step
    bad = post_form(client, url, {"quantity": "0"})
    assert bad.status_code == 422
    done = post_form(client, url, {"quantity": "3", "confirmed": "yes"})
    assert done.status_code == 302
    new_id = int(done.headers["Location"].rsplit("/", 1)[1])
    bought = subscription(app, new_id)
    assert (bought.status, bought.quantity) == (SubscriptionStatus.PENDING, 0)
    drain(app)
    bought = subscription(app, new_id)
    assert (bought.status, bought.quantity) == (SubscriptionStatus.ACTIVE, 3)
    assert bought.provider_ref and bought.provider_ref.startswith("demo-")
    assert "Bought 3 seats" in text(client.get(f"/subscriptions/{new_id}"))


def test_a_bundle_is_one_line_and_changes_its_parts(
    client: Any, app: Flask, licensed: Tenant
) -> None:
    with app.app_context(), get_database(app).sessions() as s:
        parent = s.get_one(Product, licensed.products["standard"])
        for name in ("Exchange Online (Plan 1)", "Defender for Office 365"):
            s.add(
                Product(
                    partner_id=parent.partner_id,
                    name=name,
                    description="",
                    product_class=parent.product_class,
                    subscription_type=parent.subscription_type,
                    provider_offer_id=f"OFFER-{name[:8]}",
                    term=parent.term,
                    billing_frequency=parent.billing_frequency,
                    min_quantity=1,
                    max_quantity=50,
                    reduction=parent.reduction,
                    requires_mca=True,
                    bundle_id=parent.id,
                )
            )
        s.commit()
    sign_in(client, "administrator@a.alpha.example")
    url = f"/subscriptions/buy/{licensed.products['standard']}"
    done = post_form(client, url, {"quantity": "4", "confirmed": "yes"})
    new_id = int(done.headers["Location"].rsplit("/", 1)[1])
    drain(app)
    listing = text(client.get("/subscriptions"))
    assert "Includes: Exchange Online (Plan 1), Defender for Office 365" in listing
    assert listing.count("Exchange Online (Plan 1)") == 1
    children = rows(app, sa.select(Subscription).where(Subscription.parent_id == new_id))
    assert [c.quantity for c in children] == [4, 4]
    assert all(c.provider_ref for c in children)
    assert confirm(client, new_id, 6, version=0).status_code == 302
    drain(app)
    children = rows(app, sa.select(Subscription).where(Subscription.parent_id == new_id))
    assert [c.quantity for c in children] == [6, 6]
    # a part's own page is its bundle's page
    child_page = client.get(f"/subscriptions/{children[0].id}")
    assert f"/subscriptions/{new_id}/preview" in text(child_page)


def test_another_partners_product_cannot_be_bought(
    client: Any, app: Flask, licensed: Tenant, other_tenant: Tenant
) -> None:
    seed_licences(app, other_tenant)
    sign_in(client, "administrator@a.alpha.example")
    foreign = f"/subscriptions/buy/{other_tenant.products['standard']}"
    assert client.get(foreign).status_code == 404
    token = csrf_token(client.get("/subscriptions/buy").data)
    answer = client.post(foreign, data={"csrf_token": token, "quantity": "2", "confirmed": "yes"})
    assert answer.status_code == 404
    assert len(rows(app, sa.select(Subscription))) == 6


def test_a_failed_purchase_is_resolved_only_as_it_can_be(
    client: Any, app: Flask, licensed: Tenant
) -> None:
    from portal.core.errors import ServiceError
    from portal.features.identity.models import StaffUser
    from portal.features.licences.services import provisioning
    from portal.features.tenancy.models import Partner

    sign_in(client, "administrator@a.alpha.example")
    url = f"/subscriptions/buy/{licensed.products['standard']}"
    done = post_form(client, url, {"quantity": "2", "confirmed": "yes"})
    new_id = int(done.headers["Location"].rsplit("/", 1)[1])
    with app.app_context(), get_database(app).sessions() as s:
        change = s.scalars(
            sa.select(LicenceChange).where(LicenceChange.subscription_id == new_id)
        ).one()
        change.state = ChangeState.FAILED
        s.commit()
        partner = s.get_one(Partner, licensed.partner.id)
        staff = s.get_one(StaffUser, licensed.staff["service"].id)
        with pytest.raises(ServiceError, match="never got a subscription at the provider"):
            provisioning.resolve(s, partner, change, staff, applied=True, note="done by hand")
        s.rollback()
        provisioning.resolve(s, partner, change, staff, applied=False, note="customer withdrew")
        s.commit()
    bought = subscription(app, new_id)
    assert bought.status is SubscriptionStatus.FAILED
    assert changes_of(app, new_id)[0].state is ChangeState.REJECTED


def test_with_a_cap_on_calls_at_once_a_change_waits_for_a_free_slot(
    client: Any, app_factory: Any, tenant: Tenant, tmp_path: Path
) -> None:
    slots_dir = tmp_path / "slots"
    app = licence_app(
        app_factory,
        {"PORTAL_PROVIDER_CALLS_AT_ONCE": 1, "PORTAL_PROVIDER_CALL_SLOTS_DIR": str(slots_dir)},
    )
    client = app.test_client()
    licensed = seed_licences(app, tenant)
    sub_id = licensed.subscriptions["a"]
    sign_in(client, "subscription_manager@a.alpha.example")
    assert confirm(client, sub_id, 12).status_code == 302
    outcomes: list[str] = []
    with CallSlots(slots_dir, 1).hold():  # another process's call holds the only slot
        worker = threading.Thread(target=lambda: outcomes.extend(drain(app)))
        worker.start()
        worker.join(timeout=1.0)
        assert worker.is_alive(), "the change was sent while no slot was free"
        change = changes_of(app, sub_id)[-1]
        assert change.state is ChangeState.PROVISIONING  # shown as on its way meanwhile
        assert subscription(app, sub_id).quantity == 10
    worker.join(timeout=30)
    assert not worker.is_alive() and outcomes[0] == "done"
    assert changes_of(app, sub_id)[-1].state is ChangeState.PROVISIONED
    assert subscription(app, sub_id).quantity == 12
