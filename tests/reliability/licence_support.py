"""In-process licence provisioning against the Partner Center fake, for B1, B2 and B4.

No Celery worker runs here: the tests drive :func:`portal.outbox.items.run_item` themselves (in
the test process, in threads, or in forked children that are SIGKILLed), which is what a worker
does with a message. The portal is a real app on the reliability database with the
``partner_center_provider`` plugin pointed at a :class:`FakePartnerCenter` with the plugin's
``STATIC_TOKEN`` (the fake only wants *a* bearer token). The broker is ``memory://``:
dispatches go nowhere and the tests find due work in the outbox table, as the sweep does.

Everything here reads behaviour, not the provider adapter's or the handler's internals: change
states, outbox item states, effects counted at the fake per ``MS-RequestId``, quantities on
both sides, and the requests the fake received (with :class:`FakeTap`'s timestamps).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from partner_center_provider.client import ms_request_id
from partner_center_provider.fake import FakePartnerCenter
from sqlalchemy.orm import Session

from portal import create_app
from portal.core.db import get_database, utcnow
from portal.core.extensions import rendering_in
from portal.core.roles import CustomerRole
from portal.features.catalogue.models import Product, ProductPrice
from portal.features.catalogue.rules import (
    BillingFrequency,
    ProductClass,
    ReductionBehaviour,
    SubscriptionType,
    Term,
)
from portal.features.identity.models import Membership, User
from portal.features.licences.models import (
    AgreementAcceptance,
    AttestationState,
    LicenceChange,
    Subscription,
    SubscriptionStatus,
)
from portal.features.licences.rules import ChangeState
from portal.features.licences.services.subscriptions import PROVISION_KIND, request_quantity
from portal.features.tenancy.models import Customer, Partner, PartnerHost
from portal.outbox.items import run_item
from portal.outbox.models import OutboxItem, OutboxState
from portal.testing.fake_server import FakeResponse, RecordedRequest

OFFER_ID = "CFQ7TTC0LH18:0001"
STATIC_TOKEN = "reliability-static-token"
FINAL_STATES = (ChangeState.PROVISIONED, ChangeState.REJECTED)
IN_PROGRESS = (ChangeState.QUEUED, ChangeState.PROVISIONING, ChangeState.RETRYING)


# -- the app -----------------------------------------------------------------------------------


def make_app(
    database_url: str,
    fake: FakePartnerCenter,
    *,
    storage_url: str = "memory://",
    call_limit: str = "100000 per minute",
    max_attempts: int = 8,
    timeout_seconds: float = 1.0,
    lease_seconds: int = 60,
) -> Flask:
    """The portal with the Partner Center plugin on ``fake`` (a static bearer token)."""
    plugin = {
        "STATIC_TOKEN": STATIC_TOKEN,  # the fake wants a bearer token, not Entra ID's
        "BASE_URL": fake.url,
        "TIMEOUT_SECONDS": str(timeout_seconds),
        "POLL_INTERVAL_SECONDS": "0.05",
        "POLL_LIMIT_SECONDS": "1",
    }
    config: dict[str, Any] = {
        "PORTAL_ENV": "testing",
        "PORTAL_SECRET_KEY": "reliability-test-secret-not-for-production",
        "PORTAL_DATABASE_URL": database_url,
        "PORTAL_BROKER_URL": "memory://",
        "PORTAL_TASK_QUEUE": f"reliability-{uuid.uuid4().hex[:10]}",
        "PORTAL_PLUGINS": "partner_center_provider",
        "PORTAL_PROVIDER": "partner_center",
        "PORTAL_PLUGIN_SETTINGS": {"partner_center": plugin},
        "PORTAL_RATELIMIT_STORAGE_URL": storage_url,
        "PORTAL_PROVIDER_CALL_LIMIT": call_limit,
        "PORTAL_PROVISIONING_MAX_ATTEMPTS": max_attempts,
        "PORTAL_OUTBOX_LEASE_SECONDS": lease_seconds,
        "PORTAL_MAIL_BACKEND": "console",
    }
    return create_app(config)


# -- seeding -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sub:
    """One subscription, in the portal (``id``) and at the fake (``tenant``, ``ref``)."""

    id: int
    customer_id: int
    tenant: str
    ref: str

    @property
    def path(self) -> str:
        return f"/v1/customers/{self.tenant}/subscriptions/{self.ref}"


@dataclass
class Seeded:
    """A partner of the test's own, with one Microsoft product."""

    partner_id: int
    product_id: int
    slug: str
    subscriptions: list[Sub] = field(default_factory=list)
    customers: int = 0


def seed_partner(app: Flask, *, max_quantity: int = 300) -> Seeded:
    slug = f"rel-{uuid.uuid4().hex[:8]}"
    with app.app_context(), get_database(app).sessions() as s:
        partner = Partner(
            slug=slug,
            name="Reliability Cloud",
            primary_colour="#0b5cad",
            support_email="help@reliability.example",
            hosts=[PartnerHost(host=f"{slug}.example")],
        )
        s.add(partner)
        s.flush()
        product = Product(
            partner_id=partner.id,
            name="Microsoft 365 E3",
            description="",
            product_class=ProductClass.RESALE,
            subscription_type=SubscriptionType.LICENCE,
            provider_key="partner_center",
            provider_offer_id=OFFER_ID,
            term=Term.P1M,
            billing_frequency=BillingFrequency.MONTHLY,
            min_quantity=1,
            max_quantity=max_quantity,
            reduction=ReductionBehaviour.ALLOWED,
            window_hours=168,
            requires_mca=True,
            active=True,
            prices=[
                ProductPrice(partner_id=partner.id, currency="USD", price_minor=3600, cost_minor=1)
            ],
        )
        s.add(product)
        s.commit()
        return Seeded(partner.id, product.id, slug)


def seed_customer(
    app: Flask, fake: FakePartnerCenter, seeded: Seeded, subscriptions: int, quantity: int = 10
) -> list[Sub]:
    """A customer tenant (MCA accepted and confirmed) with ``subscriptions`` subscriptions of
    ``quantity`` seats, bought a day ago (inside the fake's refund window: reductions pass)."""
    return seed_customers(app, fake, seeded, [subscriptions], quantity)[0]


def seed_customers(
    app: Flask,
    fake: FakePartnerCenter,
    seeded: Seeded,
    sizes: Sequence[int],
    quantity: int = 10,
) -> list[list[Sub]]:
    """One customer tenant per entry of ``sizes``, with that many subscriptions, in one
    transaction (see :func:`seed_customer`)."""
    bought = utcnow() - timedelta(days=1)
    made: list[list[Sub]] = []
    with app.app_context(), get_database(app).sessions() as s:
        pending: list[tuple[Customer, list[tuple[Subscription, str]]]] = []
        for size in sizes:
            number = seeded.customers
            seeded.customers += 1
            tenant = fake.add_customer(mca_accepted=True)
            customer = Customer(
                partner_id=seeded.partner_id,
                name=f"Customer {number}",
                ms_tenant_id=tenant,
                default_currency="USD",
                provider_key="partner_center",
            )
            user = User(
                partner_id=seeded.partner_id,
                email=f"admin@c{number}.{seeded.slug}.example",
                name=f"Admin {number}",
                password_hash="!",
            )
            s.add_all([customer, user])
            s.flush()
            s.add(
                Membership(
                    customer_id=customer.id, user_id=user.id, role=CustomerRole.ADMINISTRATOR
                )
            )
            s.add(
                AgreementAcceptance(
                    partner_id=seeded.partner_id,
                    customer_id=customer.id,
                    provider_key="partner_center",
                    template_id="seed-template",
                    agreement_link="https://www.microsoft.com/licensing/docs/customeragreement",
                    first_name="Signer",
                    last_name=customer.name,
                    email="signer@example.com",
                    accepted_at=bought,
                    request_id=str(uuid.uuid4()),
                    state=AttestationState.CONFIRMED,
                    confirmed_at=bought,
                )
            )
            rows: list[tuple[Subscription, str]] = []
            for _ in range(size):
                ref = fake.add_subscription(tenant, OFFER_ID, quantity, purchased_at=bought)
                subscription = Subscription(
                    partner_id=seeded.partner_id,
                    customer_id=customer.id,
                    product_id=seeded.product_id,
                    provider_key="partner_center",
                    provider_ref=ref,
                    status=SubscriptionStatus.ACTIVE,
                    quantity=quantity,
                    term=Term.P1M,
                    billing_frequency=BillingFrequency.MONTHLY,
                    currency="USD",
                    term_started_at=bought,
                    term_ends_on=(bought + timedelta(days=30)).date(),
                    version=0,
                    created_at=bought,
                )
                s.add(subscription)
                rows.append((subscription, ref))
            pending.append((customer, rows))
        s.flush()
        for customer, rows in pending:
            tenant = customer.ms_tenant_id or ""
            made.append([Sub(sub.id, customer.id, tenant, ref) for sub, ref in rows])
        s.commit()
    for subs in made:
        seeded.subscriptions.extend(subs)
    return made


def analyze(app: Flask) -> None:
    """Table statistics, as autovacuum keeps them in production. The reliability database is
    new in every session: without statistics PostgreSQL plans lookups among hundreds of fresh
    rows as scans, and the relay crawls on a busy machine."""
    with get_database(app).engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        connection.execute(sa.text("ANALYZE"))


# -- changes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Requested:
    id: int
    request_id: str
    quantity_to: int
    state: ChangeState


def request_changes(app: Flask, wanted: Sequence[tuple[Sub, int]]) -> list[Requested]:
    """Quantity changes through the use case (the customer's administrator confirms each),
    in one transaction, as the web view does; its commit queues the first of each
    subscription."""
    made: list[Requested] = []
    with app.app_context(), rendering_in("en"), get_database(app).sessions() as s:
        users: dict[int, User] = {}
        for sub, quantity in wanted:
            subscription = s.get_one(Subscription, sub.id)
            customer = s.get_one(Customer, sub.customer_id)
            partner = s.get_one(Partner, customer.partner_id)
            user = users.get(customer.id)
            if user is None:
                user = users[customer.id] = s.scalars(
                    sa.select(User)
                    .join(Membership, Membership.user_id == User.id)
                    .where(Membership.customer_id == customer.id)
                ).one()
            s.refresh(subscription, attribute_names=["version"])
            change = request_quantity(
                s, partner, customer, subscription, quantity, subscription.version, user
            )
            made.append(Requested(change.id, change.request_id, quantity, change.state))
        s.commit()
    return made


def changes(app: Flask, ids: Sequence[int]) -> list[LicenceChange]:
    with get_database(app).sessions() as s:
        return list(
            s.scalars(sa.select(LicenceChange).where(LicenceChange.id.in_(ids)).order_by("id"))
        )


def quantities(app: Flask, subs: Sequence[Sub]) -> dict[int, int]:
    with get_database(app).sessions() as s:
        rows = s.execute(
            sa.select(Subscription.id, Subscription.quantity).where(
                Subscription.id.in_([sub.id for sub in subs])
            )
        ).all()
    return {int(sid): int(quantity) for sid, quantity in rows}


def provision_items(app: Flask, partner_id: int) -> list[OutboxItem]:
    """The partner's ``licences.provision`` items, oldest first."""
    with get_database(app).sessions() as s:
        return list(
            s.scalars(
                sa.select(OutboxItem)
                .where(OutboxItem.partner_id == partner_id, OutboxItem.kind == PROVISION_KIND)
                .order_by(OutboxItem.id)
            )
        )


def item_of(items: Sequence[OutboxItem], change_id: int) -> OutboxItem | None:
    """The newest item provisioning ``change_id`` (staff may queue a change again)."""
    found = [item for item in items if int(str(item.payload.get("change_id"))) == change_id]
    return found[-1] if found else None


# -- the relay ---------------------------------------------------------------------------------


def _claimable(now: datetime) -> Any:
    due = sa.and_(OutboxItem.state == OutboxState.PENDING, OutboxItem.available_at <= now)
    abandoned = sa.and_(OutboxItem.state == OutboxState.RUNNING, OutboxItem.lease_expires_at < now)
    return sa.or_(due, abandoned)


def claimable_ids(app: Flask, partner_id: int, now: datetime | None = None) -> list[int]:
    """What a sweep would send now: the partner's due or abandoned provisioning items."""
    with get_database(app).sessions() as s:
        return list(
            s.scalars(
                sa.select(OutboxItem.id)
                .where(
                    OutboxItem.partner_id == partner_id,
                    OutboxItem.kind == PROVISION_KIND,
                    _claimable(now or utcnow()),
                )
                .order_by(OutboxItem.available_at, OutboxItem.id)
            )
        )


def relay_pass(app: Flask, partner_id: int) -> list[str]:
    """Run every item claimable now once (what a worker does with the sweep's messages)."""
    with app.app_context():
        return [run_item(app, item_id) for item_id in claimable_ids(app, partner_id)]


def make_time_pass(app: Flask, partner_id: int) -> None:
    """As if the leases and backoffs of the partner's provisioning items were over."""
    past = utcnow() - timedelta(seconds=1)
    with get_database(app).sessions() as s:
        s.execute(
            sa.update(OutboxItem)
            .where(
                OutboxItem.partner_id == partner_id,
                OutboxItem.kind == PROVISION_KIND,
                OutboxItem.state == OutboxState.PENDING,
            )
            .values(available_at=past)
        )
        s.execute(
            sa.update(OutboxItem)
            .where(
                OutboxItem.partner_id == partner_id,
                OutboxItem.kind == PROVISION_KIND,
                OutboxItem.state == OutboxState.RUNNING,
            )
            .values(lease_expires_at=past)
        )
        s.commit()


def drain(app: Flask, partner_id: int, rounds: int = 50) -> int:
    """Relay passes, time made to pass between them, until nothing is left; returns runs."""
    runs = 0
    for _ in range(rounds):
        make_time_pass(app, partner_id)
        outcomes = relay_pass(app, partner_id)
        if not outcomes:
            return runs
        runs += len(outcomes)
    pytest.fail(f"the outbox was not drained in {rounds} rounds")


# -- reading the fake --------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One request as the fake answered it."""

    at: float  # time.monotonic() when the answer was ready
    wall: datetime  # utcnow() then (time-machine's, when a test travels)
    method: str
    path: str
    status: int  # 0: dropped without an answer
    request_id: str
    delayed: bool  # answered late (a timeout at the client)


Hook = Callable[[RecordedRequest], FakeResponse | None]
AfterHook = Callable[[RecordedRequest, FakeResponse], None]


class FakeTap:
    """Wraps the fake's request handler: records every answer with its time, and lets a test
    act when a request arrives (``before``: may answer instead of the fake) or once the fake
    has done its work but before the answer leaves (``after``).

    ``close_connections``: every answer says ``Connection: close``, so no client keeps a
    connection alive; forked processes then never share one.
    """

    def __init__(self, fake: FakePartnerCenter, *, close_connections: bool = False) -> None:
        self.fake = fake
        self.close_connections = close_connections
        self.seen: list[Seen] = []
        self.before: Hook | None = None
        self.after: AfterHook | None = None
        self._lock = threading.Lock()
        self._original = fake.server.handler
        fake.server.handler = self._handle

    def _handle(self, request: RecordedRequest) -> FakeResponse:
        before = self.before
        response = before(request) if before is not None else None
        if response is None:
            response = self._original(request)
            after = self.after
            if after is not None:
                after(request, response)
        if self.close_connections and not response.drop:
            response = replace(response, headers={**response.headers, "Connection": "close"})
        seen = Seen(
            time.monotonic(),
            utcnow(),
            request.method,
            request.path,
            0 if response.drop else response.status,
            (request.headers.get("MS-RequestId") or "").strip(),
            response.delay > 0,
        )
        with self._lock:
            self.seen.append(seen)
        return response

    def answers(self, since: int = 0) -> list[Seen]:
        with self._lock:
            return self.seen[since:]

    def count(self) -> int:
        with self._lock:
            return len(self.seen)

    def clear(self) -> None:
        with self._lock:
            self.seen.clear()

    def close(self) -> None:
        self.fake.server.handler = self._original


def patches_of(tap: FakeTap, request_id: str) -> list[Seen]:
    wanted = ms_request_id(request_id)
    return [s for s in tap.answers() if s.method == "PATCH" and s.request_id == wanted]


def fake_quantity(fake: FakePartnerCenter, sub: Sub) -> int:
    found = fake.subscription(sub.tenant, sub.ref)
    assert found is not None, f"the fake has no subscription {sub.ref}"
    return int(found["quantity"])


@contextmanager
def session_of(app: Flask) -> Iterator[Session]:
    with app.app_context(), get_database(app).sessions() as s:
        yield s
