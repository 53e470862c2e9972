"""Issue 13, the licences part: the truth is what the provider did.

- 1: a change's starting quantity is the provider's quantity when it is provisioned, not the
  target of the changes in flight when it was asked for; until then it shows as "asked N";
  billing, the customer's mail and the log follow what the provider did.
- 4: a handler that gives up leaves its change failed, with the reason; a change of a
  subscription whose purchase failed is rejected with a clear reason.
- 5: release is decided under the subscription's lock with fresh reads; a periodic sweep
  releases an awaiting change whose reason has gone.
- 6: the credit hold is checked when a change is provisioned: a held change waits again.
- 7: a bundle half-applied at the provider keeps what was applied and needs staff attention.
- 10: a staff retry checks the Microsoft Customer Agreement like a customer's request.

No worker runs here: :func:`drain` runs the outbox items as a worker would, through the real
handlers and the demo provider (whose dice are fixed by each request id).
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, date, datetime
from typing import Any

import pytest
import sqlalchemy as sa
import time_machine
from flask import Flask

from portal.core.db import get_database
from portal.core.errors import ServiceError
from portal.features.billing.models import Invoice, InvoiceLine
from portal.features.billing.services import run as billing_run
from portal.features.catalogue.models import Product
from portal.features.identity.models import StaffUser
from portal.features.licences.models import (
    AgreementAcceptance,
    LicenceChange,
    Subscription,
    SubscriptionStatus,
)
from portal.features.licences.rules import ChangeState, HoldReason
from portal.features.licences.services import provisioning
from portal.features.licences.services import subscriptions as licences
from portal.features.tenancy.models import Customer, Partner
from portal.outbox.handlers import wiring
from portal.outbox.items import run_item
from portal.outbox.models import OutboxItem, OutboxState
from tests.conftest import Mailbox
from tests.integration.billing_support import make_contract
from tests.integration.test_licences import (
    changes_of,
    confirm,
    drain,
    licence_app,
    rows,
    subscription,
    text,
)
from tests.support import Tenant, post_form, seed_licences, sign_in

JAN_1 = date(2026, 1, 1)
FEB_1 = date(2026, 2, 1)
JAN_13 = datetime(2026, 1, 13, 12, tzinfo=UTC)
FEB_2 = datetime(2026, 2, 2, 12, tzinfo=UTC)
RATE = 0.5  # the demo's rejection rate in these tests: each request id decides its fate
ADMIN = "administrator@a.alpha.example"


@pytest.fixture
def app(app_factory: Any) -> Flask:
    return licence_app(app_factory, REJECTION_RATE=str(RATE))


def _request_id(rejected: bool) -> str:
    """A request id the demo provider rejects (or applies)."""
    from demo_provider.adapter import rejected_by_rule

    while True:
        candidate = str(uuid.uuid4())
        if rejected_by_rule(candidate, RATE) is rejected:
            return candidate


def _set_request_ids(app: Flask, fates: dict[int, bool]) -> None:
    """Fix which changes the provider rejects (True) and applies (False)."""
    with app.app_context(), get_database(app).sessions() as s:
        for change_id, rejected in fates.items():
            s.execute(
                sa.update(LicenceChange)
                .where(LicenceChange.id == change_id)
                .values(request_id=_request_id(rejected))
            )
        s.commit()


def _demo_quantity(app: Flask, subscription_id: int) -> int:
    from demo_provider.models import DemoSubscription

    ref = subscription(app, subscription_id).provider_ref
    with app.app_context(), get_database(app).sessions() as s:
        return int(
            s.scalar(
                sa.select(DemoSubscription.quantity).where(DemoSubscription.subscription_ref == ref)
            )
            or 0
        )


def _on_contract(app: Flask, tenant: Tenant, subscription_id: int) -> int:
    contract = make_contract(app, tenant.customers["a"].id, anchor_on=JAN_1)
    with app.app_context(), get_database(app).sessions() as s:
        s.get_one(Subscription, subscription_id).billing_contract_id = contract
        s.commit()
    return contract


def _changed_on(app: Flask, partner_id: int, contract: int, day: date) -> list[tuple[str, int]]:
    """The February invoice's lines for seats changed on ``day``: (kind, seats)."""
    with time_machine.travel(FEB_2, tick=True), app.app_context():
        billing_run.run_billing(JAN_1, "test", partner_id=partner_id)
        billing_run.run_billing(FEB_1, "test", partner_id=partner_id)
    with app.app_context(), get_database(app).sessions() as s:
        invoice = s.scalars(
            sa.select(Invoice).where(
                Invoice.billing_contract_id == contract, Invoice.period_start == FEB_1
            )
        ).one()
        lines = list(
            s.scalars(
                sa.select(InvoiceLine)
                .where(InvoiceLine.invoice_id == invoice.id)
                .order_by(InvoiceLine.position)
            )
        )
        return [(x.kind.value, abs(x.quantity)) for x in lines if x.period_start == day]


def _licence_mails(mailbox: Mailbox, address: str) -> list[str]:
    return [
        f"{m['Subject']}\n{Mailbox.body(m)}"
        for m in mailbox.messages
        if m["To"] == address and "seats" in str(m["Subject"])
    ]


# -- 1: the starting quantity is the provider's ----------------------------------------------


def test_after_a_rejected_change_the_next_is_recorded_mailed_and_billed_from_what_the_provider_had(
    app: Flask, tenant: Tenant, mailbox: Mailbox
) -> None:
    """10 seats, ask 20, ask 25, 20 is rejected: the provider goes 10 -> 25, so the log, the
    mail and the invoice say 10 -> 25 (15 seats added, not 5)."""
    with time_machine.travel(JAN_13, tick=True):
        licensed = seed_licences(app, tenant)
        sub_id = licensed.subscriptions["a"]
        contract = _on_contract(app, licensed, sub_id)
        client = app.test_client()
        sign_in(client, ADMIN)
        assert confirm(client, sub_id, 20, version=0).status_code == 302
        assert confirm(client, sub_id, 25, version=1).status_code == 302
        twenty, twenty_five = changes_of(app, sub_id)[1:]
        _set_request_ids(app, {twenty.id: True, twenty_five.id: False})
        page = text(client.get(f"/subscriptions/{sub_id}"))
        # not provisioned yet: a request, not a move from a quantity the provider may not reach
        assert "Asked for 20 seats" in page and "Asked for 25 seats" in page
        assert "20 → 25" not in page
        drain(app)
        page = text(client.get(f"/subscriptions/{sub_id}"))
        assert "10 → 25" in page and "20 → 25" not in page
    twenty, twenty_five = changes_of(app, sub_id)[1:]
    assert twenty.state is ChangeState.REJECTED
    assert twenty_five.state is ChangeState.PROVISIONED
    assert (twenty_five.quantity_from, twenty_five.quantity_to) == (10, 25)
    assert subscription(app, sub_id).quantity == 25 == _demo_quantity(app, sub_id)
    [mail] = _licence_mails(mailbox, ADMIN)
    assert "from 10 to 25 seats is complete" in mail
    assert _changed_on(app, licensed.partner.id, contract, JAN_13.date()) == [("addition", 15)]


def test_a_reduction_after_a_rejected_addition_is_billed_as_the_addition_the_provider_made(
    app: Flask, tenant: Tenant, mailbox: Mailbox
) -> None:
    """The mirror case: 10 seats, ask 20, ask 15, 20 is rejected: the provider goes 10 -> 15,
    an addition of 5 seats, not a reduction of 5 (which would be credited or not billed)."""
    with time_machine.travel(JAN_13, tick=True):
        licensed = seed_licences(app, tenant)
        sub_id = licensed.subscriptions["a"]
        contract = _on_contract(app, licensed, sub_id)
        client = app.test_client()
        sign_in(client, ADMIN)
        assert confirm(client, sub_id, 20, version=0).status_code == 302
        assert confirm(client, sub_id, 15, version=1).status_code == 302
        twenty, fifteen = changes_of(app, sub_id)[1:]
        _set_request_ids(app, {twenty.id: True, fifteen.id: False})
        drain(app)
    twenty, fifteen = changes_of(app, sub_id)[1:]
    assert (twenty.state, fifteen.state) == (ChangeState.REJECTED, ChangeState.PROVISIONED)
    assert (fifteen.quantity_from, fifteen.quantity_to) == (10, 15)
    [mail] = _licence_mails(mailbox, ADMIN)
    assert "from 10 to 15 seats is complete" in mail
    assert _changed_on(app, licensed.partner.id, contract, JAN_13.date()) == [("addition", 5)]


def test_staff_marking_an_earlier_change_not_applied_leaves_the_next_starting_from_the_provider(
    app: Flask, tenant: Tenant
) -> None:
    licensed = seed_licences(app, tenant)
    sub_id = licensed.subscriptions["a"]
    client = app.test_client()
    sign_in(client, ADMIN)
    confirm(client, sub_id, 20, version=0)
    confirm(client, sub_id, 25, version=1)
    first, second = changes_of(app, sub_id)[1:]
    _set_request_ids(app, {second.id: False})
    with app.app_context(), get_database(app).sessions() as s:
        s.execute(sa.delete(OutboxItem))
        change = s.get_one(LicenceChange, first.id)
        change.state = ChangeState.FAILED
        s.commit()
        partner = s.get_one(Partner, licensed.partner.id)
        staff = s.get_one(StaffUser, licensed.staff["service"].id)
        provisioning.resolve(s, partner, change, staff, applied=False, note="never sent")
        s.commit()
    drain(app)
    second = changes_of(app, sub_id)[2]
    assert second.state is ChangeState.PROVISIONED
    assert (second.quantity_from, second.quantity_to) == (10, 25)


# -- 4: nothing stays in flight -------------------------------------------------------------------


def _buy(client: Any, licensed: Tenant, quantity: int, product: str = "standard") -> int:
    url = f"/subscriptions/buy/{licensed.products[product]}"
    done = post_form(client, url, {"quantity": str(quantity), "confirmed": "yes"})
    assert done.status_code == 302
    return int(done.headers["Location"].rsplit("/", 1)[1])


def test_a_change_of_a_subscription_whose_purchase_is_rejected_is_rejected_with_the_reason(
    app: Flask, tenant: Tenant
) -> None:
    """Buy 5, change to 7 while the purchase is pending, the provider rejects the purchase:
    the change is rejected with a clear reason, never left provisioning."""
    licensed = seed_licences(app, tenant)
    client = app.test_client()
    sign_in(client, ADMIN)
    new_id = _buy(client, licensed, 5)
    assert confirm(client, new_id, 7, version=0).status_code == 302
    purchase, seven = changes_of(app, new_id)
    assert seven.state is ChangeState.AWAITING
    _set_request_ids(app, {purchase.id: True})
    drain(app)
    purchase, seven = changes_of(app, new_id)
    assert purchase.state is ChangeState.REJECTED
    assert subscription(app, new_id).status is SubscriptionStatus.FAILED
    assert seven.state is ChangeState.REJECTED
    assert seven.provider_code == "portal.not_bought"
    assert seven.finished_at is not None
    page = text(client.get(f"/subscriptions/{new_id}"))
    assert "The purchase of this subscription failed, so this change could not be applied." in page


def test_a_handler_that_gives_up_leaves_the_change_failed_with_the_reason_for_staff(
    app: Flask, tenant: Tenant, mailbox: Mailbox
) -> None:
    licensed = seed_licences(app, tenant)
    sub_id = licensed.subscriptions["a"]
    client = app.test_client()
    sign_in(client, ADMIN)
    confirm(client, sub_id, 12)
    with app.app_context(), get_database(app).sessions() as s:
        # its provider's plugin is gone: every attempt raises
        s.get_one(Subscription, sub_id).provider_key = "retired"
        s.commit()
    drain(app)
    change = changes_of(app, sub_id)[-1]
    assert change.state is ChangeState.FAILED
    assert change.provider_code == "portal.gave_up"
    assert "retired" in (change.provider_answer or "")
    assert "failed" in Mailbox.body(mailbox.last_to("service-team@alpha.example")).lower()
    staff = app.test_client()
    sign_in(staff, "service@staff.alpha.example", staff=True)
    queue = text(staff.get("/staff/licence-changes?state=failed"))
    assert f"#{change.id}" in queue and "Retry" in queue


# -- 6: the credit hold at provisioning time ----------------------------------------------------


def _credit_hold(app: Flask, licensed: Tenant, on: bool) -> None:
    with app.app_context(), get_database(app).sessions() as s:
        partner = s.get_one(Partner, licensed.partner.id)
        customer = s.get_one(Customer, licensed.customers["a"].id)
        licences.set_credit_hold(s, partner, customer, on, "finance@staff.alpha.example", "test")


def test_a_change_queued_before_a_credit_hold_waits_for_the_hold_to_be_lifted(
    app: Flask, tenant: Tenant
) -> None:
    licensed = seed_licences(app, tenant)
    sub_id = licensed.subscriptions["a"]
    client = app.test_client()
    sign_in(client, ADMIN)
    confirm(client, sub_id, 12, version=0)
    confirm(client, sub_id, 14, version=1)
    first, second = changes_of(app, sub_id)[1:]
    _set_request_ids(app, {first.id: False, second.id: False})
    assert first.state is ChangeState.QUEUED
    _credit_hold(app, licensed, True)
    drain(app)
    first, second = changes_of(app, sub_id)[1:]
    assert (first.state, first.hold_reason) == (ChangeState.AWAITING, HoldReason.CREDIT_HOLD)
    assert second.state is ChangeState.AWAITING
    assert subscription(app, sub_id).quantity == 10 and _demo_quantity(app, sub_id) != 12
    assert "credit hold" in text(client.get(f"/subscriptions/{sub_id}"))
    _credit_hold(app, licensed, False)
    drain(app)
    assert [c.state for c in changes_of(app, sub_id)[1:]] == [ChangeState.PROVISIONED] * 2
    assert subscription(app, sub_id).quantity == 14 == _demo_quantity(app, sub_id)


# -- 5: release under the lock, fresh reads, and the sweep ---------------------------------------


def test_a_hold_put_on_while_a_change_is_at_the_provider_holds_the_next_one_back(
    app_factory: Any, tenant: Tenant
) -> None:
    """The hold read before the provider call is not reused after it."""
    app = licence_app(app_factory, REJECTION_RATE=str(RATE), DELAY_SECONDS="1.5")
    licensed = seed_licences(app, tenant)
    sub_id = licensed.subscriptions["a"]
    client = app.test_client()
    sign_in(client, ADMIN)
    confirm(client, sub_id, 12, version=0)
    confirm(client, sub_id, 14, version=1)
    first, second = changes_of(app, sub_id)[1:]
    _set_request_ids(app, {first.id: False, second.id: False})
    [item] = rows(app, sa.select(OutboxItem.id))

    def work() -> None:
        with app.app_context():
            run_item(app, item)

    worker = threading.Thread(target=work)
    with app.app_context():
        worker.start()
        deadline = time.monotonic() + 10
        while changes_of(app, sub_id)[1].state is not ChangeState.PROVISIONING:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        _credit_hold(app, licensed, True)  # while the first is at the provider
        worker.join(30)
    first, second = changes_of(app, sub_id)[1:]
    assert first.state is ChangeState.PROVISIONED
    assert (second.state, second.hold_reason) == (ChangeState.AWAITING, HoldReason.CREDIT_HOLD)
    assert subscription(app, sub_id).quantity == 12 == _demo_quantity(app, sub_id)
    _credit_hold(app, licensed, False)
    drain(app)
    assert subscription(app, sub_id).quantity == 14


def test_the_periodic_sweep_releases_an_awaiting_change_whose_reason_has_gone(
    app: Flask, tenant: Tenant
) -> None:
    licensed = seed_licences(app, tenant)
    sub_id = licensed.subscriptions["a"]
    client = app.test_client()
    sign_in(client, ADMIN)
    confirm(client, sub_id, 12)
    [change] = changes_of(app, sub_id)[1:]
    _set_request_ids(app, {change.id: False})
    with app.app_context(), get_database(app).sessions() as s:
        # what a race leaves: held for a credit hold that was lifted meanwhile, nothing queued
        s.execute(
            sa.update(LicenceChange)
            .where(LicenceChange.id == change.id)
            .values(state=ChangeState.AWAITING, hold_reason=HoldReason.CREDIT_HOLD)
        )
        s.execute(sa.delete(OutboxItem))
        s.commit()
    assert drain(app) == []
    job = wiring(app).periodic_jobs["portal.licences.sweep_awaiting"]
    assert "portal.licences.sweep_awaiting" in {
        entry["task"] for entry in wiring(app).beat_schedule.values()
    }
    with app.app_context():
        assert job(app) == 1
        assert job(app) == 0  # queued now: nothing else to release
    drain(app)
    assert changes_of(app, sub_id)[-1].state is ChangeState.PROVISIONED
    assert subscription(app, sub_id).quantity == 12


def test_the_sweep_fails_a_change_whose_work_the_outbox_gave_up_on(
    app: Flask, tenant: Tenant, mailbox: Mailbox
) -> None:
    licensed = seed_licences(app, tenant)
    sub_id = licensed.subscriptions["a"]
    client = app.test_client()
    sign_in(client, ADMIN)
    confirm(client, sub_id, 12)
    with app.app_context(), get_database(app).sessions() as s:
        # the outbox failed the item itself (its commit kept failing): the handler never ran
        s.execute(
            sa.update(OutboxItem).values(
                state=OutboxState.FAILED, attempts=3, last_error="gave up after 3 attempts"
            )
        )
        s.execute(
            sa.update(LicenceChange)
            .where(LicenceChange.subscription_id == sub_id, LicenceChange.sequence == 2)
            .values(state=ChangeState.PROVISIONING)
        )
        s.commit()
    job = wiring(app).periodic_jobs["portal.licences.sweep_awaiting"]
    with app.app_context():
        assert job(app) == 1
        assert job(app) == 0
    change = changes_of(app, sub_id)[-1]
    assert (change.state, change.provider_code) == (ChangeState.FAILED, "portal.gave_up")
    assert change.provider_answer == "gave up after 3 attempts"
    drain(app)
    assert "failed" in Mailbox.body(mailbox.last_to("service-team@alpha.example")).lower()


def test_the_sweep_leaves_changes_held_by_a_credit_hold_or_an_earlier_change(
    app: Flask, tenant: Tenant
) -> None:
    licensed = seed_licences(app, tenant)
    sub_id = licensed.subscriptions["a"]
    client = app.test_client()
    sign_in(client, ADMIN)
    confirm(client, sub_id, 12, version=0)
    confirm(client, sub_id, 14, version=1)  # awaiting the first, which is queued
    job = wiring(app).periodic_jobs["portal.licences.sweep_awaiting"]
    with app.app_context():
        assert job(app) == 0
    _credit_hold(app, licensed, True)
    confirm(client, licensed.subscriptions["a:new"], 6, version=0)
    with app.app_context():
        assert job(app) == 0
    assert changes_of(app, licensed.subscriptions["a:new"])[-1].state is ChangeState.AWAITING


# -- 7: a bundle half-applied --------------------------------------------------------------------


def _bundle(app: Flask, licensed: Tenant) -> None:
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


def _bundle_request_id(child_ids: list[int], rejected: list[bool]) -> str:
    """A request id whose parent and children the demo applies or rejects as ``rejected``."""
    from demo_provider.adapter import rejected_by_rule

    while True:
        candidate = str(uuid.uuid4())
        ids = [candidate] + [provisioning._child_request_id(candidate, c) for c in child_ids]
        if [rejected_by_rule(i, RATE) for i in ids] == rejected:
            return candidate


def test_a_bundle_bought_in_part_keeps_what_was_applied_and_needs_staff_attention(
    app: Flask, tenant: Tenant
) -> None:
    licensed = seed_licences(app, tenant)
    _bundle(app, licensed)
    client = app.test_client()
    sign_in(client, ADMIN)
    new_id = _buy(client, licensed, 4)
    children = rows(app, sa.select(Subscription).where(Subscription.parent_id == new_id))
    [purchase] = changes_of(app, new_id)
    with app.app_context(), get_database(app).sessions() as s:
        s.execute(
            sa.update(LicenceChange)
            .where(LicenceChange.id == purchase.id)
            .values(request_id=_bundle_request_id([c.id for c in children], [False, False, True]))
        )
        s.commit()
    drain(app)
    [purchase] = changes_of(app, new_id)
    assert purchase.state is ChangeState.FAILED  # staff act on it: retry or resolve
    assert purchase.provider_code == "portal.partly_applied"
    answer = purchase.provider_answer or ""
    assert "Applied: Microsoft 365 Business Standard" in answer
    assert "Exchange Online (Plan 1)" in answer.split("Not applied")[0]
    assert "Defender for Office 365: Quantity not allowed by the demo rules" in answer
    # what the provider applied is kept, with its reference: billable, and reachable later
    parent = subscription(app, new_id)
    assert (parent.status, parent.quantity) == (SubscriptionStatus.ACTIVE, 4)
    assert parent.provider_ref is not None
    exchange, defender = rows(
        app, sa.select(Subscription).where(Subscription.parent_id == new_id).order_by("id")
    )
    assert (exchange.status, exchange.quantity) == (SubscriptionStatus.ACTIVE, 4)
    assert exchange.provider_ref is not None
    assert (defender.status, defender.provider_ref) == (SubscriptionStatus.PENDING, None)
    page = text(client.get(f"/subscriptions/{new_id}"))
    assert "Only part of this change was applied at the provider" in page
    staff = app.test_client()
    sign_in(staff, "service@staff.alpha.example", staff=True)
    queue = text(staff.get("/staff/licence-changes?state=failed"))
    assert "Needs attention: only part of it was applied." in queue


def test_a_bundle_change_applied_in_part_records_the_parts_the_provider_changed(
    app: Flask, tenant: Tenant
) -> None:
    licensed = seed_licences(app, tenant)
    _bundle(app, licensed)
    client = app.test_client()
    sign_in(client, ADMIN)
    new_id = _buy(client, licensed, 4)
    children = [
        c.id for c in rows(app, sa.select(Subscription).where(Subscription.parent_id == new_id))
    ]
    [purchase] = changes_of(app, new_id)
    with app.app_context(), get_database(app).sessions() as s:
        s.execute(
            sa.update(LicenceChange)
            .where(LicenceChange.id == purchase.id)
            .values(request_id=_bundle_request_id(children, [False, False, False]))
        )
        s.commit()
    drain(app)
    assert confirm(client, new_id, 6, version=0).status_code == 302
    change = changes_of(app, new_id)[-1]
    with app.app_context(), get_database(app).sessions() as s:
        s.execute(
            sa.update(LicenceChange)
            .where(LicenceChange.id == change.id)
            .values(request_id=_bundle_request_id(children, [False, True, False]))
        )
        s.commit()
    drain(app)
    change = changes_of(app, new_id)[-1]
    assert (change.state, change.provider_code) == (ChangeState.FAILED, "portal.partly_applied")
    assert (change.quantity_from, change.effective_at is not None) == (4, True)
    assert subscription(app, new_id).quantity == 6
    quantities = [
        c.quantity
        for c in rows(
            app, sa.select(Subscription).where(Subscription.parent_id == new_id).order_by("id")
        )
    ]
    assert quantities == [4, 4]  # the first part was rejected, the second never sent


# -- 10: a staff retry checks the MCA -------------------------------------------------------------


def test_a_staff_retry_is_refused_without_the_customers_mca(
    app_factory: Any, tenant: Tenant
) -> None:
    app = licence_app(app_factory, FAILURE_RATE="1", RETRY_AFTER_SECONDS="0")
    licensed = seed_licences(app, tenant)
    sub_id = licensed.subscriptions["a"]
    client = app.test_client()
    sign_in(client, ADMIN)
    confirm(client, sub_id, 12)
    drain(app)
    failed = changes_of(app, sub_id)[-1]
    assert failed.state is ChangeState.FAILED
    with app.app_context(), get_database(app).sessions() as s:
        s.execute(
            sa.delete(AgreementAcceptance).where(
                AgreementAcceptance.customer_id == licensed.customers["a"].id
            )
        )
        s.commit()
        partner = s.get_one(Partner, licensed.partner.id)
        staff = s.get_one(StaffUser, licensed.staff["service"].id)
        change = s.get_one(LicenceChange, failed.id)
        with pytest.raises(ServiceError, match="Microsoft Customer Agreement"):
            provisioning.retry(s, partner, change, staff)
        s.rollback()
    assert changes_of(app, sub_id)[-1].state is ChangeState.FAILED
    assert [i for i in rows(app, sa.select(OutboxItem)) if i.state is OutboxState.PENDING] == []
