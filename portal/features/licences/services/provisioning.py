"""Provisioning licence changes at the provider: the outbox handler, and staff's actions on
changes that failed.

One change is one outbox item (``licences.provision``) and one stable request id, sent on every
attempt, so the provider applies it once however often the item runs (a worker killed after
the call runs it again). From the second attempt on, the subscription is first read back: when
it already has the target quantity the earlier attempt took effect and nothing is resent.
Technical failures retry with backoff (a ``429`` also pauses the tenant for its
``Retry-After``); business rejections are final and their reason is shown to the customer.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from flask import current_app
from sqlalchemy import Table, bindparam, case, select, true, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from portal.core.db import utcnow
from portal.core.errors import ServiceError, _
from portal.core.roles import StaffRole
from portal.features.catalogue.models import Product
from portal.features.identity import audit
from portal.features.identity.models import StaffUser, User
from portal.features.identity.services.people import team_emails
from portal.features.licences.models import LicenceChange, Subscription, SubscriptionStatus
from portal.features.licences.rules import ChangeKind, ChangeState, HoldReason
from portal.features.licences.services.agreements import require_agreement
from portal.features.licences.services.pacing import call_slot, pacing
from portal.features.licences.services.subscriptions import (
    GAVE_UP_CODE,
    NOT_BOUGHT_CODE,
    PARTLY_APPLIED_CODE,
    _queue,
    lock_subscription,
    release_next,
    release_next_of,
)
from portal.features.licences.services.subscriptions import NOTIFY_KIND as NOTIFY_KIND
from portal.features.tenancy import mail
from portal.features.tenancy.models import Customer, Partner
from portal.features.tenancy.services import parties
from portal.integrations.delivery import publish, subscribed
from portal.integrations.events import LicenceChangeFinished, ProductRef
from portal.integrations.providers import (
    CallCounting,
    NewSubscription,
    ProviderAdapter,
    ProviderSubscription,
    QuantityChange,
)
from portal.integrations.registry import integrations
from portal.integrations.results import BusinessRejection, Result, Succeeded, TechnicalFailure
from portal.outbox.handlers import Defer, Done, Outcome, RetryLater
from portal.outbox.items import enqueue
from portal.outbox.models import OutboxItem

log = logging.getLogger(__name__)

# billing's kind (portal.features.billing.services.purchases.PURCHASE_KIND): licences sit below
# billing and queue its work by name
BILL_PURCHASE_KIND = "billing.purchase"

FINISHED_HOOK = "portal_on_licence_change_finished"

ANSWER_LIMIT = 2000
NOT_BOUGHT_REASON = (
    "The subscription was never bought at the provider (its purchase failed), so this change "
    "cannot be applied."
)
_IN_PROGRESS = (ChangeState.QUEUED, ChangeState.RETRYING, ChangeState.PROVISIONING)


@dataclass(frozen=True)
class _Part:
    """One subscription a change sets: the bundle's parent, or one of its children."""

    subscription_id: int
    provider_ref: str | None
    request_id: str


@dataclass(frozen=True)
class _Work:
    """What one attempt at a change needs, read in one statement (no ORM objects: this runs
    for every change, and loading three entities cost more than the provider call)."""

    change_id: int
    request_id: str
    kind: ChangeKind
    state: ChangeState
    sequence: int
    quantity_to: int
    quantity_before: int  # what the provider confirmed before this change (the portal's copy)
    attempts: int  # before this attempt
    partner_id: int
    customer_id: int
    subscription_id: int
    provider_key: str
    offer_id: str
    term: str
    billing_frequency: str
    tenant: str
    parts: tuple[_Part, ...]  # the subscription first, then its bundle's children


_change = cast(Table, LicenceChange.__table__)
_subscription = cast(Table, Subscription.__table__)
_child = _subscription.alias("child")
_product = cast(Table, Product.__table__)
_customer = cast(Table, Customer.__table__)

# the item's own tenant is part of every statement here: a handler reads and writes rows of
# the tenant its item names, and nothing else (the scoped ORM layer is not used on this path)
_LOAD = (
    select(
        _change.c.request_id,
        _change.c.kind,
        _change.c.state,
        _change.c.sequence,
        _change.c.quantity_to,
        _change.c.attempts,
        _change.c.subscription_id,
        _subscription.c.provider_key,
        _subscription.c.provider_ref,
        _subscription.c.quantity.label("quantity_before"),
        _subscription.c.term,
        _subscription.c.billing_frequency,
        _product.c.provider_offer_id,
        _customer.c.ms_tenant_id,
        _child.c.id.label("child_id"),
        _child.c.provider_ref.label("child_ref"),
    )
    .select_from(
        _change.join(_subscription, _subscription.c.id == _change.c.subscription_id)
        .join(_product, _product.c.id == _subscription.c.product_id)
        .join(_customer, _customer.c.id == _change.c.customer_id)
        .outerjoin(_child, _child.c.parent_id == _subscription.c.id)
    )
    .where(
        _change.c.id == bindparam("change_id"),
        _change.c.partner_id == bindparam("partner_id"),
        _change.c.customer_id == bindparam("customer_id"),
    )
    .order_by(_child.c.id)
)
# the credit hold, read when the statement runs (after the subscription's row lock is taken):
# a change held now goes back to awaiting with its reason instead of going out
_HELD = (
    select(_customer.c.credit_hold).where(_customer.c.id == _change.c.customer_id).scalar_subquery()
    == true()
)
_MARK_PROVISIONING = (
    update(_change)
    .where(_change.c.id == bindparam("change_id"), _change.c.state.in_(_IN_PROGRESS))
    .values(
        state=case((_HELD, ChangeState.AWAITING.value), else_=ChangeState.PROVISIONING.value),
        hold_reason=case((_HELD, HoldReason.CREDIT_HOLD.value), else_=None),
        attempts=case((_HELD, _change.c.attempts), else_=_change.c.attempts + 1),
    )
    .returning(_change.c.state)
)
# a handler giving up leaves the change failed (staff act on it), never in flight
_MARK_FAILED = (
    update(_change)
    .where(
        _change.c.id == bindparam("change_id"),
        _change.c.partner_id == bindparam("of_partner"),
        _change.c.customer_id == bindparam("of_customer"),
        _change.c.state.in_(_IN_PROGRESS),
    )
    .values(
        state=ChangeState.FAILED,
        provider_answer=bindparam("answer"),
        provider_code=bindparam("code"),
        finished_at=bindparam("now"),
    )
    .returning(_change.c.id)
)
_MARK_RETRYING = (
    update(_change)
    .where(_change.c.id == bindparam("change_id"), _change.c.state == ChangeState.PROVISIONING)
    .values(state=ChangeState.RETRYING, provider_answer=bindparam("answer"))
)
_SET_SUBSCRIPTION = update(_subscription).where(_subscription.c.id == bindparam("part_id"))
_SET_CHANGE = update(_change).where(_change.c.id == bindparam("change_id"))


def provision(item: OutboxItem, session: Session) -> Outcome:
    """Outbox handler for ``licences.provision``: bring one change to the provider.

    On its last attempt nothing leaves the change in flight: an error the handler did not
    expect makes the change failed, with the error as its reason, for staff to act on.
    """
    try:
        return _provision(item, session)
    except Exception as error:
        if item.attempts < item.max_attempts:
            raise  # the outbox retries it
        log.exception("licence change of outbox item %s: giving up", item.id)
        session.rollback()
        return _give_up(session, item, f"{type(error).__name__}: {error}")


def _provision(item: OutboxItem, session: Session) -> Outcome:
    work = _load(session, item)
    if work is None:
        return Done({"skipped": "missing"})
    if work.state not in _IN_PROGRESS:
        return Done({"skipped": work.state.value})
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    adapter = integrations(app).providers.get(work.provider_key)
    calls = _calls_needed(adapter, work)
    wait = pacing(app).wait_before_call(work.provider_key, work.tenant, calls)
    if wait is not None:
        return Defer(wait)
    marked = _mark_provisioning(session, work)
    if marked is None:
        return Done({"skipped": "finished meanwhile"})
    if marked is ChangeState.AWAITING:
        return Done({"skipped": "credit hold"})  # released when the hold is lifted
    last = item.attempts >= item.max_attempts
    result = _apply(session, adapter, work, last_attempt=last)
    if isinstance(result, _Partial):
        return _partly_applied(session, work, result)
    if isinstance(result, TechnicalFailure):
        if result.retry_after:
            pacing(app).pause(work.provider_key, work.tenant, result.retry_after)
        if not last:
            _mark_retrying(session, work, result.message)
            return RetryLater(result.message, result.retry_after)
        _finish(session, work, ChangeState.FAILED, answer=result.message)
        return Done({"state": "failed"})
    if isinstance(result, BusinessRejection):
        if work.kind is ChangeKind.PURCHASE:
            _set_subscription(session, work.subscription_id, status=SubscriptionStatus.FAILED)
        else:
            lock_subscription(session, work.subscription_id)  # release is decided under it
        released = _finish(
            session, work, ChangeState.REJECTED, answer=result.reason, code=result.code
        )
        return Done({"state": "rejected", "code": result.code}, follow_up=released)
    released = _finish(
        session,
        work,
        ChangeState.PROVISIONED,
        answer=_describe(result.value),
        effective_at=utcnow(),
        quantity_from=work.quantity_before,
    )
    return Done({"state": "provisioned", "quantity": result.value.quantity}, follow_up=released)


def _give_up(session: Session, item: OutboxItem, reason: str) -> Outcome:
    """The last attempt ended in an error: the change is failed with it, and staff are told."""
    change_id = int(str(item.payload["change_id"]))
    marked = session.execute(
        _MARK_FAILED,
        {
            "change_id": change_id,
            "of_partner": item.partner_id,
            "of_customer": item.customer_id,
            "answer": reason[:ANSWER_LIMIT],
            "code": GAVE_UP_CODE,
            "now": utcnow(),
        },
    ).scalar()
    if marked is None:
        return Done({"skipped": "not in flight"})
    _notify_later(session, change_id, int(item.partner_id or 0), int(item.customer_id or 0))
    return Done({"state": "failed", "gave_up": reason[:200]})


def _calls_needed(adapter: ProviderAdapter, work: _Work) -> int:
    """Requests this attempt sends: one per part of a bundle, a read-back first on a retry,
    and whatever reads the adapter says it needs (Partner Center counts every request)."""
    if work.kind is ChangeKind.PURCHASE:
        return len(work.parts)
    calls = 0
    for part in work.parts:
        if work.attempts >= 1:  # this attempt reads the subscription back first
            calls += 1
        if isinstance(adapter, CallCounting) and part.provider_ref is not None:
            ref, target = part.provider_ref, work.quantity_to
            asked = QuantityChange(work.request_id, work.tenant, ref, target)
            calls += max(1, adapter.calls_needed(asked))
        else:
            calls += 1
    return calls


def _load(session: Session, item: OutboxItem) -> _Work | None:
    """The change with what its attempt needs from its subscription, product and customer."""
    change_id = int(str(item.payload["change_id"]))
    params = {
        "change_id": change_id,
        "partner_id": item.partner_id,
        "customer_id": item.customer_id,
    }
    rows = session.connection().execute(_LOAD, params).all()
    if not rows:
        return None
    first = rows[0]
    request_id = str(first.request_id)
    parts = [_Part(first.subscription_id, first.provider_ref, request_id)] + [
        _Part(row.child_id, row.child_ref, _child_request_id(request_id, row.child_id))
        for row in rows
        if row.child_id is not None
    ]
    return _Work(
        change_id=change_id,
        request_id=request_id,
        kind=first.kind,
        state=first.state,
        sequence=first.sequence,
        quantity_to=first.quantity_to,
        quantity_before=first.quantity_before,
        attempts=first.attempts,
        partner_id=int(item.partner_id or 0),
        customer_id=int(item.customer_id or 0),
        subscription_id=first.subscription_id,
        provider_key=first.provider_key,
        offer_id=first.provider_offer_id,
        term=first.term.value,
        billing_frequency=first.billing_frequency.value,
        tenant=first.ms_tenant_id or f"customer-{item.customer_id}",
        parts=tuple(parts),
    )


def _child_request_id(request_id: str, child_id: int) -> str:
    """A bundle child's own stable request id, derived from the change's."""
    return str(uuid.uuid5(uuid.UUID(request_id), f"child-{child_id}"))


def _mark_provisioning(session: Session, work: _Work) -> ChangeState | None:
    """Show "provisioning" now (its own commit), unless the change finished meanwhile (None)
    or its customer is on credit hold now (back to awaiting, with the hold as its reason).

    The subscription's row is locked first, so the hold is read after any release of the
    same subscription that was under way has committed (a lifted hold is then seen)."""
    lock_subscription(session, work.subscription_id)
    state = session.connection().execute(_MARK_PROVISIONING, {"change_id": work.change_id}).scalar()
    if state is None:
        session.rollback()
        return None
    session.commit()
    return ChangeState(state)


def _mark_retrying(session: Session, work: _Work, message: str) -> None:
    params = {"change_id": work.change_id, "answer": message[:ANSWER_LIMIT]}
    session.connection().execute(_MARK_RETRYING, params)
    if _untold_before(session, work):
        # the changes before this one are done: their requesters need not wait for this one
        _notify_later(session, work.change_id, work.partner_id, work.customer_id)
    session.commit()


@dataclass(frozen=True)
class _Partial:
    """A bundle some of whose parts the provider applied before another part failed for good."""

    applied: tuple[tuple[_Part, ProviderSubscription], ...]
    failed: _Part
    reason: str
    not_sent: tuple[_Part, ...]


def _apply(
    session: Session, adapter: ProviderAdapter, work: _Work, *, last_attempt: bool = False
) -> Result[ProviderSubscription] | _Partial:
    """Send the change for the subscription and each child of a bundle; the parent's answer.

    A technical failure makes the whole change retry (the parts already applied replay
    without a second effect). When a part fails for good (a rejection, or a technical failure
    on the last attempt) after others were applied, the outcome is partial: what each part's
    provider answer was is kept (:class:`_Partial`), never forgotten. What the provider
    confirmed is written to the subscriptions here; the caller commits it with the change.
    """
    answers: list[ProviderSubscription] = []
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    for index, part in enumerate(work.parts):
        with call_slot(app):  # the host's cap on calls at once (none by default)
            answer = _apply_one(adapter, work, part)
        if not isinstance(answer, Succeeded):
            final = isinstance(answer, BusinessRejection) or last_attempt
            if answers and final:
                reason = answer.reason if isinstance(answer, BusinessRejection) else answer.message
                applied = tuple(zip(work.parts, answers, strict=False))
                return _Partial(applied, part, reason, work.parts[index + 1 :])
            return answer
        answers.append(answer.value)
    for part, value in zip(work.parts, answers, strict=True):
        _record_provisioned(session, work, part, value)
    return Succeeded(answers[0])


def _partly_applied(session: Session, work: _Work, partial: _Partial) -> Outcome:
    """Record what the provider applied (each applied part's subscription, with its reference)
    and leave the change failed, for staff, saying which parts were and were not applied."""
    for part, value in partial.applied:
        _record_provisioned(session, work, part, value)
    names = _part_names(session, [p.subscription_id for p in work.parts])
    done = "; ".join(
        f"{names.get(part.subscription_id, part.subscription_id)} ({value.subscription_ref}, "
        f"{value.quantity} seats)"
        for part, value in partial.applied
    )
    missing = [f"{names.get(partial.failed.subscription_id)}: {partial.reason}"] + [
        f"{names.get(part.subscription_id)}: not sent" for part in partial.not_sent
    ]
    answer = f"Partly applied. Applied: {done}. Not applied: {'; '.join(missing)}"
    _finish(
        session,
        work,
        ChangeState.FAILED,
        answer=answer,
        code=PARTLY_APPLIED_CODE,
        effective_at=utcnow(),
        quantity_from=work.quantity_before,
    )
    return Done({"state": "failed", "partly_applied": len(partial.applied)})


def _part_names(session: Session, subscription_ids: list[int]) -> dict[int, str]:
    rows = session.execute(
        select(_subscription.c.id, _product.c.name)
        .join(_product, _product.c.id == _subscription.c.product_id)
        .where(_subscription.c.id.in_(subscription_ids))
    )
    return {row.id: row.name for row in rows}


def _apply_one(adapter: ProviderAdapter, work: _Work, part: _Part) -> Result[ProviderSubscription]:
    if work.kind is ChangeKind.PURCHASE:
        # the same request id: a purchase that did go through is answered, not bought again
        return adapter.create_subscription(
            NewSubscription(
                request_id=part.request_id,
                customer_tenant_id=work.tenant,
                offer_id=work.offer_id,
                quantity=work.quantity_to,
                term=work.term,
                billing_frequency=work.billing_frequency,
            )
        )
    if part.provider_ref is None:
        # its purchase failed (or was never applied): there is nothing at the provider to change
        return BusinessRejection(NOT_BOUGHT_REASON, code=NOT_BOUGHT_CODE)
    if work.attempts >= 1:
        # an earlier attempt may have taken effect without us hearing the answer
        read = adapter.get_subscription(work.tenant, part.provider_ref)
        if isinstance(read, Succeeded) and read.value.quantity == work.quantity_to:
            return read
        if isinstance(read, TechnicalFailure):
            return read
    return adapter.set_quantity(
        QuantityChange(part.request_id, work.tenant, part.provider_ref, work.quantity_to)
    )


def _record_provisioned(
    session: Session, work: _Work, part: _Part, answer: ProviderSubscription
) -> None:
    values: dict[str, object] = {"quantity": answer.quantity, "status": SubscriptionStatus.ACTIVE}
    if answer.term_ends_on is not None:
        values["term_ends_on"] = answer.term_ends_on
    if work.kind is ChangeKind.PURCHASE:
        values["provider_ref"] = answer.subscription_ref
    _set_subscription(session, part.subscription_id, **values)


def _set_subscription(session: Session, subscription_id: int, **values: object) -> None:
    session.connection().execute(_SET_SUBSCRIPTION, {"part_id": subscription_id, **values})


def _describe(answer: ProviderSubscription) -> str:
    return f"{answer.subscription_ref}: {answer.quantity} seats, {answer.status}"


def _finish(
    session: Session,
    work: _Work,
    state: ChangeState,
    *,
    answer: str,
    code: str | None = None,
    effective_at: datetime | None = None,
    quantity_from: int | None = None,
) -> OutboxItem | None:
    """Record a final state (or failed), let the next change go and see that people are told.

    ``quantity_from`` is the provider's quantity before the change, recorded when it took
    effect (the request's own figure was a forecast). The next change is released in the same
    statement that reads the credit hold, under the subscription's row lock the caller took.

    Returns the outbox item of the next change, when one was released: this worker runs it
    next. A provisioned change followed at once by the next one is told about with that one
    (one mail for a run of changes rather than one each).
    """
    values: dict[str, object] = {
        "state": state,
        "provider_answer": answer[:ANSWER_LIMIT],
        "provider_code": code,
        "finished_at": utcnow(),
    }
    if effective_at is not None:
        values["effective_at"] = effective_at
    if quantity_from is not None:
        values["quantity_from"] = quantity_from
    session.connection().execute(_SET_CHANGE, {"change_id": work.change_id, **values})
    released = None
    if state is not ChangeState.FAILED:
        # a failed change holds the later ones back; a credit hold is read fresh here
        released = release_next_of(session, work.subscription_id)
    if state is ChangeState.PROVISIONED and work.kind is ChangeKind.PURCHASE:
        if effective_at is not None:
            # the term (and the billing periods anchored on it) starts when the provider
            # created the subscription, not when it was asked for
            for part in work.parts:
                _set_subscription(session, part.subscription_id, term_started_at=effective_at)
        # billed in advance: the purchase's invoice is made now, not at the next run
        enqueue(
            session,
            BILL_PURCHASE_KIND,
            {"change_id": work.change_id},
            partner_id=work.partner_id,
            customer_id=work.customer_id,
        )
    if state is not ChangeState.PROVISIONED or released is None:
        _notify_later(session, work.change_id, work.partner_id, work.customer_id)
    return released


def _notify_later(session: Session, change_id: int, partner_id: int, customer_id: int) -> None:
    enqueue(
        session,
        NOTIFY_KIND,
        {"change_id": change_id},
        partner_id=partner_id,
        customer_id=customer_id,
    )


def _untold_before(session: Session, work: _Work) -> bool:
    return (
        session.scalar(
            select(LicenceChange.id)
            .where(
                LicenceChange.subscription_id == work.subscription_id,
                LicenceChange.sequence < work.sequence,
                LicenceChange.state == ChangeState.PROVISIONED,
                LicenceChange.notified_at.is_(None),
            )
            .limit(1)
        )
        is not None
    )


# -- notifications --------------------------------------------------------------------------------


def notify(item: OutboxItem, session: Session) -> Outcome:
    """Outbox handler for ``licences.notify``: the customer hears of success, the service team
    of failures and rejections; plugins get ``portal_on_licence_change_finished``.

    It covers the item's change and every provisioned change of the subscription before it that
    nobody was told about yet (they ran one after the other): each requester gets one mail for
    their run of changes, from its first quantity to its last.
    """
    # the item's tenant is in each statement, so the scoped layer's per-statement criteria
    # (which cost more than the reads themselves here) are not needed
    loaded = session.execute(
        select(LicenceChange, Subscription, Partner)
        .join(Subscription, Subscription.id == LicenceChange.subscription_id)
        .join(Partner, Partner.id == LicenceChange.partner_id)
        .where(
            LicenceChange.id == int(str(item.payload["change_id"])),
            LicenceChange.partner_id == item.partner_id,
            LicenceChange.customer_id == item.customer_id,
        )
        .execution_options(unscoped=True)
    ).first()
    if loaded is None:
        return Done({"skipped": "missing"})
    change, subscription, partner = loaded
    candidates = list(
        session.scalars(
            select(LicenceChange)
            .where(
                LicenceChange.subscription_id == change.subscription_id,
                LicenceChange.customer_id == change.customer_id,
                LicenceChange.sequence <= change.sequence,
                LicenceChange.state == ChangeState.PROVISIONED,
                LicenceChange.notified_at.is_(None),
            )
            .order_by(LicenceChange.sequence)
            .execution_options(unscoped=True)
        )
    )
    if change.state in (ChangeState.FAILED, ChangeState.REJECTED) and change.notified_at is None:
        candidates.append(change)
    # two notices of one subscription can run at once (a retried change queues another):
    # each change is told once, by the notice whose conditional update marks it
    told = _mark_told(session, candidates)
    done = [c for c in told if c.state is ChangeState.PROVISIONED]
    problems = [c for c in told if c.state is not ChangeState.PROVISIONED]
    requesters = _requesters(session, partner, done)
    for user_id, run in _by_requester(done).items():
        recipient = requesters.get(user_id) if user_id is not None else None
        if recipient is not None and recipient.active:
            _send(
                partner,
                "licence_provisioned",
                recipient.email,
                recipient.locale,
                subscription,
                change=run[-1],
                kind=run[0].kind,
                quantity_from=run[0].quantity_from,
            )
    for problem in problems:
        for address in service_team(session, partner):
            _send(partner, "licence_problem", address, "en", subscription, change=problem)
    _announce(session, told, subscription)
    return Done({"told": len(done) + len(problems)})


def _mark_told(session: Session, changes: list[LicenceChange]) -> list[LicenceChange]:
    """Mark ``changes`` told, those no one marked meanwhile; returns them. On PostgreSQL a
    concurrent notice that marked one first holds its row until it commits, and the update
    then finds it told."""
    if not changes:
        return []
    now = utcnow()
    marked = set(
        session.execute(
            update(_change)
            .where(_change.c.id.in_([c.id for c in changes]), _change.c.notified_at.is_(None))
            .values(notified_at=now)
            .returning(_change.c.id)
        ).scalars()
    )
    told = [c for c in changes if c.id in marked]
    for change in told:
        set_committed_value(change, "notified_at", now)
    return told


def _requesters(
    session: Session, partner: Partner, changes: list[LicenceChange]
) -> dict[int, User]:
    """The people who asked for these changes, by id."""
    ids = {c.requested_by_user_id for c in changes if c.requested_by_user_id is not None}
    if not ids:
        return {}
    users = session.scalars(
        select(User)
        .where(User.id.in_(ids), User.partner_id == partner.id)
        .execution_options(unscoped=True)
    )
    return {user.id: user for user in users}


def _by_requester(changes: list[LicenceChange]) -> dict[int | None, list[LicenceChange]]:
    runs: dict[int | None, list[LicenceChange]] = {}
    for change in changes:
        runs.setdefault(change.requested_by_user_id, []).append(change)
    return runs


def _announce(session: Session, changes: list[LicenceChange], subscription: Subscription) -> None:
    """``portal_on_licence_change_finished`` for each change, in the transaction that marks it
    told (so once)."""
    if not changes or not subscribed(FINISHED_HOOK):
        return
    partner, customers = parties(session, subscription.partner_id, [subscription.customer_id])
    product = subscription.product
    for change in changes:
        event = LicenceChangeFinished(
            change_id=change.id,
            subscription_id=subscription.id,
            subscription_ref=subscription.provider_ref or "",
            partner=partner,
            customer=customers[subscription.customer_id],
            product=ProductRef(
                id=product.id, name=product.name, offer_id=product.provider_offer_id
            ),
            state=change.state.value,
            quantity_from=change.quantity_from,
            quantity_to=change.quantity_to,
            reason=change.provider_answer if change.state is not ChangeState.PROVISIONED else None,
            finished_at=change.finished_at,
        )
        publish(session, event, partner_id=partner.id, customer_id=subscription.customer_id)


def _send(
    partner: Partner,
    template: str,
    to: str,
    locale: str | None,
    subscription: Subscription,
    **context: object,
) -> None:
    mail.send(
        mail.render_mail(
            template,
            partner,
            locale,
            to=to,
            subscription=subscription,
            product=subscription.product,
            **context,
        ),
        partner,
    )


def service_team(session: Session, partner: Partner) -> list[str]:
    """``PORTAL_SERVICE_TEAM_EMAIL``, else the partner's active admin and service staff."""
    configured = current_app.config.get("PORTAL_SERVICE_TEAM_EMAIL") or ""
    return team_emails(session, partner.id, configured, (StaffRole.ADMIN, StaffRole.SERVICE))


# -- staff actions ---------------------------------------------------------------------------------


def retry(db_session: Session, partner: Partner, change: LicenceChange, staff: StaffUser) -> None:
    """Send a failed change again (same request id: no second effect if it did go through)."""
    if change.state is not ChangeState.FAILED:
        raise ServiceError(_("Only a failed change can be retried."))
    if change.subscription.product.requires_mca:
        # the same gate as the customer's own request: no MCA, nothing goes to Microsoft
        customer = db_session.get_one(Customer, change.customer_id)
        require_agreement(db_session, customer)
    _queue(db_session, change)
    audit.record(
        db_session,
        partner_id=partner.id,
        customer_id=change.customer_id,
        actor=staff.email,
        action="licence.change_retried",
        change=change.id,
    )


def resolve(
    db_session: Session,
    partner: Partner,
    change: LicenceChange,
    staff: StaffUser,
    *,
    applied: bool,
    note: str,
) -> None:
    """Close a failed change by hand: it was applied at the provider (provisioned) or it was
    not and will not be (rejected, with the note as its reason). Later changes then go out."""
    if change.state is not ChangeState.FAILED:
        raise ServiceError(_("Only a failed change can be marked resolved."))
    note = note.strip()
    if not note:
        raise ServiceError(_("Say what was done, for the record."), "note")
    subscription = change.subscription
    if applied and subscription.provider_ref is None:
        # without the provider's reference no later change could reach the subscription
        raise ServiceError(
            _(
                "This purchase never got a subscription at the provider: retry it, or mark it "
                "not applied."
            )
        )
    change.resolved_by = staff.email
    change.resolution_note = note
    change.finished_at = change.notified_at = utcnow()  # staff settle it with the people
    if applied:
        change.state = ChangeState.PROVISIONED
        # the provider's quantity before it: what the portal last had confirmed (the parent's
        # own, unless a partial outcome already recorded its part as applied)
        if change.effective_at is None:
            change.quantity_from = subscription.quantity
            change.effective_at = utcnow()
        for part in (subscription, *subscription.children):
            part.quantity = change.quantity_to
            part.status = SubscriptionStatus.ACTIVE
        if change.kind is ChangeKind.PURCHASE:
            enqueue(
                db_session,
                BILL_PURCHASE_KIND,
                {"change_id": change.id},
                partner_id=change.partner_id,
                customer_id=change.customer_id,
            )
    else:
        change.state = ChangeState.REJECTED
        change.provider_answer = note
        if change.kind is ChangeKind.PURCHASE:
            subscription.status = SubscriptionStatus.FAILED
    audit.record(
        db_session,
        partner_id=partner.id,
        customer_id=change.customer_id,
        actor=staff.email,
        action="licence.change_resolved",
        change=change.id,
        applied=applied,
        note=note,
    )
    customer = db_session.get(Customer, change.customer_id)
    assert customer is not None
    db_session.flush()
    _announce(db_session, [change], subscription)  # its final state, after the failure's
    release_next(db_session, customer, change.subscription_id)
