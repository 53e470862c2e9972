"""Licence use cases: preview and request quantity changes, buy subscriptions, release held
changes in order. Provisioning itself is background work
(:mod:`portal.features.licences.services.provisioning`).

Every request goes through the same checks whatever the browser sent (DESIGN §4): the
subscription belongs to the customer (the scoped session), the Microsoft Customer Agreement is
accepted for Microsoft products, the quantity is a whole number within the product's limits,
a reduction is allowed (or inside its window), and the page the customer confirmed still shows
the subscription as it is (``version``). The change is then recorded in the licence change log
and, unless something holds it back, queued for provisioning in the same transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from flask import Flask, current_app
from flask_babel import format_date, format_datetime
from sqlalchemy import Table, bindparam, case, func, select, true, update
from sqlalchemy.orm import Session

from portal.core.db import get_database, utcnow
from portal.core.errors import ServiceError, _
from portal.core.money import to_major
from portal.core.proration import Period, billing_period, prorated_minor
from portal.features.catalogue.models import Product
from portal.features.catalogue.rules import ReductionBehaviour
from portal.features.identity import audit
from portal.features.identity.models import User
from portal.features.licences.models import LicenceChange, Subscription, SubscriptionStatus
from portal.features.licences.rules import (
    HOLDING_STATES,
    ChangeKind,
    ChangeState,
    HoldReason,
    PriceEffect,
    QuantityDecision,
    QuantityLimits,
    ReducibleSeats,
    Refusal,
    SeatEvent,
    decide_quantity,
    reducible_seats,
)
from portal.features.licences.services.agreements import require_agreement
from portal.features.tenancy.models import Customer, Partner
from portal.features.tenancy.services import local_today
from portal.integrations.registry import integrations
from portal.outbox.items import enqueue
from portal.outbox.models import OutboxItem, OutboxState

PROVISION_KIND = "licences.provision"
NOTIFY_KIND = "licences.notify"
CHANGEABLE = (SubscriptionStatus.ACTIVE, SubscriptionStatus.PENDING)
# provider codes the portal itself gives a change (the page words them in the reader's language)
NOT_BOUGHT_CODE = "portal.not_bought"  # its subscription's purchase failed
PARTLY_APPLIED_CODE = "portal.partly_applied"  # some parts of a bundle applied, others not


class StaleSubscription(ServiceError):
    """Someone else changed the subscription after this page was shown (answer 409)."""


# -- reading ------------------------------------------------------------------------------------


def target_quantity(db_session: Session, subscription: Subscription) -> int:
    """The quantity the customer will have once every pending change is provisioned."""
    latest = db_session.scalar(
        select(LicenceChange.quantity_to)
        .where(
            LicenceChange.subscription_id == subscription.id,
            LicenceChange.state.in_(HOLDING_STATES),
        )
        .order_by(LicenceChange.sequence.desc())
        .limit(1)
    )
    return subscription.quantity if latest is None else latest


def change_log(db_session: Session, subscription: Subscription) -> list[LicenceChange]:
    return list(
        db_session.scalars(
            select(LicenceChange)
            .where(LicenceChange.subscription_id == subscription.id)
            .order_by(LicenceChange.sequence.desc())
        )
    )


def subscriptions_of(db_session: Session, customer: Customer) -> list[Subscription]:
    """The customer's subscriptions as they see them: a bundle is one line (its parent)."""
    return list(
        db_session.scalars(
            select(Subscription)
            .where(Subscription.customer_id == customer.id, Subscription.parent_id.is_(None))
            .order_by(Subscription.created_at, Subscription.id)
        )
    )


def pending_changes(db_session: Session, subscription_ids: list[int]) -> dict[int, LicenceChange]:
    """The latest change still on its way, per subscription (for status badges)."""
    if not subscription_ids:
        return {}
    rows = db_session.scalars(
        select(LicenceChange)
        .where(
            LicenceChange.subscription_id.in_(subscription_ids),
            LicenceChange.state.in_(HOLDING_STATES),
        )
        .order_by(LicenceChange.sequence)
    )
    return {change.subscription_id: change for change in rows}


def window_seats(
    db_session: Session, subscription: Subscription, now: datetime
) -> list[ReducibleSeats]:
    """Seats that can still be reduced, and until when (empty outside every window)."""
    product = subscription.product
    if product.reduction is not ReductionBehaviour.WITHIN_WINDOW:
        return []
    changes = db_session.execute(
        select(
            LicenceChange.quantity_from,
            LicenceChange.quantity_to,
            LicenceChange.effective_at,
            LicenceChange.requested_at,
        ).where(
            LicenceChange.subscription_id == subscription.id,
            LicenceChange.state.notin_((ChangeState.REJECTED,)),
            LicenceChange.requested_at >= subscription.term_started_at,
        )
    ).all()
    events = [
        SeatEvent(at=effective or requested, delta=to - from_)
        for from_, to, effective, requested in changes
    ]
    target = target_quantity(db_session, subscription)
    base = target - sum(event.delta for event in events)
    window = timedelta(hours=product.window_hours)
    return reducible_seats(base, subscription.term_started_at, events, now, window)


# -- previewing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preview:
    """What confirming a quantity would do: allowed or why not, and its price effect."""

    decision: QuantityDecision
    amount_minor: int  # + charge, - credit, 0 none
    currency: str
    period: Period | None
    unit_price_minor: int | None
    version: int

    @property
    def allowed(self) -> bool:
        return self.decision.allowed


def preview_quantity(
    db_session: Session,
    partner: Partner,
    subscription: Subscription,
    requested: int,
    now: datetime | None = None,
) -> Preview:
    now = now or utcnow()
    product = subscription.product
    current = target_quantity(db_session, subscription)
    limits = QuantityLimits(product.min_quantity, product.max_quantity, product.reduction)
    decision = decide_quantity(
        current, requested, limits, window_seats(db_session, subscription, now)
    )
    price = product.price_in(subscription.currency)
    period = None
    amount = 0
    if decision.allowed and price is not None:
        today = local_today(partner, now)
        anchor = local_today(partner, subscription.term_started_at)
        period = billing_period(anchor, subscription.billing_frequency.months, today)
        seats = abs(decision.seats)
        if decision.effect is PriceEffect.CHARGE:
            amount = prorated_minor(price.price_minor, seats, period, today)
        elif decision.effect is PriceEffect.CREDIT:
            amount = -prorated_minor(price.price_minor, seats, period, today)
    return Preview(
        decision=decision,
        amount_minor=amount,
        currency=subscription.currency,
        period=period,
        unit_price_minor=price.price_minor if price else None,
        version=subscription.version,
    )


def refusal_message(decision: QuantityDecision, subscription: Subscription) -> str:
    """Why the requested quantity is refused, for the customer."""
    product = subscription.product
    why = decision.refusal
    if why is Refusal.NOT_POSITIVE:
        return _("Enter a whole number of seats, 1 or more.")
    if why is Refusal.UNCHANGED:
        return _("The subscription already has %(count)d seats.", count=decision.current)
    if why is Refusal.BELOW_MINIMUM:
        return _(
            "%(product)s needs at least %(count)d seats.",
            product=product.name,
            count=product.min_quantity,
        )
    if why is Refusal.ABOVE_MAXIMUM:
        return _(
            "%(product)s allows at most %(count)d seats.",
            product=product.name,
            count=product.max_quantity,
        )
    if why is Refusal.REDUCTION_NOT_ALLOWED:
        return _(
            "Seats of %(product)s cannot be reduced during the term. You can lower the quantity "
            "for the renewal on %(date)s.",
            product=product.name,
            date=format_date(subscription.term_ends_on + timedelta(days=1)),
        )
    if why is Refusal.OUTSIDE_WINDOW:
        renewal = format_date(subscription.term_ends_on + timedelta(days=1))
        if decision.reducible and decision.reducible_until is not None:
            return _(
                "Only %(count)d seats can still be reduced, until %(until)s: seats can be "
                "reduced within %(hours)d hours of being bought. Other seats can be reduced at "
                "the renewal on %(date)s.",
                count=decision.reducible,
                until=format_datetime(decision.reducible_until),
                hours=product.window_hours,
                date=renewal,
            )
        return _(
            "The reduction window has closed: seats can be reduced within %(hours)d hours of "
            "being bought. You can lower the quantity for the renewal on %(date)s.",
            hours=product.window_hours,
            date=renewal,
        )
    raise ValueError(f"no message for {why!r}")


def describe_effect(preview: Preview) -> str:
    """The price effect, in words, for the confirmation page."""
    amount = to_major(abs(preview.amount_minor), preview.currency)
    money = f"{amount} {preview.currency}"
    effect = preview.decision.effect
    end = format_date(preview.period.end - timedelta(days=1)) if preview.period else ""
    if effect is PriceEffect.CHARGE:
        return _(
            "A prorated charge of %(amount)s for the added seats until %(end)s, on your next "
            "invoice.",
            amount=money,
            end=end,
        )
    if effect is PriceEffect.CREDIT:
        return _(
            "A prorated credit of %(amount)s for the removed seats until %(end)s, on your next "
            "invoice.",
            amount=money,
            end=end,
        )
    return _(
        "No refund: the current period is already billed; the lower quantity is billed from the "
        "next period."
    )


# -- requesting -------------------------------------------------------------------------------


def request_quantity(
    db_session: Session,
    partner: Partner,
    customer: Customer,
    subscription: Subscription,
    requested: int,
    expected_version: int,
    user: User,
    now: datetime | None = None,
) -> LicenceChange:
    """Record a quantity change and queue it (or hold it); the caller's commit sends it."""
    now = now or utcnow()
    ensure_changeable(db_session, customer, subscription)
    preview = preview_quantity(db_session, partner, subscription, requested, now)
    if not preview.allowed:
        raise ServiceError(refusal_message(preview.decision, subscription), "quantity")
    _take_version(db_session, subscription, expected_version)
    change = _record_change(
        db_session,
        customer,
        subscription,
        kind=ChangeKind.QUANTITY,
        quantity_from=preview.decision.current,
        quantity_to=requested,
        amount_minor=preview.amount_minor,
        user=user,
        now=now,
    )
    audit.record(
        db_session,
        partner_id=partner.id,
        customer_id=customer.id,
        actor=user.email,
        action="licence.change_requested",
        change=change.id,
        subscription=subscription.id,
        quantity_from=change.quantity_from,
        quantity_to=change.quantity_to,
        state=change.state.value,
    )
    return change


def ensure_changeable(db_session: Session, customer: Customer, subscription: Subscription) -> None:
    """Refuse (ServiceError) a change of this subscription: another customer's, a bundle's
    part, no longer active, or a Microsoft product without the customer's agreement."""
    if subscription.customer_id != customer.id or subscription.parent_id is not None:
        raise ServiceError(_("This subscription cannot be changed here."))
    if subscription.status not in CHANGEABLE:
        raise ServiceError(_("This subscription is no longer active and cannot be changed."))
    if subscription.product.requires_mca:
        require_agreement(db_session, customer)


def _take_version(db_session: Session, subscription: Subscription, expected_version: int) -> None:
    """Claim the next version of the subscription, or refuse if it moved on meanwhile.

    One conditional UPDATE: of two requests made from the same page, exactly one wins; the
    row lock it takes also serialises the sequence numbers of the change log.
    """
    result = db_session.execute(
        update(Subscription)
        .where(Subscription.id == subscription.id, Subscription.version == expected_version)
        .values(version=Subscription.version + 1)
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0) != 1:
        db_session.rollback()
        db_session.refresh(subscription)
        raise StaleSubscription(
            _(
                "Someone else changed this subscription while you were looking at it; it now "
                "comes to %(count)d seats. Check the quantity and confirm again.",
                count=target_quantity(db_session, subscription),
            ),
            "quantity",
        )
    db_session.refresh(subscription, attribute_names=["version"])


def _record_change(
    db_session: Session,
    customer: Customer,
    subscription: Subscription,
    *,
    kind: ChangeKind,
    quantity_from: int,
    quantity_to: int,
    amount_minor: int,
    user: User | None,
    now: datetime,
    actor: str | None = None,
) -> LicenceChange:
    sequence = (
        db_session.scalar(
            select(func.max(LicenceChange.sequence)).where(
                LicenceChange.subscription_id == subscription.id
            )
        )
        or 0
    ) + 1
    held_by_earlier = _has_holding_change(db_session, subscription.id)
    # read now, under the subscription's row lock the request took (its version): a hold
    # lifted meanwhile is seen here, or its release (which takes the same lock) sees this change
    on_hold = bool(
        db_session.scalar(
            select(Customer.credit_hold)
            .where(Customer.id == customer.id)
            .execution_options(populate_existing=True)
        )
    )
    change = LicenceChange(
        partner_id=subscription.partner_id,
        customer_id=customer.id,
        subscription_id=subscription.id,
        sequence=sequence,
        request_id=str(uuid.uuid4()),
        kind=kind,
        quantity_from=quantity_from,
        quantity_to=quantity_to,
        amount_minor=amount_minor,
        currency=subscription.currency,
        requested_by=actor or (user.email if user else "system"),
        requested_by_user_id=user.id if user else None,
        requested_at=now,
        state=ChangeState.AWAITING,
    )
    if on_hold:
        change.hold_reason = HoldReason.CREDIT_HOLD
    elif held_by_earlier:
        change.hold_reason = HoldReason.EARLIER_CHANGE
    db_session.add(change)
    db_session.flush()
    if change.hold_reason is None:
        _queue(db_session, change)
    return change


def _has_holding_change(db_session: Session, subscription_id: int) -> bool:
    return (
        db_session.scalar(
            select(LicenceChange.id)
            .where(
                LicenceChange.subscription_id == subscription_id,
                LicenceChange.state.in_(HOLDING_STATES),
            )
            .limit(1)
        )
        is not None
    )


def _queue(db_session: Session, change: LicenceChange) -> OutboxItem:
    change.state = ChangeState.QUEUED
    change.hold_reason = None
    return _enqueue_provision(db_session, change.id, change.partner_id, change.customer_id)


def _enqueue_provision(
    db_session: Session, change_id: int, partner_id: int, customer_id: int
) -> OutboxItem:
    return enqueue(
        db_session,
        PROVISION_KIND,
        {"change_id": change_id},
        partner_id=partner_id,
        customer_id=customer_id,
        max_attempts=int(current_app.config["PORTAL_PROVISIONING_MAX_ATTEMPTS"]),
    )


# -- buying ---------------------------------------------------------------------------------------


def purchasable_products(db_session: Session, customer: Customer) -> list[Product]:
    """Active, top-level products with a price in the customer's currency."""
    products = db_session.scalars(
        select(Product)
        .where(Product.active.is_(True), Product.bundle_id.is_(None))
        .order_by(Product.name, Product.id)
    )
    return [p for p in products if p.price_in(customer.default_currency) is not None]


def purchase(
    db_session: Session,
    partner: Partner,
    customer: Customer,
    product: Product,
    quantity: int,
    user: User,
    now: datetime | None = None,
) -> Subscription:
    """Buy ``quantity`` seats of ``product`` (and its components, for a bundle)."""
    now = now or utcnow()
    if not product.active or product.bundle_id is not None:
        raise ServiceError(_("This product is not for sale."), "product")
    price = product.price_in(customer.default_currency)
    if price is None:
        raise ServiceError(
            _("This product has no price in %(currency)s.", currency=customer.default_currency),
            "product",
        )
    if product.requires_mca:
        require_agreement(db_session, customer)
    limits = QuantityLimits(product.min_quantity, product.max_quantity, product.reduction)
    decision = decide_quantity(0, quantity, limits)
    if not decision.allowed:
        raise ServiceError(_purchase_refusal(decision, product), "quantity")
    provider_key = _provider_key(partner, customer, product)
    parent = _new_subscription(customer, product, provider_key, now)
    db_session.add(parent)
    for component in product.components:
        if component.active:
            child = _new_subscription(customer, component, provider_key, now)
            parent.children.append(child)
    db_session.flush()
    today = local_today(partner, now)
    period = billing_period(today, product.billing_frequency.months, today)
    change = _record_change(
        db_session,
        customer,
        parent,
        kind=ChangeKind.PURCHASE,
        quantity_from=0,
        quantity_to=quantity,
        amount_minor=prorated_minor(price.price_minor, quantity, period, today),
        user=user,
        now=now,
    )
    audit.record(
        db_session,
        partner_id=partner.id,
        customer_id=customer.id,
        actor=user.email,
        action="licence.purchase_requested",
        change=change.id,
        subscription=parent.id,
        product=product.id,
        quantity=quantity,
        state=change.state.value,
    )
    return parent


def _purchase_refusal(decision: QuantityDecision, product: Product) -> str:
    if decision.refusal is Refusal.BELOW_MINIMUM:
        return _(
            "%(product)s needs at least %(count)d seats.",
            product=product.name,
            count=product.min_quantity,
        )
    if decision.refusal is Refusal.ABOVE_MAXIMUM:
        return _(
            "%(product)s allows at most %(count)d seats.",
            product=product.name,
            count=product.max_quantity,
        )
    return _("Enter a whole number of seats, 1 or more.")


def _provider_key(partner: Partner, customer: Customer, product: Product) -> str:
    # the product's own provider, else the customer's, the partner's, the deployment's
    return (
        integrations()
        .provider(product.provider_key, customer.provider_key, partner.provider_key)
        .key
    )


def _new_subscription(
    customer: Customer, product: Product, provider_key: str, now: datetime
) -> Subscription:
    from dateutil.relativedelta import relativedelta

    return Subscription(
        partner_id=customer.partner_id,
        customer_id=customer.id,
        product_id=product.id,
        product=product,
        provider_key=provider_key,
        status=SubscriptionStatus.PENDING,
        quantity=0,
        term=product.term,
        billing_frequency=product.billing_frequency,
        currency=customer.default_currency,
        term_started_at=now,
        term_ends_on=(now + relativedelta(months=product.term.months)).date() - timedelta(days=1),
        version=0,
        created_at=now,
    )


# -- releasing held changes ---------------------------------------------------------------------


@dataclass(frozen=True)
class Released:
    """A change sent on its way, and the outbox item that carries it."""

    change: LicenceChange
    item: OutboxItem


_change = cast(Table, LicenceChange.__table__)
_subscription = cast(Table, Subscription.__table__)
_customer = cast(Table, Customer.__table__)
# the customer's credit hold as it is when the statement runs
_HELD = (
    select(_customer.c.credit_hold).where(_customer.c.id == _change.c.customer_id).scalar_subquery()
    == true()
)
# the earliest change that holds the subscription back, queued if it is only awaiting its turn
# and no credit hold applies now (else it keeps waiting, with the hold as its reason); one
# statement: the row lock, the fresh reads and the write (SQLite serialises writers anyway)
_RELEASE_NEXT = (
    update(_change)
    .where(
        _change.c.id
        == select(_change.c.id)
        .where(
            _change.c.subscription_id == bindparam("of_subscription"),
            _change.c.state.in_(HOLDING_STATES),
        )
        .order_by(_change.c.sequence)
        .limit(1)
        .with_for_update()
        .scalar_subquery(),
        _change.c.state == ChangeState.AWAITING,
    )
    .values(
        state=case((_HELD, ChangeState.AWAITING.value), else_=ChangeState.QUEUED.value),
        hold_reason=case((_HELD, HoldReason.CREDIT_HOLD.value), else_=None),
    )
    .returning(_change.c.id, _change.c.partner_id, _change.c.customer_id, _change.c.state)
)
_LOCK_SUBSCRIPTION = (
    select(_subscription.c.id).where(_subscription.c.id == bindparam("id")).with_for_update()
)


def lock_subscription(db_session: Session, subscription_id: int) -> None:
    """Take the subscription's row lock (PostgreSQL; SQLite serialises writers anyway): the
    release of its changes is decided under it, with reads made after it is taken."""
    db_session.connection().execute(_LOCK_SUBSCRIPTION, {"id": subscription_id})


def release_next(db_session: Session, customer: Customer, subscription_id: int) -> Released | None:
    """Queue the subscription's earliest awaiting change, if nothing before it holds it back
    and the customer is not on credit hold (read fresh, not from ``customer``).

    Called when staff resolve a change and when a credit hold is lifted; the caller commits.
    """
    lock_subscription(db_session, subscription_id)
    item = release_next_of(db_session, subscription_id)
    if item is None:
        return None
    change = db_session.get_one(
        LicenceChange, int(str(item.payload["change_id"])), populate_existing=True
    )
    return Released(change, item)


def release_next_of(db_session: Session, subscription_id: int) -> OutboxItem | None:
    """:func:`release_next` for a caller that holds the subscription's row lock and needs only
    the outbox item (the provisioning of every change ends here: no ORM object is loaded)."""
    row = (
        db_session.connection().execute(_RELEASE_NEXT, {"of_subscription": subscription_id}).first()
    )
    if row is None or row.state != ChangeState.QUEUED.value:
        return None  # nothing waiting, the earliest one still on its way (or failed), or held
    return _enqueue_provision(db_session, row.id, row.partner_id, row.customer_id)


def release_held(db_session: Session, customer: Customer) -> list[LicenceChange]:
    """After a credit hold is lifted: send each subscription's earliest awaiting change."""
    subscription_ids = db_session.scalars(
        select(LicenceChange.subscription_id)
        .where(
            LicenceChange.customer_id == customer.id,
            LicenceChange.state == ChangeState.AWAITING,
        )
        .distinct()
    ).all()
    released = [release_next(db_session, customer, sid) for sid in sorted(subscription_ids)]
    return [one.change for one in released if one is not None]


def set_credit_hold(
    db_session: Session,
    partner: Partner,
    customer: Customer,
    on_hold: bool,
    actor: str,
    reason: str,
) -> None:
    """Staff put the account on credit hold or lift it; commits. A hold staff put stays until
    staff lift it (paying never lifts it); staff putting a hold on an account the rules held
    makes it theirs."""
    put_credit_hold(db_session, partner, customer, on_hold, actor, reason, automatic=False)
    db_session.commit()


def put_credit_hold(
    db_session: Session,
    partner: Partner,
    customer: Customer,
    on_hold: bool,
    actor: str,
    reason: str,
    *,
    automatic: bool,
) -> bool:
    """Put the hold on or lift it, audited; when lifted, the changes recorded during the hold
    go out in order. ``automatic``: the rules did it (billing's credit holds). Whether anything
    changed; the caller commits."""
    if customer.credit_hold == on_hold:
        if on_hold and customer.credit_hold_automatic and not automatic:
            customer.credit_hold_automatic = False  # staff hold it now: paying won't lift it
            audit.record(
                db_session,
                partner_id=partner.id,
                customer_id=customer.id,
                actor=actor,
                action="credit.hold_on",
                reason=reason,
                automatic=False,
            )
            return True
        return False
    customer.credit_hold = on_hold
    customer.credit_hold_automatic = on_hold and automatic
    audit.record(
        db_session,
        partner_id=partner.id,
        customer_id=customer.id,
        actor=actor,
        action="credit.hold_on" if on_hold else "credit.hold_off",
        reason=reason,
        automatic=automatic,
    )
    if not on_hold:
        # the changes recorded during the hold go out now, in order, in the same commit; the
        # subscriptions' row locks first: a request or a provisioning that read the hold
        # before this commit has then committed its change, and it is seen here
        db_session.flush()
        db_session.execute(
            select(Subscription.id)
            .where(Subscription.customer_id == customer.id)
            .order_by(Subscription.id)
            .with_for_update()
        ).all()
        release_held(db_session, customer)
    return True


def release_stranded(db_session: Session, limit: int = 500) -> int:
    """The periodic sweep: release awaiting changes whose reason has gone (no credit hold, no
    earlier change still on its way), which a race may have left waiting. Returns how many
    went out; the caller commits. The subscriptions are read across tenants (a system job)."""
    candidates = db_session.scalars(
        select(LicenceChange.subscription_id)
        .join(Customer, Customer.id == LicenceChange.customer_id)
        .where(LicenceChange.state == ChangeState.AWAITING, Customer.credit_hold.is_(False))
        .distinct()
        .order_by(LicenceChange.subscription_id)
        .limit(limit)
        .execution_options(unscoped=True)
    ).all()
    released = 0
    for subscription_id in candidates:
        lock_subscription(db_session, subscription_id)
        if release_next_of(db_session, subscription_id) is not None:
            released += 1
    return released


_IN_FLIGHT = (ChangeState.QUEUED, ChangeState.RETRYING, ChangeState.PROVISIONING)
_ALIVE = (OutboxState.PENDING, OutboxState.RUNNING)
GAVE_UP_CODE = "portal.gave_up"


def fail_abandoned(db_session: Session, limit: int = 500) -> list[LicenceChange]:
    """The periodic sweep, second half: a change still in flight whose background work the
    outbox gave up on (no item of it pending or running, one failed) is failed, with the
    item's last error, so staff can act on it. Returns the changes failed; the caller commits
    and tells the service team."""
    in_flight = list(
        db_session.scalars(
            select(LicenceChange)
            .where(LicenceChange.state.in_(_IN_FLIGHT))
            .order_by(LicenceChange.id)
            .limit(limit)
            .execution_options(unscoped=True)
        )
    )
    if not in_flight:
        return []
    change_id = OutboxItem.payload["change_id"].as_integer()
    items = db_session.execute(
        select(change_id, OutboxItem.state, OutboxItem.last_error)
        .where(
            OutboxItem.kind == PROVISION_KIND,
            change_id.in_([change.id for change in in_flight]),
        )
        .order_by(OutboxItem.id)
    ).all()
    alive = {row[0] for row in items if row.state in _ALIVE}
    errors = {row[0]: row.last_error for row in items if row.state is OutboxState.FAILED}
    failed = []
    for change in in_flight:
        if change.id in alive or change.id not in errors:
            continue
        lock_subscription(db_session, change.subscription_id)
        db_session.refresh(change)
        if change.state not in _IN_FLIGHT:
            continue
        change.state = ChangeState.FAILED
        change.provider_code = GAVE_UP_CODE
        change.provider_answer = (errors[change.id] or "the background work gave up")[:2000]
        change.finished_at = utcnow()
        failed.append(change)
    return failed


def sweep_awaiting(app: Flask) -> int:
    """The periodic job: release awaiting changes whose reason has gone
    (:func:`release_stranded`) and fail in-flight changes whose work was given up
    (:func:`fail_abandoned`, the service team is told). Returns how many changes it moved."""
    with app.app_context(), get_database(app).sessions() as session:
        released = release_stranded(session)
        failed = fail_abandoned(session)
        for change in failed:
            enqueue(
                session,
                NOTIFY_KIND,
                {"change_id": change.id},
                partner_id=change.partner_id,
                customer_id=change.customer_id,
            )
        session.commit()
    return released + len(failed)
