"""Events to plugins (``portal_on_*``): once, after commit, through the outbox, one delivery per
subscribing plugin, carrying what a subscriber needs (partner, customer, number, dates, lines,
totals) so it never reads the portal's tables.

Two plugins written as projects in a temporary folder, loaded like any other: ``events_ledger``
(an accounting-like plugin: hears invoices, credit notes, payments and licence changes, and
enqueues its own follow-up work in the delivery's transaction; told to fail on demand) and
``events_notifier`` (hears issued invoices only, declares only ``event``). Invoices come from a
billing run started on the staff page and are issued and voided on the staff pages; licence
changes are asked for on the customer's page and provisioned by the demo provider.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from portal.cli import migrate
from portal.core.db import get_database, utcnow
from portal.core.scoping import Scope, set_scope
from portal.features.billing.models import Invoice, InvoiceState, PaymentKind
from portal.features.billing.services import documents as billing_documents
from portal.features.billing.services import schedule as billing_schedule
from portal.features.licences.models import LicenceChange
from portal.features.licences.services import provisioning
from portal.features.licences.services.provisioning import NOTIFY_KIND
from portal.integrations.delivery import DELIVER_KIND
from portal.integrations.events import (
    CreditNoteIssued,
    InvoiceIssued,
    LicenceChangeFinished,
    PaymentRecorded,
)
from portal.integrations.registry import integrations
from portal.outbox.items import enqueue, run_item
from portal.outbox.models import OutboxItem, OutboxState
from tests.integration.billing_support import buy, make_contract, make_product
from tests.integration.conftest import MakePlugin
from tests.support import HttpsClient, Tenant, post_form, seed_licences, sign_in

TODAY = utcnow().date()
FINANCE_STAFF = "finance@staff.alpha.example"

LEDGER = """
    from portal import hookimpl
    from portal.outbox.handlers import Done
    from portal.outbox.items import enqueue

    heard = []  # (hook, event, delivery_id), one per call
    posted = []  # the follow-up work run, by delivery id
    fail = {}  # hook -> the error to raise after enqueuing the follow-up

    def _hear(hook, event, session, delivery_id):
        heard.append((hook, event, delivery_id))
        enqueue(
            session,
            "events_ledger.post",
            {"delivery": delivery_id},
            partner_id=event.partner.id,
            customer_id=event.customer.id,
        )
        if hook in fail:
            raise RuntimeError(fail[hook])

    @hookimpl
    def portal_on_invoice_issued(event, session, delivery_id):
        _hear("invoice", event, session, delivery_id)

    @hookimpl
    def portal_on_credit_note_issued(event, session, delivery_id):
        _hear("credit_note", event, session, delivery_id)

    @hookimpl
    def portal_on_payment_recorded(event, session, delivery_id):
        _hear("payment", event, session, delivery_id)

    @hookimpl
    def portal_on_licence_change_finished(event, session, delivery_id):
        _hear("licence", event, session, delivery_id)

    def post(item, session):
        posted.append(item.payload["delivery"])
        return Done()

    @hookimpl
    def portal_outbox_handlers():
        return {"events_ledger.post": post}
"""

NOTIFIER = """
    from portal import hookimpl

    heard = []

    @hookimpl
    def portal_on_invoice_issued(event):
        heard.append(event)
"""


@pytest.fixture
def plugins(make_plugin: MakePlugin) -> Path:
    make_plugin("events_ledger", LEDGER)
    return make_plugin("events_notifier", NOTIFIER)


@pytest.fixture
def app(app_factory: Any, plugins: Path) -> Flask:
    made: Flask = app_factory(
        PORTAL_PLUGINS="events_ledger,events_notifier,demo_provider",
        PORTAL_PLUGIN_PATHS=str(plugins),
        PORTAL_PROVIDER="demo",
        PORTAL_PLUGIN_SETTINGS={
            "demo_provider": {"DELAY_SECONDS": "0", "FAILURE_RATE": "0", "REJECTION_RATE": "0"}
        },
        PORTAL_BROKER_URL="memory://",
        PORTAL_TASK_QUEUE=f"test-{uuid.uuid4().hex[:10]}",
    )
    migrate(made.config["PORTAL_DATABASE_URL"], integrations(made).migration_locations)
    return made


def ledger() -> Any:
    return sys.modules["events_ledger"]


def notifier() -> Any:
    return sys.modules["events_notifier"]


@pytest.fixture
def staff(client: HttpsClient, tenant: Tenant) -> HttpsClient:
    sign_in(client, FINANCE_STAFF, staff=True)
    return client


@pytest.fixture
def billed(app: Flask, tenant: Tenant) -> dict[str, int]:
    """Customer a on a monthly contract from the 1st of this month, 10 seats, 10 % tax."""
    first = TODAY.replace(day=1)
    product = make_product(app, tenant.partner.id)
    made = make_contract(app, tenant.customers["a"].id, anchor_on=first, tax_rate="0.1")
    buy(app, made, product, seats=10, on=first - timedelta(days=31))
    return {"contract": made}


def items(app: Flask, *where: Any) -> list[OutboxItem]:
    with app.app_context(), get_database(app).sessions() as s:
        return list(s.scalars(sa.select(OutboxItem).where(*where).order_by(OutboxItem.id)))


def deliveries(app: Flask) -> list[OutboxItem]:
    return items(app, OutboxItem.kind == DELIVER_KIND)


def run_due(app: Flask, kind: str) -> dict[int, str]:
    """Run the pending items of ``kind`` as a worker would; their outcomes by id."""
    pending = items(app, OutboxItem.kind == kind, OutboxItem.state == OutboxState.PENDING)
    with app.app_context():
        return {item.id: run_item(app, item.id) for item in pending}


def draft_by_staff_run(app: Flask, staff: HttpsClient) -> int:
    """Start the month's billing run on the staff page and let a worker run it: one draft."""
    first = TODAY.replace(day=1)
    post_form(staff, "/staff/billing/run", {"on": first.isoformat()}, "/staff/billing")
    assert set(run_due(app, billing_schedule.RUN_KIND).values()) == {"done"}
    with app.app_context(), get_database(app).sessions() as s:
        return s.scalars(sa.select(Invoice.id).where(Invoice.state == InvoiceState.DRAFT)).one()


def issue_on_staff_page(staff: HttpsClient, invoice_id: int) -> None:
    url = f"/staff/invoices/{invoice_id}"
    assert post_form(staff, f"{url}/issue", {}, url).status_code == 302


def test_an_issued_invoice_reaches_each_subscriber_once_with_what_it_needs(
    app: Flask, staff: HttpsClient, tenant: Tenant, billed: dict[str, int]
) -> None:
    draft = draft_by_staff_run(app, staff)
    assert deliveries(app) == [], "a draft is not announced"
    issue_on_staff_page(staff, draft)
    queued = deliveries(app)
    assert sorted(item.payload["plugin"] for item in queued) == [
        "events_ledger",
        "events_notifier",
    ]
    assert {item.payload["hook"] for item in queued} == {"portal_on_invoice_issued"}
    assert {(item.partner_id, item.customer_id) for item in queued} == {
        (tenant.partner.id, tenant.customers["a"].id)
    }
    assert ledger().heard == [] and notifier().heard == [], "nothing before a worker runs it"

    assert set(run_due(app, DELIVER_KIND).values()) == {"done"}
    [(hook, event, delivery_id)] = ledger().heard
    assert hook == "invoice" and isinstance(event, InvoiceIssued)
    assert notifier().heard == [event], "both hear the same event"
    assert event.invoice_id == draft and event.number == "INV-000001"
    assert (event.partner.id, event.partner.slug, event.partner.name) == (
        tenant.partner.id,
        "alpha",
        "Alpha Cloud",
    )
    customer = tenant.customers["a"]
    assert (event.customer.id, event.customer.name, event.customer.tenant_id) == (
        customer.id,
        customer.name,
        customer.ms_tenant_id,
    )
    assert event.issued_on == TODAY
    assert event.due_on > event.issued_on
    assert (event.period_start, event.currency) == (TODAY.replace(day=1), "USD")
    assert (event.subtotal_minor, event.tax_minor, event.total_minor) == (10_000, 1_000, 11_000)
    assert sum(line.amount_minor for line in event.lines) == event.subtotal_minor
    [line] = event.lines
    assert (line.position, line.kind, line.quantity) == (1, "advance", Decimal(10))
    assert "Microsoft 365 Business Standard" in line.description
    assert line.unit_price == Decimal("10.00")

    # the ledger's follow-up was committed with its delivery, and runs once
    [follow_up] = items(app, OutboxItem.kind == "events_ledger.post")
    assert follow_up.payload == {"delivery": delivery_id}
    assert set(run_due(app, "events_ledger.post").values()) == {"done"}
    assert ledger().posted == [delivery_id]

    # a delivery done is never run again: a duplicate message finds nothing to claim
    with app.app_context():
        assert {run_item(app, item.id) for item in queued} == {"not-claimable"}
    assert len(ledger().heard) == 1 and len(notifier().heard) == 1


def test_a_voided_invoice_reaches_the_ledger_as_a_void_credit_note(
    app: Flask, staff: HttpsClient, tenant: Tenant, billed: dict[str, int]
) -> None:
    draft = draft_by_staff_run(app, staff)
    issue_on_staff_page(staff, draft)
    run_due(app, DELIVER_KIND)
    [(_, issued, _)] = ledger().heard
    url = f"/staff/invoices/{draft}"
    assert post_form(staff, f"{url}/void", {"reason": "Ordered by mistake"}, url).status_code == 302
    [credit_delivery] = [i for i in deliveries(app) if i.state is OutboxState.PENDING]
    assert credit_delivery.payload["plugin"] == "events_ledger", "the notifier does not subscribe"
    run_due(app, DELIVER_KIND)
    hook, event, _ = ledger().heard[-1]
    assert hook == "credit_note" and isinstance(event, CreditNoteIssued)
    assert (event.kind, event.reason, event.number) == ("void", "Ordered by mistake", "CN-000001")
    assert (event.invoice_id, event.invoice_number) == (draft, "INV-000001")
    assert event.lines == issued.lines
    assert (event.subtotal_minor, event.tax_minor, event.total_minor) == (10_000, 1_000, 11_000)
    assert event.customer == issued.customer and event.partner == issued.partner
    assert len(notifier().heard) == 1


def test_a_failing_plugin_is_retried_alone_and_its_writes_go_with_its_failure(
    app: Flask,
    staff: HttpsClient,
    billed: dict[str, int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    ledger().fail["invoice"] = "the ledger's server is down"
    issue_on_staff_page(staff, draft_by_staff_run(app, staff))
    with caplog.at_level(logging.ERROR, logger="portal.integrations.delivery"):
        outcomes = run_due(app, DELIVER_KIND)
    by_plugin = {item.payload["plugin"]: item for item in deliveries(app)}
    assert outcomes[by_plugin["events_ledger"].id] == "retry"
    assert outcomes[by_plugin["events_notifier"].id] == "done"
    failed = by_plugin["events_ledger"]
    assert failed.state is OutboxState.PENDING and failed.attempts == 1
    assert "the ledger's server is down" in (failed.last_error or "")
    assert "plugin events_ledger failed in portal_on_invoice_issued" in caplog.text
    assert "RuntimeError: the ledger's server is down" in caplog.text  # the traceback is logged
    assert items(app, OutboxItem.kind == "events_ledger.post") == [], "rolled back with it"
    assert len(notifier().heard) == 1

    # the server is back: the retry delivers the same event under the same delivery id
    del ledger().fail["invoice"]
    with app.app_context(), get_database(app).sessions() as s:
        s.execute(
            sa.update(OutboxItem)
            .where(OutboxItem.id == failed.id)
            .values(available_at=utcnow() - timedelta(seconds=1))
        )
        s.commit()
    assert run_due(app, DELIVER_KIND) == {failed.id: "done"}
    first, second = ledger().heard
    assert first == second and first[2] == failed.id
    assert len(items(app, OutboxItem.kind == "events_ledger.post")) == 1
    assert len(notifier().heard) == 1, "the other plugin never hears it twice"


def test_an_issue_rolled_back_announces_nothing(
    app: Flask, staff: HttpsClient, tenant: Tenant, billed: dict[str, int]
) -> None:
    draft = draft_by_staff_run(app, staff)
    with app.app_context(), get_database(app).sessions() as s:
        partner = s.get_one(type(tenant.partner), tenant.partner.id)
        issued = billing_documents.issue_invoices(s, partner, [draft], "test")
        assert [invoice.id for invoice in issued] == [draft]
        assert s.scalar(sa.select(sa.func.count()).where(OutboxItem.kind == DELIVER_KIND)) == 2
        s.rollback()
    assert deliveries(app) == []


def test_payments_and_refunds_reach_the_ledger_once_per_gateway_transaction(
    app: Flask, staff: HttpsClient, tenant: Tenant, billed: dict[str, int]
) -> None:
    draft = draft_by_staff_run(app, staff)
    issue_on_staff_page(staff, draft)
    run_due(app, DELIVER_KIND)
    received = utcnow().replace(microsecond=0)
    with app.app_context(), get_database(app).sessions() as s:
        invoice = s.get_one(Invoice, draft)
        for kind, reference, amount in [
            (PaymentKind.PAYMENT, "pi_1", 11_000),
            (PaymentKind.PAYMENT, "pi_1", 11_000),  # the same transaction again: nothing
            (PaymentKind.REFUND, "re_1", 2_500),
        ]:
            billing_documents.record_payment(
                s,
                invoice,
                kind=kind,
                amount_minor=amount,
                gateway_key="demo",
                gateway_reference=reference,
                received_at=received,
                recorded_by="test",
            )
        s.commit()
    assert len([i for i in deliveries(app) if i.state is OutboxState.PENDING]) == 2
    run_due(app, DELIVER_KIND)
    payments = [event for hook, event, _ in ledger().heard if hook == "payment"]
    assert all(isinstance(event, PaymentRecorded) for event in payments)
    assert [(e.kind, e.amount_minor, e.gateway_reference) for e in payments] == [
        ("payment", 11_000, "pi_1"),
        ("refund", 2_500, "re_1"),
    ]
    paid = payments[0]
    assert (paid.invoice_id, paid.invoice_number, paid.currency) == (draft, "INV-000001", "USD")
    assert paid.received_at == received and paid.gateway_key == "demo"
    assert paid.customer.id == tenant.customers["a"].id and paid.partner.slug == "alpha"


def test_a_provisioned_licence_change_reaches_the_ledger_with_its_product(
    app: Flask, client: HttpsClient, tenant: Tenant
) -> None:
    licensed = seed_licences(app, tenant)
    sub_id = licensed.subscriptions["a"]
    sign_in(client, "subscription_manager@a.alpha.example")
    url = f"/subscriptions/{sub_id}"
    assert (
        post_form(client, f"{url}/change", {"quantity": "12", "version": "0"}, url).status_code
        == 302
    )
    for _ in range(5):  # provisioning, then the notice, then the delivery: as a worker would
        for kind in {item.kind for item in items(app, OutboxItem.state == OutboxState.PENDING)}:
            run_due(app, kind)
    # the seeded purchase was never told about either: its notice covers it, in its order
    events = [event for hook, event, _ in ledger().heard if hook == "licence"]
    assert [(e.quantity_from, e.quantity_to) for e in events] == [(0, 10), (10, 12)]
    event = events[-1]
    assert isinstance(event, LicenceChangeFinished)
    assert (event.state, event.quantity_from, event.quantity_to) == ("provisioned", 10, 12)
    assert event.subscription_id == sub_id and event.reason is None
    assert event.product.id == licensed.products["standard"] and event.product.offer_id
    assert event.customer.id == tenant.customers["a"].id and event.finished_at is not None


def test_with_no_subscriber_nothing_is_queued(
    app_factory: Any, tenant: Tenant, billed: dict[str, int]
) -> None:
    bare = app_factory(PORTAL_BROKER_URL="memory://")
    assert integrations(bare).subscribers("portal_on_invoice_issued") == []
    client: HttpsClient = bare.test_client()  # type: ignore[assignment]
    sign_in(client, FINANCE_STAFF, staff=True)
    issue_on_staff_page(client, draft_by_staff_run(bare, client))
    assert deliveries(bare) == []


def drain(app: Flask, rounds: int = 20) -> None:
    """Run every pending item, due or not (time is made to pass), until none is left."""
    for _ in range(rounds):
        with app.app_context(), get_database(app).sessions() as s:
            s.execute(
                sa.update(OutboxItem)
                .where(OutboxItem.state == OutboxState.PENDING)
                .values(available_at=utcnow() - timedelta(seconds=1))
            )
            s.commit()
        pending = items(app, OutboxItem.state == OutboxState.PENDING)
        if not pending:
            return
        with app.app_context():
            for item in pending:
                run_item(app, item.id)


def test_a_failed_change_that_staff_resolve_is_announced_again_with_its_final_state(
    app_factory: Any, app: Flask, plugins: Path, tenant: Tenant
) -> None:
    failing: Flask = app_factory(
        PORTAL_PLUGINS="events_ledger,demo_provider",
        PORTAL_PLUGIN_PATHS=str(plugins),
        PORTAL_PROVIDER="demo",
        PORTAL_PLUGIN_SETTINGS={
            "demo_provider": {
                "DELAY_SECONDS": "0",
                "FAILURE_RATE": "1",
                "REJECTION_RATE": "0",
                "RETRY_AFTER_SECONDS": "0",
            }
        },
        PORTAL_BROKER_URL="memory://",
        PORTAL_TASK_QUEUE=f"test-{uuid.uuid4().hex[:10]}",
        PORTAL_PROVISIONING_MAX_ATTEMPTS=2,
        PORTAL_SERVICE_TEAM_EMAIL="service-team@alpha.example",
    )
    licensed = seed_licences(failing, tenant)
    sub_id = licensed.subscriptions["a"]
    customer: HttpsClient = failing.test_client()  # type: ignore[assignment]
    sign_in(customer, "subscription_manager@a.alpha.example")
    url = f"/subscriptions/{sub_id}"
    assert (
        post_form(customer, f"{url}/change", {"quantity": "12", "version": "0"}, url).status_code
        == 302
    )
    drain(failing)
    told = [event for hook, event, _ in ledger().heard if hook == "licence"]
    failed = told[-1]
    assert (failed.state, failed.quantity_to) == ("failed", 12)
    assert failed.reason, "the provider's answer says why"

    staff: HttpsClient = failing.test_client()  # type: ignore[assignment]
    sign_in(staff, "service@staff.alpha.example", staff=True)
    resolved = post_form(
        staff,
        f"/staff/licence-changes/{failed.change_id}/resolve",
        {"outcome": "applied", "note": "Seen at 12 seats in Partner Center"},
        page="/staff/",
    )
    assert resolved.status_code == 302
    drain(failing)
    final = [event for hook, event, _ in ledger().heard if hook == "licence"][-1]
    assert (final.change_id, final.state, final.quantity_to) == (
        failed.change_id,
        "provisioned",
        12,
    )
    assert len([e for h, e, _ in ledger().heard if h == "licence"]) == len(told) + 1


def test_a_payment_event_left_pending_by_the_release_before_still_reaches_the_ledger(
    app_factory: Any, app: Flask, staff: HttpsClient, tenant: Tenant, billed: dict[str, int]
) -> None:
    draft = draft_by_staff_run(app, staff)
    issue_on_staff_page(staff, draft)
    bare = app_factory(PORTAL_BROKER_URL="memory://")  # no subscriber: nothing is queued
    with bare.app_context(), get_database(bare).sessions() as s:
        payment = billing_documents.record_payment(
            s,
            s.get_one(Invoice, draft),
            kind=PaymentKind.PAYMENT,
            amount_minor=4_000,
            gateway_key="demo",
            gateway_reference="pi_old",
            received_at=utcnow(),
            recorded_by="test",
        )
        assert payment is not None
        s.commit()
        payment_id = payment.id
    assert [i for i in deliveries(app) if i.payload["hook"] == "portal_on_payment_recorded"] == []
    with app.app_context(), get_database(app).sessions() as s:  # as the receipt queued it then
        enqueue(s, "payments.recorded", {"payment_id": payment_id}, partner_id=tenant.partner.id)
        s.commit()
    drain(app)
    [event] = [event for hook, event, _ in ledger().heard if hook == "payment"]
    assert (event.payment_id, event.amount_minor, event.invoice_number) == (
        payment_id,
        4_000,
        "INV-000001",
    )


def test_two_notices_of_one_change_at_once_tell_it_once(
    app: Flask, client: HttpsClient, tenant: Tenant, database_url: str
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite serialises writers: concurrent notices are a PostgreSQL question")
    licensed = seed_licences(app, tenant)
    sub_id = licensed.subscriptions["a"]
    with app.app_context(), get_database(app).sessions() as s:
        change_id = s.scalars(
            sa.select(LicenceChange.id).where(LicenceChange.subscription_id == sub_id)
        ).one()
        items_made = [
            enqueue(
                s,
                NOTIFY_KIND,
                {"change_id": change_id},
                partner_id=tenant.partner.id,
                customer_id=tenant.customers["a"].id,
            )
            for _ in range(2)
        ]
        s.commit()
        ids = [item.id for item in items_made]
    first_told = threading.Event()
    outcomes: dict[str, Any] = {}

    def second_notice() -> None:
        first_told.wait(10)
        with app.app_context(), get_database(app).sessions() as s:
            item = s.get_one(OutboxItem, ids[1])
            set_scope(s, Scope(tenant.partner.id, tenant.customers["a"].id))
            outcomes["second"] = provisioning.notify(item, s)  # waits for the first's commit
            s.commit()

    worker = threading.Thread(target=second_notice)
    worker.start()
    with app.app_context(), get_database(app).sessions() as s:
        item = s.get_one(OutboxItem, ids[0])
        set_scope(s, Scope(tenant.partner.id, tenant.customers["a"].id))
        outcomes["first"] = provisioning.notify(item, s)
        first_told.set()
        time.sleep(0.3)  # the second notice reaches the marked row and waits on it
        s.commit()
    worker.join(10)
    assert outcomes["first"].result == {"told": 1}
    assert outcomes["second"].result == {"told": 0}
    drain(app)
    assert len([e for h, e, _ in ledger().heard if h == "licence"]) == 1
