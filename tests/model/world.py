"""The world a model-based journey runs in: a portal with the Partner Center plugin on the
project's fake Partner Center, an empty database per example, and the outbox run by hand.

Nothing here decides what is right: the reference model and the invariants live in
:mod:`tests.model.machine`. Everything here goes through the portal's own services and its
real outbox (``run_item``), except the scene every journey starts from (a partner, its
Microsoft products, one customer who accepted the Microsoft Customer Agreement, a staff
member), which the portal has no onboarding service for and which the reliability tests seed
the same way (:mod:`tests.reliability.licence_support`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

import sqlalchemy as sa
from flask import Flask
from partner_center_provider.fake import FakePartnerCenter
from sqlalchemy.orm import Session
from stripe_payments.fake import FakeStripe

from portal.core.db import Base, get_database, utcnow
from portal.core.extensions import rendering_in
from portal.core.roles import StaffRole
from portal.core.scoping import Scope, set_scope
from portal.features.catalogue.models import Product, ProductPrice
from portal.features.catalogue.rules import ReductionBehaviour
from portal.features.identity.models import Membership, StaffUser, User
from portal.features.licences.models import LicenceChange, Subscription
from portal.features.licences.services.subscriptions import sweep_awaiting
from portal.features.tenancy.models import Customer, Partner
from portal.outbox.handlers import wiring
from portal.outbox.items import claim, fail_exhausted, lease_duration, run_item
from portal.outbox.models import OutboxItem, OutboxState
from tests.reliability.licence_support import OFFER_ID, Seeded, seed_customers, seed_partner

BUNDLE_OFFER_ID = "CFQ7TTC0LFLZ:0002"


@dataclass
class Scene:
    """What every journey starts with."""

    partner_id: int
    customer_id: int
    tenant: str
    user_id: int
    staff_id: int
    single_product_id: int
    bundle_product_id: int
    seeded: Seeded = field(repr=False)


def empty_database(app: Flask) -> None:
    """Every table emptied and its ids restarted (SQLite's restart by themselves): a fresh
    database for each example. DELETE, not TRUNCATE: on these small tables PostgreSQL's
    TRUNCATE took 136 ms a journey, DELETE 8 ms."""
    engine = get_database(app).engine
    tables = list(reversed(Base.metadata.sorted_tables))
    with engine.begin() as conn:
        for table in tables:
            conn.execute(table.delete())
        if engine.dialect.name == "postgresql":
            conn.execute(
                sa.text(
                    "SELECT setval(seq, 1, false) FROM ("
                    " SELECT pg_get_serial_sequence(name, 'id') AS seq"
                    " FROM unnest(CAST(:names AS text[])) name"
                    ") sequences WHERE seq IS NOT NULL"
                ),
                {"names": [table.name for table in tables if "id" in table.c]},
            )


def set_the_scene(app: Flask, fake: FakePartnerCenter) -> Scene:
    seeded = seed_partner(app, max_quantity=300)
    [[]] = seed_customers(app, fake, seeded, [0])
    with app.app_context(), get_database(app).sessions() as s:
        single = s.get_one(Product, seeded.product_id)
        # as Microsoft's NCE: seats can be reduced, with a refund, within 7 days of buying them
        single.reduction = ReductionBehaviour.WITHIN_WINDOW
        single.window_hours = 168
        bundle = _like(single, "Microsoft 365 E5 bundle", BUNDLE_OFFER_ID)
        bundle.window_hours = single.window_hours
        bundle.prices = [
            ProductPrice(
                partner_id=seeded.partner_id, currency="USD", price_minor=5700, cost_minor=1
            )
        ]
        s.add(bundle)
        s.flush()
        for name in ("Teams Phone", "Audio Conferencing"):
            s.add(_like(single, name, OFFER_ID, bundle_id=bundle.id))
        staff = StaffUser(
            partner_id=seeded.partner_id,
            email=f"service@staff.{seeded.slug}.example",
            name="Service desk",
            role=StaffRole.SERVICE,
            password_hash="!",
        )
        s.add(staff)
        customer = s.scalars(
            sa.select(Customer).where(Customer.partner_id == seeded.partner_id)
        ).one()
        user_id = s.scalars(
            sa.select(Membership.user_id).where(Membership.customer_id == customer.id)
        ).one()
        s.commit()
        return Scene(
            partner_id=seeded.partner_id,
            customer_id=customer.id,
            tenant=customer.ms_tenant_id or "",
            user_id=user_id,
            staff_id=staff.id,
            single_product_id=seeded.product_id,
            bundle_product_id=bundle.id,
            seeded=seeded,
        )


def _like(single: Product, name: str, offer_id: str, **more: object) -> Product:
    """A Microsoft product of the scene made like ``single`` (its class, term, provider and
    reduction rules), 1 to 300 seats."""
    return Product(
        partner_id=single.partner_id,
        name=name,
        description="",
        product_class=single.product_class,
        subscription_type=single.subscription_type,
        provider_key=single.provider_key,
        provider_offer_id=offer_id,
        term=single.term,
        billing_frequency=single.billing_frequency,
        min_quantity=1,
        max_quantity=300,
        reduction=single.reduction,
        requires_mca=True,
        active=True,
        **more,
    )


@contextmanager
def service_session(app: Flask) -> Iterator[Session]:
    """A session as a web request has one (app context, English), for the use cases."""
    with app.app_context(), rendering_in("en"), get_database(app).sessions() as s:
        yield s


@dataclass(frozen=True)
class Parties:
    partner: Partner
    customer: Customer
    user: User
    staff: StaffUser


def parties(s: Session, scene: Scene) -> Parties:
    return Parties(
        s.get_one(Partner, scene.partner_id),
        s.get_one(Customer, scene.customer_id),
        s.get_one(User, scene.user_id),
        s.get_one(StaffUser, scene.staff_id),
    )


# -- the outbox, by hand -------------------------------------------------------------------------


def make_time_pass(app: Flask) -> None:
    """As if every backoff and lease were over (a worker that died has lost its lease)."""
    past = utcnow() - timedelta(seconds=1)
    with get_database(app).sessions() as s:
        s.execute(
            sa.update(OutboxItem)
            .where(OutboxItem.state == OutboxState.PENDING)
            .values(available_at=past)
        )
        s.execute(
            sa.update(OutboxItem)
            .where(OutboxItem.state == OutboxState.RUNNING)
            .values(lease_expires_at=past)
        )
        s.commit()


def claimable(app: Flask) -> list[int]:
    """Items a worker could take now (due, or abandoned by a worker that died), oldest first."""
    now = utcnow()
    due = sa.and_(OutboxItem.state == OutboxState.PENDING, OutboxItem.available_at <= now)
    # as the claim: a worker that died on every attempt left nothing to claim (the sweep fails it)
    abandoned = sa.and_(
        OutboxItem.state == OutboxState.RUNNING,
        OutboxItem.lease_expires_at < now,
        OutboxItem.attempts < OutboxItem.max_attempts,
    )
    with get_database(app).sessions() as s:
        return list(
            s.scalars(sa.select(OutboxItem.id).where(sa.or_(due, abandoned)).order_by("id"))
        )


def unfinished_items(app: Flask) -> dict[int, str]:
    """Items pending or running: their kinds by id."""
    with get_database(app).sessions() as s:
        return dict(
            s.execute(  # type: ignore[arg-type]
                sa.select(OutboxItem.id, OutboxItem.kind).where(
                    OutboxItem.state.in_((OutboxState.PENDING, OutboxState.RUNNING))
                )
            ).all()
        )


def run(app: Flask, item_id: int) -> str:
    """One item, as a worker runs it (its follow-ups included)."""
    with app.app_context():
        return run_item(app, item_id, worker_id="model-worker")


def crash(app: Flask, item_id: int) -> str:
    """A worker that claims the item and runs its handler, then dies before the commit that
    finishes it: whatever the handler committed on its own (and did at the provider) stays,
    the rest is lost, and the item keeps a lease that will expire."""
    database = get_database(app)
    with app.app_context():
        with database.sessions() as s:
            s.expire_on_commit = False  # the item goes on to the handler as claimed
            item = claim(s, item_id, "model-crasher", lease_duration(app))
            s.commit()
            if item is None:
                return "not-claimable"
            s.expunge(item)
        handler = wiring(app).handlers.get(item.kind)
        if handler is None:
            return "no-handler"
        with database.sessions() as s:
            if item.partner_id is not None:
                set_scope(s, Scope(item.partner_id, item.customer_id))
            # a crash is a crash, whatever the handler did
            with contextlib.suppress(Exception):
                handler(item, s)
            s.rollback()
    return "crashed"


def periodic_jobs(app: Flask) -> None:
    """What the scheduler runs every few minutes and the journeys rely on: the outbox sweep's
    failing of items whose worker died on every attempt, then the licence sweep (changes left
    awaiting with their reason gone are released, changes whose work was given up failed)."""
    fail_exhausted(app)
    sweep_awaiting(app)


def drain(app: Flask, rounds: int = 60) -> set[int]:
    """Run everything there is to run, time passing between rounds (and the periodic jobs with
    it), until nothing is left but items that chose to wait (``Defer``: autopay while someone
    pays on the checkout page), whose ids are returned."""
    waiting: set[int] = set()
    for _ in range(rounds):
        make_time_pass(app)
        periodic_jobs(app)
        ids = [item_id for item_id in claimable(app) if item_id not in waiting]
        if not ids:
            return waiting
        for item_id in ids:
            if run(app, item_id) == "deferred":
                waiting.add(item_id)
    raise AssertionError(f"the outbox was not drained in {rounds} rounds")


# -- reading -----------------------------------------------------------------------------------


def changes_of(app: Flask, customer_id: int) -> list[LicenceChange]:
    with get_database(app).sessions() as s:
        return list(
            s.scalars(
                sa.select(LicenceChange)
                .where(LicenceChange.customer_id == customer_id)
                .order_by(LicenceChange.subscription_id, LicenceChange.sequence)
            )
        )


def subscriptions_of(app: Flask, customer_id: int) -> list[Subscription]:
    with get_database(app).sessions() as s:
        return list(
            s.scalars(
                sa.select(Subscription)
                .where(Subscription.customer_id == customer_id)
                .order_by(Subscription.id)
            )
        )


def provider_quantities(fake: FakePartnerCenter, tenant: str) -> dict[str, int]:
    """What the provider holds: seats per subscription reference."""
    return {str(sub["id"]): int(sub["quantity"]) for sub in fake.subscriptions(tenant)}


def forget_everything(stripe: FakeStripe) -> None:
    """The fake Stripe as new (its server kept running): each example starts from nothing, as
    its database does (ids restart, so a kept idempotency key or an old invoice ref would
    otherwise meet the next example's)."""
    with stripe._lock:
        for table in (
            stripe.customers,
            stripe.sessions,
            stripe.intents,
            stripe.charges,
            stripe.refunds,
            stripe.disputes,
            stripe.methods,
            stripe.setup_intents,
            stripe._behaviour,
            stripe._order,
            stripe._kept,
        ):
            table.clear()
        stripe.events.clear()
        stripe._in_flight.clear()
        stripe._effects.clear()
        stripe._faults.clear()
