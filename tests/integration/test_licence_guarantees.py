"""The licence guarantees of the reliability notes (§6, block B), and where each is tested.

======  ======================================================================================
B1      A relay killed mid-provisioning (before the call, after the provider's effect, after
        our commit), 50 randomised trials per crash point: exactly one effect per request id,
        portal = provider after restart and a reconcile pass.
        ``tests/reliability/test_crash_trials.py``
        ::test_the_relay_killed_at_a_crash_point_applies_every_change_exactly_once; with real
        Celery workers, 2 trials per point: ``tests/reliability/test_provisioning.py``
        ::test_a_worker_killed_while_provisioning_loses_nothing_and_applies_once.
B2      The provider fault matrix (Hypothesis stateful, 20 % faults): nothing lost or doubled,
        rejections final with their reason, unknown outcomes read back, Retry-After honoured.
        ``tests/reliability/test_fault_matrix.py``
        ::test_provider_faults_lose_nothing_duplicate_nothing_and_honour_retry_after and
        ::test_a_429_is_retried_within_ten_percent_of_its_retry_after;
        the reason on the customer's page:
        :func:`test_a_reduction_the_provider_refuses_anyway_is_rejected_once_with_its_reason`
        here; B2-lite with real workers: ``tests/reliability/test_provisioning.py``
        ::test_provider_faults_lose_nothing_apply_once_and_rejections_are_final.
B3      Two browsers changing one subscription at once: one wins, the other gets a clear 409,
        no lost update, the final quantity is the last accepted request.
        ``tests/integration/test_licences.py``
        ::test_a_request_from_a_stale_page_loses_with_a_clear_message (one after the other);
        :func:`test_two_browsers_confirming_at_once_one_wins_and_nothing_is_lost` here (at the
        same moment, several rounds, then provisioned).
B4      A burst of 500 changes for one tenant within its budget, no retry storm after a 429.
        ``tests/reliability/test_throttle_budget.py`` (requests of every kind count).
B5      Four relays with SKIP LOCKED over 1,000 outbox rows: ``tests/reliability/``
        ``test_exactly_once.py``::test_a_thousand_items_on_four_workers_take_effect_exactly_once.
B6      A reduction after the cancellation window is refused in the page and by the server
        before any charge or credit is computed; the provider refusing anyway is handled as B2.
        ``tests/integration/test_licences.py``
        ::test_reduction_outside_the_window_is_refused_with_the_reason and
        ::test_seats_added_later_open_their_own_window;
        :func:`test_a_reduction_is_refused_once_the_window_has_passed` (time-machine across the
        window's end, nothing computed or recorded) and
        :func:`test_a_reduction_the_provider_refuses_anyway_is_rejected_once_with_its_reason`
        (Partner Center fake) here.
B7      Every purchase or quantity route without an accepted MCA is refused; the acceptance
        records user, time, IP and agreement version.
        ``tests/integration/test_licences.py``
        ::test_without_the_mca_every_purchase_and_change_is_refused and
        ::test_accepting_the_mca_records_the_signer_and_attests_it;
        :func:`test_every_purchase_and_quantity_route_is_refused_without_a_confirmed_mca`
        (every such route of the URL map, for no, pending and rejected acceptances), and
        ::test_the_quantity_preview_is_refused_without_a_confirmed_mca,
        :func:`test_the_use_cases_refuse_without_a_confirmed_mca` (the server, whatever the
        route) and :func:`test_the_acceptance_records_user_time_ip_and_agreement_version` here.
======  ======================================================================================
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
import time_machine
from flask import Flask
from partner_center_provider.client import ms_request_id
from partner_center_provider.fake import FakePartnerCenter

from portal.core.db import get_database, utcnow
from portal.core.errors import ServiceError
from portal.core.extensions import rendering_in
from portal.features.catalogue.models import Product
from portal.features.identity.models import AuditEvent, User
from portal.features.licences.models import (
    AgreementAcceptance,
    AttestationState,
    LicenceChange,
    Subscription,
)
from portal.features.licences.rules import ChangeState
from portal.features.licences.services import subscriptions as licences
from portal.features.licences.services.agreements import AgreementRequired
from portal.features.tenancy.models import Customer, Partner
from portal.outbox.models import OutboxItem
from tests.integration.test_licences import (
    changes_of,
    confirm,
    drain,
    licence_app,
    preview,
    subscription,
    text,
)
from tests.support import Tenant, csrf_token, post_form, seed_licences, sign_in

MCA_REFUSAL = "Accept the Microsoft Customer Agreement"
MCA_PENDING = "still being confirmed with Microsoft"


@pytest.fixture
def app(app_factory: Any) -> Flask:
    return licence_app(app_factory)


@pytest.fixture
def licensed(app: Flask, tenant: Tenant) -> Tenant:
    return seed_licences(app, tenant)


def _count(app: Flask, model: Any, *where: Any) -> int:
    with app.app_context(), get_database(app).sessions() as s:
        return int(s.scalar(sa.select(sa.func.count()).select_from(model).where(*where)) or 0)


def _footprint(app: Flask) -> dict[str, int]:
    """What a purchase or change would leave behind: its rows, queued work, audit events."""
    return {
        "changes": _count(app, LicenceChange),
        "subscriptions": _count(app, Subscription),
        "outbox": _count(app, OutboxItem),
        "audit": _count(app, AuditEvent, AuditEvent.action.like("licence.%")),
    }


# -- B3: two browsers at once ---------------------------------------------------------------------


def test_two_browsers_confirming_at_once_one_wins_and_nothing_is_lost(
    app: Flask, licensed: Tenant
) -> None:
    sub_id = licensed.subscriptions["a"]
    page = f"/subscriptions/{sub_id}"
    browsers = [app.test_client(), app.test_client()]
    sign_in(browsers[0], "administrator@a.alpha.example")
    sign_in(browsers[1], "subscription_manager@a.alpha.example")
    quantity = subscription(app, sub_id).quantity
    for round_ in range(5):
        version = subscription(app, sub_id).version
        wanted = [quantity + 1, quantity + 2]
        tokens = [csrf_token(b.get(page).data) for b in browsers]
        start = threading.Barrier(2)
        answers: list[Any] = [None, None]
        forms = [
            {"csrf_token": tokens[n], "quantity": str(wanted[n]), "version": str(version)}
            for n in range(2)
        ]

        def submit(n: int, form: dict[str, str], start: threading.Barrier, into: list[Any]) -> None:
            start.wait(timeout=10)  # both requests leave together
            into[n] = browsers[n].post(f"{page}/change", data=form)

        threads = [
            threading.Thread(target=submit, args=(n, forms[n], start, answers)) for n in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [302, 409], (round_, statuses)
        winner = next(n for n in range(2) if answers[n].status_code == 302)
        lost = text(answers[1 - winner])
        assert "Someone else changed this subscription" in lost
        assert f"now comes to {wanted[winner]} seats" in lost
        recorded = changes_of(app, sub_id)[-1]
        assert (recorded.quantity_to, recorded.sequence) == (wanted[winner], round_ + 2)
        drain(app)
        quantity = subscription(app, sub_id).quantity
        assert quantity == wanted[winner], "the accepted request was lost"
    # the one who lost confirms again on the fresh page: the last accepted request stands
    version = subscription(app, sub_id).version
    assert confirm(browsers[1], sub_id, quantity + 3, version=version).status_code == 302
    drain(app)
    assert subscription(app, sub_id).quantity == quantity + 3
    assert [c.state for c in changes_of(app, sub_id)[1:]] == [ChangeState.PROVISIONED] * 6


# -- B6: the reduction window -------------------------------------------------------------------


def test_a_reduction_is_refused_once_the_window_has_passed(
    client: Any, app: Flask, licensed: Tenant
) -> None:
    """The subscription bought a day ago may lose seats for 168 hours; a week later neither the
    page nor the server lets it, and nothing is priced, recorded, queued or audited."""
    sub_id = licensed.subscriptions["a:new"]
    sign_in(client, "administrator@a.alpha.example")
    assert "A prorated credit of" in text(preview(client, sub_id, "3"))
    before = _footprint(app)
    with time_machine.travel(utcnow() + timedelta(days=7), tick=True):
        late = app.test_client()
        sign_in(late, "administrator@a.alpha.example")
        page = text(late.get(f"/subscriptions/{sub_id}"))
        assert "The reduction window has closed" in page
        previewed = preview(late, sub_id, "3")
        assert previewed.status_code == 422
        assert "The reduction window has closed" in text(previewed)
        assert "A prorated credit of" not in text(previewed)
        refused = confirm(late, sub_id, 3)  # whatever the browser sends
        assert refused.status_code == 422
        assert "The reduction window has closed" in text(refused)
        with app.app_context(), rendering_in("en"), get_database(app).sessions() as s:
            sub = s.get_one(Subscription, sub_id)
            partner = s.get_one(Partner, licensed.partner.id)
            customer = s.get_one(Customer, sub.customer_id)
            user = s.get_one(User, licensed.users["a:administrator"].id)
            with pytest.raises(ServiceError, match="reduction window has closed"):
                licences.request_quantity(s, partner, customer, sub, 3, sub.version, user)
            s.rollback()
    assert _footprint(app) == before, "a refused reduction left something behind"
    assert subscription(app, sub_id).quantity == 5


@pytest.fixture
def partner_center(app_factory: Any, tenant: Tenant) -> Iterator[tuple[Flask, FakePartnerCenter]]:
    """The portal on the Partner Center fake; the seeded subscriptions exist there too,
    bought 30 days ago (past the fake's 7-day refund window)."""
    fake = FakePartnerCenter().start()
    try:
        app: Flask = app_factory(
            PORTAL_PLUGINS="partner_center_provider",
            PORTAL_PROVIDER="partner_center",
            PORTAL_PLUGIN_SETTINGS={
                "partner_center": {"STATIC_TOKEN": "guarantees-token", "BASE_URL": fake.url}
            },
            PORTAL_BROKER_URL="memory://",
            PORTAL_TASK_QUEUE=f"test-{uuid.uuid4().hex[:10]}",
            PORTAL_SERVICE_TEAM_EMAIL="service-team@alpha.example",
        )
        seed_licences(app, tenant, provider_key="partner_center", reduction="allowed")
        bought = utcnow() - timedelta(days=30)
        with app.app_context(), get_database(app).sessions() as s:
            for sub in s.scalars(sa.select(Subscription)):
                customer = s.get_one(Customer, sub.customer_id)
                assert customer.ms_tenant_id and sub.provider_ref
                fake.add_customer(customer.ms_tenant_id, mca_accepted=True)
                fake.add_subscription(
                    customer.ms_tenant_id,
                    "CFQ7TTC0LDPB:0001",
                    sub.quantity,
                    subscription_id=sub.provider_ref,
                    purchased_at=bought,
                )
        yield app, fake
    finally:
        fake.stop()
    assert not fake.errors, "the fake Partner Center failed:\n" + "\n".join(fake.errors)


def test_a_reduction_the_provider_refuses_anyway_is_rejected_once_with_its_reason(
    partner_center: tuple[Flask, FakePartnerCenter], tenant: Tenant
) -> None:
    """B6's last clause and B2's "shown to the customer": the portal allows the reduction (this
    product may always be reduced), Partner Center refuses it (its refund window has passed).
    The change is rejected after one call, its reason is on the subscription's page, nothing
    changes on either side, and it is never sent again."""
    app, fake = partner_center
    client = app.test_client()
    sub_id = tenant.subscriptions["a"]
    sign_in(client, "administrator@a.alpha.example")
    assert confirm(client, sub_id, 8).status_code == 302
    change = changes_of(app, sub_id)[-1]
    drain(app)
    drain(app)  # a second pass: nothing is sent again
    change = changes_of(app, sub_id)[-1]
    assert change.state is ChangeState.REJECTED
    assert change.provider_code == "800045"
    assert "cancellation window" in (change.provider_answer or "")
    sent = [
        r
        for r in fake.requests
        if r.method == "PATCH" and r.headers.get("MS-RequestId") == ms_request_id(change.request_id)
    ]
    assert len(sent) == 1, "a business rejection was sent again"
    assert fake.effects(change.request_id) == 0
    page = text(client.get(f"/subscriptions/{sub_id}"))
    assert "Rejected by the provider" in page
    assert "Seat reduction is not allowed outside the cancellation window" in page
    with app.app_context(), get_database(app).sessions() as s:
        sub = s.get_one(Subscription, sub_id)
        customer = s.get_one(Customer, sub.customer_id)
        assert customer.ms_tenant_id and sub.provider_ref
        remote = fake.subscription(customer.ms_tenant_id, sub.provider_ref)
    assert remote is not None and sub.quantity == remote["quantity"] == 10


# -- B7: the Microsoft Customer Agreement gate --------------------------------------------------

# every customer route that can buy or change licences; the agreement route itself is the way in
GATED = {
    "subscriptions.preview",
    "subscriptions.change",
    "subscriptions.buy",
    "subscriptions.auto_renew",
    "subscriptions.renewal_quantity",
}
UNGATED = {"subscriptions.agreement"}


def _set_agreement(app: Flask, customer_id: int, state: AttestationState | None) -> None:
    """The customer's acceptance: none, or one in ``state``."""
    with app.app_context(), get_database(app).sessions() as s:
        s.execute(
            sa.delete(AgreementAcceptance).where(AgreementAcceptance.customer_id == customer_id)
        )
        if state is not None:
            customer = s.get_one(Customer, customer_id)
            s.add(
                AgreementAcceptance(
                    partner_id=customer.partner_id,
                    customer_id=customer_id,
                    provider_key="demo",
                    template_id="demo-mca-2026-11",
                    agreement_link="https://www.microsoft.com/licensing/docs/customeragreement",
                    first_name="Signer",
                    last_name=customer.name,
                    email="signer@example.com",
                    accepted_at=utcnow(),
                    request_id=str(uuid.uuid4()),
                    state=state,
                )
            )
        s.commit()


@pytest.mark.parametrize("acceptance", [None, AttestationState.PENDING, AttestationState.REJECTED])
def test_every_purchase_and_quantity_route_is_refused_without_a_confirmed_mca(
    client: Any, app: Flask, licensed: Tenant, acceptance: AttestationState | None
) -> None:
    posting = {
        rule.endpoint
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("subscriptions.") and "POST" in (rule.methods or set())
    }
    assert posting == GATED | UNGATED, (
        "a customer route that posts to subscriptions is not in this test: add it to GATED "
        f"(and check it) or to UNGATED; new: {sorted(posting - GATED - UNGATED)}"
    )
    _set_agreement(app, licensed.customers["a"].id, acceptance)
    sign_in(client, "administrator@a.alpha.example")
    sub_id = licensed.subscriptions["a"]
    page = f"/subscriptions/{sub_id}"
    buy = f"/subscriptions/buy/{licensed.products['standard']}"
    expected = MCA_PENDING if acceptance is AttestationState.PENDING else MCA_REFUSAL
    before = _footprint(app)

    # subscriptions.change: the quantity itself
    changed = post_form(client, f"{page}/change", {"quantity": "12", "version": "0"}, page=page)
    assert changed.status_code == 422 and expected in text(changed)
    # subscriptions.buy, confirmed: the purchase itself
    bought = post_form(client, buy, {"quantity": "3", "confirmed": "yes"})
    assert bought.status_code == 422 and expected in text(bought)
    # the purchase's first step says why it will not go through
    first_step = post_form(client, buy, {"quantity": "3"})
    assert "Microsoft Customer Agreement is accepted" in text(first_step)
    # subscriptions.auto_renew and .renewal_quantity: what is sent to Microsoft for renewal
    renewing = post_form(
        client, f"{page}/auto-renew", {"auto_renew": "off", "version": "0"}, page=page
    )
    assert renewing.status_code == 422 and expected in text(renewing)
    scheduled = post_form(
        client, f"{page}/renewal-quantity", {"renewal_quantity": "12", "version": "0"}, page=page
    )
    assert scheduled.status_code == 422 and expected in text(scheduled)
    # the quantity preview is refused too (test below) and records nothing
    post_form(client, f"{page}/preview", {"quantity": "12", "version": "0"}, page=page)

    assert _footprint(app) == before, "a refused purchase or change left something behind"
    # the pages say so before anyone tries
    for url in (page, "/subscriptions", "/subscriptions/buy", buy):
        assert "Microsoft Customer Agreement is accepted" in text(client.get(url)), url


def test_the_quantity_preview_is_refused_without_a_confirmed_mca(
    client: Any, app: Flask, licensed: Tenant
) -> None:
    _set_agreement(app, licensed.customers["a"].id, None)
    sign_in(client, "administrator@a.alpha.example")
    previewed = preview(client, licensed.subscriptions["a"], "12")
    assert previewed.status_code == 422
    assert MCA_REFUSAL in text(previewed)


@pytest.mark.parametrize("acceptance", [None, AttestationState.PENDING, AttestationState.REJECTED])
def test_the_use_cases_refuse_without_a_confirmed_mca(
    app: Flask, licensed: Tenant, acceptance: AttestationState | None
) -> None:
    """The gate is in the use cases, not only in the views: a CLI, a job or a new route that
    calls them is refused the same way."""
    _set_agreement(app, licensed.customers["a"].id, acceptance)
    before = _footprint(app)
    with app.test_request_context(), rendering_in("en"), get_database(app).sessions() as s:
        partner = s.get_one(Partner, licensed.partner.id)
        customer = s.get_one(Customer, licensed.customers["a"].id)
        user = s.get_one(User, licensed.users["a:administrator"].id)
        sub = s.get_one(Subscription, licensed.subscriptions["a"])
        product = s.get_one(Product, licensed.products["standard"])
        with pytest.raises(AgreementRequired):
            licences.request_quantity(s, partner, customer, sub, 12, sub.version, user)
        s.rollback()
        with pytest.raises(AgreementRequired):
            licences.purchase(s, partner, customer, product, 3, user)
        s.rollback()
    assert _footprint(app) == before


def test_the_acceptance_records_user_time_ip_and_agreement_version(
    client: Any, app: Flask, licensed: Tenant
) -> None:
    customer_id = licensed.customers["a"].id
    _set_agreement(app, customer_id, None)
    sign_in(client, "administrator@a.alpha.example")
    started = utcnow()
    accepted = post_form(
        client,
        "/agreement",
        {"first_name": "Ada", "last_name": "Lovelace", "email": "ada@a.example", "accept": "y"},
        environ_overrides={"REMOTE_ADDR": "203.0.113.9"},
    )
    assert accepted.status_code == 302
    finished = utcnow()
    user = licensed.users["a:administrator"]
    with app.app_context(), get_database(app).sessions() as s:
        acceptance = s.scalars(
            sa.select(AgreementAcceptance).where(AgreementAcceptance.customer_id == customer_id)
        ).one()
        audit = s.scalars(
            sa.select(AuditEvent).where(
                AuditEvent.customer_id == customer_id, AuditEvent.action == "agreement.accepted"
            )
        ).one()
    # the acceptance row: who, when, from where, which agreement (its version: the template)
    assert acceptance.user_id == user.id
    assert started <= acceptance.accepted_at <= finished
    assert acceptance.ip == "203.0.113.9"
    assert acceptance.template_id == "demo-mca-2026-11"
    assert acceptance.agreement_link
    # the audit trail says the same
    assert audit.actor == user.email
    assert audit.ip == "203.0.113.9"
    assert started <= audit.created_at <= finished
    assert audit.detail["template"] == "demo-mca-2026-11"
    assert audit.detail["acceptance"] == acceptance.id
