"""Renewals (issue 14, point 4): terms renew at their end or expire, the customer's
instructions for the next term, and the reminders before an annual or triennial term renews.

**Whose clock.** The truth is what the provider did (DESIGN §4). The periodic job
(:func:`renew_due`) only finds the subscriptions whose term has ended (``term_ends_on`` before
today in the partner's time zone) and queues one ``licences.renew`` item for each; the item's
handler (:func:`renew`) reads the subscription back from the provider and follows it:

- the provider shows a later term end: the term renewed there; the portal takes its dates
  (``term_started_on``, ``term_ends_on``) and its quantity;
- the provider shows the old term end: ended at the provider (``expired``, ``deleted``…) or
  not renewing (``auto_renew`` off) → the subscription expires; otherwise the provider has
  not rolled the term over yet and the item asks again later (the next run, at the latest);
- the provider tells no term end (or does not know the subscription, or the portal has no
  reference for it): the portal renews on its own clock (the day after the old end, for the
  product's term) when auto-renew is on (the provider's setting when it says one), telling the
  provider the scheduled quantity with a request id stable per term, else the subscription
  expires.

**Once.** A renewal is a compare-and-set on the subscription (its old term end and the active
status, under its row lock): a rerun, a duplicate item or two workers at once renew nothing
twice; the change-log entry's request id is derived from the subscription and the old term end
(unique). A renewal starts the new term at 00:00 of its first day in the partner's time zone:
the reduction window reopens for the whole quantity (``window_seats`` counts from the term's
start), and billing's own periods stay anchored on the same day. The scheduled quantity
applies as the renewal's own change (``renewal`` kind, provider-confirmed); billing settles
a quantity that moved at renewal like any applied change (on the next invoice), and bills the
new term in advance from the subscription row.

**Reminders.** ``PORTAL_RENEWAL_REMINDER_DAYS`` (``30,7``) days before an annual or
triennial term renews, the customer's Administrators are mailed, each reminder once per term
(a unique row per subscription, term end and threshold); a subscription first seen inside a
threshold gets that threshold's reminder only.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

from dateutil.relativedelta import relativedelta
from flask import Flask, current_app
from sqlalchemy import Table, func, select, update
from sqlalchemy.orm import Session

from portal.core.db import get_database, insert_ignoring, utcnow
from portal.core.errors import ServiceError, _
from portal.core.roles import CustomerRole
from portal.features.catalogue.rules import Term
from portal.features.identity import audit
from portal.features.identity.models import Membership, User
from portal.features.licences.models import (
    INSTRUCTION_IN_FLIGHT,
    InstructionKind,
    InstructionState,
    LicenceChange,
    RenewalInstruction,
    RenewalReminder,
    Subscription,
    SubscriptionStatus,
)
from portal.features.licences.rules import ChangeKind, ChangeState
from portal.features.licences.services.subscriptions import (
    _take_version,
    ensure_changeable,
    lock_subscription,
)
from portal.features.tenancy import mail
from portal.features.tenancy.models import Customer, Partner
from portal.features.tenancy.services import portal_base_url
from portal.integrations.providers import (
    AutoRenewSetting,
    ProviderAdapter,
    ProviderSubscription,
    QuantityChange,
    RenewalQuantity,
)
from portal.integrations.registry import integrations
from portal.integrations.results import BusinessRejection, Result, Succeeded, TechnicalFailure
from portal.outbox.handlers import Done, Outcome, RetryLater
from portal.outbox.items import enqueue
from portal.outbox.models import OutboxItem, OutboxState

log = logging.getLogger(__name__)

RENEW_KIND = "licences.renew"
INSTRUCT_KIND = "licences.renewal_instruction"
REMIND_KIND = "licences.renewal_reminder"
BATCH = 500  # subscriptions per transaction of the periodic job
ANSWER_LIMIT = 2000
RENEWAL_ACTOR = "renewal"  # who the change log says made a renewal
# the provider's statuses of a subscription that ended (Partner Center's, the demo's)
ENDED_AT_PROVIDER = frozenset({"expired", "deleted", "disabled", "cancelled"})
REMINDED_TERMS = (Term.P1Y, Term.P3Y)
NOT_YET_RENEWED = timedelta(hours=1)  # the provider has not rolled the term over: ask again

_subscription = cast(Table, Subscription.__table__)
_reminder = cast(Table, RenewalReminder.__table__)


# -- what the page shows ---------------------------------------------------------------------------


def instructions_of(
    db_session: Session, subscription: Subscription, limit: int = 5
) -> list[RenewalInstruction]:
    """The latest renewal instructions of the subscription, newest first."""
    return list(
        db_session.scalars(
            select(RenewalInstruction)
            .where(RenewalInstruction.subscription_id == subscription.id)
            .order_by(RenewalInstruction.id.desc())
            .limit(limit)
        )
    )


# -- the customer's instructions -------------------------------------------------------------------


def set_auto_renew(
    db_session: Session,
    partner: Partner,
    customer: Customer,
    subscription: Subscription,
    auto_renew: bool,
    expected_version: int,
    user: User,
) -> RenewalInstruction:
    """Turn the subscription's automatic renewal on or off at the provider (in the background,
    once); the caller commits."""
    _ensure_instructable(db_session, customer, subscription)
    if subscription.auto_renew == auto_renew:
        raise ServiceError(
            _("Automatic renewal is already on.")
            if auto_renew
            else _("Automatic renewal is already off."),
            "auto_renew",
        )
    return _record(
        db_session,
        partner,
        customer,
        subscription,
        expected_version,
        user,
        kind=InstructionKind.AUTO_RENEW,
        auto_renew=auto_renew,
    )


def schedule_renewal_quantity(
    db_session: Session,
    partner: Partner,
    customer: Customer,
    subscription: Subscription,
    quantity: int,
    expected_version: int,
    user: User,
) -> RenewalInstruction:
    """Schedule the quantity of the next term at the provider (in the background, once); the
    current term keeps its seats. The caller commits."""
    _ensure_instructable(db_session, customer, subscription)
    product = subscription.product
    if quantity < 1:
        raise ServiceError(_("Enter a whole number of seats, 1 or more."), "quantity")
    if quantity < product.min_quantity:
        raise ServiceError(
            _(
                "%(product)s needs at least %(count)d seats.",
                product=product.name,
                count=product.min_quantity,
            ),
            "quantity",
        )
    if quantity > product.max_quantity:
        raise ServiceError(
            _(
                "%(product)s allows at most %(count)d seats.",
                product=product.name,
                count=product.max_quantity,
            ),
            "quantity",
        )
    if not subscription.auto_renew:
        raise ServiceError(
            _("This subscription does not renew: turn automatic renewal on first."), "quantity"
        )
    if quantity == (subscription.renewal_quantity or subscription.quantity):
        raise ServiceError(
            _("The next term already has %(count)d seats.", count=quantity), "quantity"
        )
    return _record(
        db_session,
        partner,
        customer,
        subscription,
        expected_version,
        user,
        kind=InstructionKind.RENEWAL_QUANTITY,
        quantity=quantity,
    )


def _ensure_instructable(
    db_session: Session, customer: Customer, subscription: Subscription
) -> None:
    ensure_changeable(db_session, customer, subscription)
    if subscription.status is not SubscriptionStatus.ACTIVE or subscription.provider_ref is None:
        raise ServiceError(_("The renewal can be changed once the subscription is set up."))
    in_flight = db_session.scalar(
        select(RenewalInstruction.id)
        .where(
            RenewalInstruction.subscription_id == subscription.id,
            RenewalInstruction.state.in_(INSTRUCTION_IN_FLIGHT),
        )
        .limit(1)
    )
    if in_flight is not None:
        raise ServiceError(
            _(
                "A change of the renewal is still being sent to Microsoft. Try again once it "
                "is done."
            )
        )


def _record(
    db_session: Session,
    partner: Partner,
    customer: Customer,
    subscription: Subscription,
    expected_version: int,
    user: User,
    *,
    kind: InstructionKind,
    auto_renew: bool | None = None,
    quantity: int | None = None,
) -> RenewalInstruction:
    # the subscription's version: of two instructions sent from the same page, one goes
    _take_version(db_session, subscription, expected_version)
    instruction = RenewalInstruction(
        partner_id=partner.id,
        customer_id=customer.id,
        subscription_id=subscription.id,
        request_id=str(uuid.uuid4()),
        kind=kind,
        state=InstructionState.QUEUED,
        auto_renew=auto_renew,
        quantity=quantity,
        requested_by=user.email,
        requested_by_user_id=user.id,
        requested_at=utcnow(),
    )
    db_session.add(instruction)
    db_session.flush()
    enqueue(
        db_session,
        INSTRUCT_KIND,
        {"instruction_id": instruction.id},
        partner_id=partner.id,
        customer_id=customer.id,
        max_attempts=int(current_app.config["PORTAL_PROVISIONING_MAX_ATTEMPTS"]),
    )
    audit.record(
        db_session,
        partner_id=partner.id,
        customer_id=customer.id,
        actor=user.email,
        action="licence.renewal_instruction",
        instruction=instruction.id,
        subscription=subscription.id,
        kind=kind.value,
        auto_renew=auto_renew,
        quantity=quantity,
    )
    return instruction


def instruct(item: OutboxItem, session: Session) -> Outcome:
    """Outbox handler for ``licences.renewal_instruction``: send one instruction to the
    provider with its request id (the same on every attempt: one effect); the subscription
    then shows what the provider confirmed."""
    instruction = session.scalars(
        select(RenewalInstruction).where(
            RenewalInstruction.id == int(str(item.payload["instruction_id"])),
            RenewalInstruction.partner_id == item.partner_id,
            RenewalInstruction.customer_id == item.customer_id,
        )
    ).first()
    if instruction is None:
        return Done({"skipped": "missing"})
    if instruction.state not in INSTRUCTION_IN_FLIGHT:
        return Done({"skipped": instruction.state.value})
    subscription = session.get_one(Subscription, instruction.subscription_id)
    customer = session.get_one(Customer, instruction.customer_id)
    adapter = integrations().providers.get(subscription.provider_key)
    if adapter is None or subscription.provider_ref is None:
        return _instructed(
            session, instruction, InstructionState.REJECTED, "The provider does not know it."
        )
    tenant = _tenant(customer)
    result: Result[ProviderSubscription]
    if instruction.kind is InstructionKind.AUTO_RENEW:
        setting = AutoRenewSetting(
            instruction.request_id, tenant, subscription.provider_ref, bool(instruction.auto_renew)
        )
        result = adapter.set_auto_renew(setting)
    else:
        renewal = RenewalQuantity(
            instruction.request_id,
            tenant,
            subscription.provider_ref,
            int(instruction.quantity or 0),
        )
        result = adapter.schedule_renewal_quantity(renewal)
    if isinstance(result, TechnicalFailure):
        if item.attempts < item.max_attempts:
            instruction.state = InstructionState.RETRYING
            instruction.provider_answer = result.message[:ANSWER_LIMIT]
            session.commit()  # the page shows it retrying; the outbox tries again
            return RetryLater(result.message, result.retry_after)
        return _instructed(session, instruction, InstructionState.FAILED, result.message)
    if isinstance(result, BusinessRejection):
        return _instructed(session, instruction, InstructionState.REJECTED, result.reason)
    held = result.value
    lock_subscription(session, subscription.id)
    session.refresh(subscription)
    if instruction.kind is InstructionKind.AUTO_RENEW:
        subscription.auto_renew = (
            held.auto_renew if held.auto_renew is not None else bool(instruction.auto_renew)
        )
    else:
        subscription.renewal_quantity = (
            held.renewal_quantity if held.renewal_quantity is not None else instruction.quantity
        )
    return _instructed(session, instruction, InstructionState.DONE, None)


def _instructed(
    session: Session, instruction: RenewalInstruction, state: InstructionState, answer: str | None
) -> Outcome:
    instruction.state = state
    instruction.provider_answer = answer[:ANSWER_LIMIT] if answer else None
    instruction.finished_at = utcnow()
    return Done({"state": state.value})


def _tenant(customer: Customer) -> str:
    return customer.ms_tenant_id or f"customer-{customer.id}"


# -- renewing --------------------------------------------------------------------------------------


def _partner_days(session: Session, today: date | None) -> list[tuple[int, date, ZoneInfo]]:
    """Each partner with its today (``today`` for all, in tests) and its time zone."""
    now = utcnow()
    found = []
    for partner_id, timezone in session.execute(
        select(Partner.id, Partner.timezone).order_by(Partner.id)
    ).all():
        zone = ZoneInfo(timezone or "UTC")
        found.append((partner_id, today or now.astimezone(zone).date(), zone))
    return found


def _batches(session: Session, statement: Any) -> Iterator[list[Any]]:
    """``statement``'s rows (its first column the subscription id) in batches of
    :data:`BATCH`, keyset-paged on that id."""
    last = 0
    while True:
        rows = session.execute(
            statement.where(Subscription.id > last)
            .order_by(Subscription.id)
            .limit(BATCH)
            .execution_options(unscoped=True)
        ).all()
        if not rows:
            return
        last = rows[-1][0]
        yield list(rows)


def renew_due(app: Flask, today: date | None = None) -> int:
    """The periodic job's first half: queue a ``licences.renew`` item for every subscription
    whose term ended before today (the partner's), unless one is already on its way. Commits
    per batch; returns how many it queued."""
    queued = 0
    with app.app_context(), get_database(app).sessions() as session:
        max_attempts = int(app.config["PORTAL_PROVISIONING_MAX_ATTEMPTS"])
        for partner_id, day, _zone in _partner_days(session, today):
            due = select(
                Subscription.id, Subscription.customer_id, Subscription.term_ends_on
            ).where(
                Subscription.partner_id == partner_id,
                Subscription.parent_id.is_(None),
                Subscription.status == SubscriptionStatus.ACTIVE,
                Subscription.term_ends_on < day,
            )
            for rows in _batches(session, due):
                alive = _renewals_on_their_way(session, [row.id for row in rows])
                for row in rows:
                    if row.id in alive:
                        continue
                    enqueue(
                        session,
                        RENEW_KIND,
                        {"subscription_id": row.id, "term_ends_on": row.term_ends_on.isoformat()},
                        partner_id=partner_id,
                        customer_id=row.customer_id,
                        max_attempts=max_attempts,
                        app=app,
                    )
                    queued += 1
                session.commit()
    return queued


def _renewals_on_their_way(session: Session, subscription_ids: list[int]) -> set[int]:
    of = OutboxItem.payload["subscription_id"].as_integer()
    return set(
        session.scalars(
            select(of).where(
                OutboxItem.kind == RENEW_KIND,
                OutboxItem.state.in_((OutboxState.PENDING, OutboxState.RUNNING)),
                of.in_(subscription_ids),
            )
        )
    )


@dataclass(frozen=True)
class _NewTerm:
    first_day: date
    ends_on: date
    quantity: int
    answer: str | None = None


_EXPIRE = "expire"


def renew(item: OutboxItem, session: Session) -> Outcome:
    """Outbox handler for ``licences.renew``: renew or expire one subscription whose term
    ended, following what the provider did (see the module's docstring)."""
    old_end = date.fromisoformat(str(item.payload["term_ends_on"]))
    subscription = session.scalars(
        select(Subscription).where(
            Subscription.id == int(str(item.payload["subscription_id"])),
            Subscription.partner_id == item.partner_id,
            Subscription.customer_id == item.customer_id,
        )
    ).first()
    if (
        subscription is None
        or subscription.status is not SubscriptionStatus.ACTIVE
        or subscription.term_ends_on != old_end
    ):
        return Done({"skipped": "not due"})
    partner = session.get_one(Partner, subscription.partner_id)
    customer = session.get_one(Customer, subscription.customer_id)
    zone = ZoneInfo(partner.timezone or "UTC")
    adapter = integrations().providers.get(subscription.provider_key)
    outcome = _what_happened(session, item, adapter, subscription, customer, old_end)
    if isinstance(outcome, RetryLater):
        return outcome
    if isinstance(outcome, Done):
        return outcome
    if outcome == _EXPIRE:
        return _expire(session, subscription, old_end)
    assert isinstance(outcome, _NewTerm)
    return _renew(session, subscription, old_end, outcome, zone)


def _what_happened(
    session: Session,
    item: OutboxItem,
    adapter: ProviderAdapter | None,
    subscription: Subscription,
    customer: Customer,
    old_end: date,
) -> _NewTerm | str | RetryLater | Done:
    tenant = _tenant(customer)
    ref = subscription.provider_ref
    held: ProviderSubscription | None = None
    if adapter is not None and ref is not None:
        read = adapter.get_subscription(tenant, ref)
        if isinstance(read, TechnicalFailure):
            return RetryLater(read.message, read.retry_after)
        if isinstance(read, Succeeded):
            held = read.value
    auto_renew = held.auto_renew if held is not None and held.auto_renew is not None else None
    if auto_renew is None:
        auto_renew = subscription.auto_renew
    if held is not None and held.term_ends_on is not None:
        if held.term_ends_on > old_end:  # renewed at the provider: its dates and quantity
            first = held.term_started_on
            if first is None or first <= old_end:
                first = old_end + timedelta(days=1)
            return _NewTerm(first, held.term_ends_on, held.quantity)
        if held.status.lower() in ENDED_AT_PROVIDER or not auto_renew:
            return _EXPIRE
        if item.attempts < item.max_attempts:
            return RetryLater("the provider has not renewed the term yet", NOT_YET_RENEWED)
        return Done({"skipped": "not renewed at the provider yet"})  # the next run asks again
    if held is not None and held.status.lower() in ENDED_AT_PROVIDER:
        return _EXPIRE
    if not auto_renew:
        return _EXPIRE
    # the portal's clock: the day after the old end, for the subscription's term
    first = old_end + timedelta(days=1)
    ends_on = first + relativedelta(months=subscription.term.months) - timedelta(days=1)
    quantity = held.quantity if held is not None else subscription.quantity
    scheduled = subscription.renewal_quantity
    if held is not None and held.renewal_quantity is not None:
        scheduled = held.renewal_quantity
    if scheduled is None or scheduled == quantity:
        return _NewTerm(first, ends_on, quantity)
    if adapter is None or ref is None or held is None:
        return _NewTerm(first, ends_on, scheduled)
    asked = adapter.set_quantity(
        QuantityChange(_renewal_request_id(subscription.id, old_end), tenant, ref, scheduled)
    )
    if isinstance(asked, TechnicalFailure):
        return RetryLater(asked.message, asked.retry_after)
    if isinstance(asked, BusinessRejection):
        # the term renews with the seats it had; the refusal is on the change log
        return _NewTerm(first, ends_on, quantity, asked.reason)
    return _NewTerm(first, ends_on, asked.value.quantity)


def _renewal_request_id(subscription_id: int, old_end: date) -> str:
    """Stable for one renewal of one subscription: the provider applies it once."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"portal-renewal:{subscription_id}:{old_end}"))


def _renew(
    session: Session, subscription: Subscription, old_end: date, term: _NewTerm, zone: ZoneInfo
) -> Outcome:
    lock_subscription(session, subscription.id)
    starts_at = datetime.combine(term.first_day, time(), tzinfo=zone).astimezone(UTC)
    old_quantity = subscription.quantity
    moved = session.execute(
        update(_subscription)
        .where(
            _subscription.c.id == subscription.id,
            _subscription.c.term_ends_on == old_end,
            _subscription.c.status == SubscriptionStatus.ACTIVE,
        )
        .values(
            term_started_at=starts_at,
            term_ends_on=term.ends_on,
            quantity=term.quantity,
            renewal_quantity=None,
            version=_subscription.c.version + 1,
        )
    )
    if getattr(moved, "rowcount", 0) != 1:
        session.rollback()
        return Done({"skipped": "renewed meanwhile"})
    # a bundle's parts renew with it
    session.execute(
        update(_subscription)
        .where(_subscription.c.parent_id == subscription.id)
        .values(term_started_at=starts_at, term_ends_on=term.ends_on, quantity=term.quantity)
    )
    now = utcnow()
    sequence = (
        session.scalar(
            select(func.max(LicenceChange.sequence)).where(
                LicenceChange.subscription_id == subscription.id
            )
        )
        or 0
    ) + 1
    change = LicenceChange(
        partner_id=subscription.partner_id,
        customer_id=subscription.customer_id,
        subscription_id=subscription.id,
        sequence=sequence,
        request_id=_renewal_request_id(subscription.id, old_end),
        kind=ChangeKind.RENEWAL,
        state=ChangeState.PROVISIONED,
        quantity_from=old_quantity,
        quantity_to=term.quantity,
        amount_minor=0,
        currency=subscription.currency,
        requested_by=RENEWAL_ACTOR,
        requested_at=now,
        attempts=1,
        provider_answer=term.answer[:ANSWER_LIMIT] if term.answer else None,
        effective_at=starts_at,
        finished_at=now,
        notified_at=now,
    )
    session.add(change)
    audit.record(
        session,
        partner_id=subscription.partner_id,
        customer_id=subscription.customer_id,
        actor=RENEWAL_ACTOR,
        action="licence.renewed",
        subscription=subscription.id,
        term_ends_on=term.ends_on.isoformat(),
        quantity_from=old_quantity,
        quantity_to=term.quantity,
    )
    return Done({"renewed": term.ends_on.isoformat(), "quantity": term.quantity})


def _expire(session: Session, subscription: Subscription, old_end: date) -> Outcome:
    lock_subscription(session, subscription.id)
    ended = session.execute(
        update(_subscription)
        .where(
            _subscription.c.id == subscription.id,
            _subscription.c.term_ends_on == old_end,
            _subscription.c.status == SubscriptionStatus.ACTIVE,
        )
        .values(status=SubscriptionStatus.EXPIRED, version=_subscription.c.version + 1)
    )
    if getattr(ended, "rowcount", 0) != 1:
        session.rollback()
        return Done({"skipped": "renewed meanwhile"})
    session.execute(
        update(_subscription)
        .where(_subscription.c.parent_id == subscription.id)
        .values(status=SubscriptionStatus.EXPIRED)
    )
    audit.record(
        session,
        partner_id=subscription.partner_id,
        customer_id=subscription.customer_id,
        actor=RENEWAL_ACTOR,
        action="licence.expired",
        subscription=subscription.id,
        term_ends_on=old_end.isoformat(),
    )
    return Done({"expired": old_end.isoformat()})


# -- reminders -------------------------------------------------------------------------------------


def reminder_days(app: Flask) -> tuple[int, ...]:
    """``PORTAL_RENEWAL_REMINDER_DAYS`` (``30,7``): days before a renewal, largest first."""
    raw = str(app.config.get("PORTAL_RENEWAL_REMINDER_DAYS") or "")
    days = set()
    for part in raw.split(","):
        if part.strip():
            value = int(part)
            if value < 1:
                raise ValueError(f"PORTAL_RENEWAL_REMINDER_DAYS: {value} is not a day count")
            days.add(value)
    return tuple(sorted(days, reverse=True))


def send_reminders(app: Flask, today: date | None = None) -> int:
    """The periodic job's second half: for each annual or triennial subscription that renews
    within a reminder threshold, record the reminder of the nearest threshold once (a unique
    row) and queue its mail. Returns how many it queued."""
    days = reminder_days(app)
    if not days:
        return 0
    queued = 0
    with app.app_context(), get_database(app).sessions() as session:
        for partner_id, day, _zone in _partner_days(session, today):
            due = select(
                Subscription.id, Subscription.customer_id, Subscription.term_ends_on
            ).where(
                Subscription.partner_id == partner_id,
                Subscription.parent_id.is_(None),
                Subscription.status == SubscriptionStatus.ACTIVE,
                Subscription.auto_renew.is_(True),
                Subscription.term.in_(REMINDED_TERMS),
                Subscription.term_ends_on >= day,
                Subscription.term_ends_on < day + timedelta(days=max(days)),
            )
            for rows in _batches(session, due):
                for row in rows:
                    until = (row.term_ends_on + timedelta(days=1) - day).days
                    threshold = min(d for d in days if d >= until)
                    statement = (
                        insert_ignoring(session.connection(), _reminder)
                        .values(
                            partner_id=partner_id,
                            customer_id=row.customer_id,
                            subscription_id=row.id,
                            term_ends_on=row.term_ends_on,
                            days=threshold,
                            created_at=utcnow(),
                        )
                        .returning(_reminder.c.id)
                    )
                    reminder_id = session.execute(statement).scalar()
                    if reminder_id is None:
                        continue  # sent already (or being sent by another run)
                    enqueue(
                        session,
                        REMIND_KIND,
                        {"reminder_id": reminder_id},
                        partner_id=partner_id,
                        customer_id=row.customer_id,
                        app=app,
                    )
                    queued += 1
                session.commit()
    return queued


def administrators(session: Session, customer_id: int) -> list[User]:
    """The customer's active Administrators."""
    return list(
        session.scalars(
            select(User)
            .join(Membership, Membership.user_id == User.id)
            .where(
                Membership.customer_id == customer_id,
                Membership.role == CustomerRole.ADMINISTRATOR,
                User.active.is_(True),
            )
            .order_by(User.email)
        )
    )


def remind(item: OutboxItem, session: Session) -> Outcome:
    """Outbox handler for ``licences.renewal_reminder``: mail the customer's Administrators,
    each in their language, with a link on the partner's registered host."""
    reminder = session.scalars(
        select(RenewalReminder).where(
            RenewalReminder.id == int(str(item.payload["reminder_id"])),
            RenewalReminder.partner_id == item.partner_id,
            RenewalReminder.customer_id == item.customer_id,
        )
    ).first()
    if reminder is None or reminder.sent_at is not None:
        return Done({"skipped": "sent"})
    subscription = session.get_one(Subscription, reminder.subscription_id)
    if (
        subscription.status is not SubscriptionStatus.ACTIVE
        or not subscription.auto_renew
        or subscription.term_ends_on != reminder.term_ends_on
    ):
        reminder.sent_at = utcnow()  # nothing to remind of any more
        return Done({"skipped": "no longer renewing"})
    partner = session.get_one(Partner, reminder.partner_id)
    link = f"{portal_base_url(session, partner)}/subscriptions/{subscription.id}"
    recipients = administrators(session, reminder.customer_id)
    for user in recipients:
        mail.send(
            mail.render_mail(
                "renewal_reminder",
                partner,
                user.locale,
                to=user.email,
                subscription=subscription,
                product=subscription.product,
                renews_on=subscription.term_ends_on + timedelta(days=1),
                quantity=subscription.renewal_quantity or subscription.quantity,
                link=link,
            ),
            partner,
        )
    reminder.sent_at = utcnow()
    return Done({"told": len(recipients)})


def run_renewals(app: Flask) -> int:
    """The periodic job: renew or expire the terms that ended, and queue the reminders."""
    return renew_due(app) + send_reminders(app)
