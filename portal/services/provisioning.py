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

from flask import current_app
from sqlalchemy import select, update
from sqlalchemy.orm import Session, joinedload
from sqlalchemy.orm.attributes import set_committed_value

from portal.db import utcnow
from portal.domain.licences import ChangeKind, ChangeState
from portal.domain.roles import StaffRole
from portal.integrations.events import LicenceChangeFinished
from portal.integrations.providers import (
    CallCounting,
    NewSubscription,
    ProviderAdapter,
    ProviderSubscription,
    QuantityChange,
)
from portal.integrations.registry import integrations
from portal.integrations.results import BusinessRejection, Result, Succeeded, TechnicalFailure
from portal.models import (
    Customer,
    LicenceChange,
    Partner,
    StaffUser,
    Subscription,
    SubscriptionStatus,
    User,
)
from portal.models.outbox import OutboxItem
from portal.services import ServiceError, _, audit, mail
from portal.services.licences import _queue, release_next
from portal.services.pacing import pacing
from portal.tasks.handlers import Defer, Done, Outcome, RetryLater
from portal.tasks.outbox import enqueue

log = logging.getLogger(__name__)

NOTIFY_KIND = "licences.notify"
ANSWER_LIMIT = 2000
_IN_PROGRESS = (ChangeState.QUEUED, ChangeState.RETRYING, ChangeState.PROVISIONING)


@dataclass(frozen=True)
class _Target:
    """One subscription a change sets: the bundle's parent, or one of its children."""

    subscription: Subscription
    request_id: str


def provision(item: OutboxItem, session: Session) -> Outcome:
    """Outbox handler for ``licences.provision``: bring one change to the provider."""
    loaded = _load(session, int(str(item.payload["change_id"])))
    if loaded is None:
        return Done({"skipped": "missing"})
    change, subscription, customer = loaded
    if change.state not in _IN_PROGRESS:
        return Done({"skipped": change.state.value})
    tenant = customer.ms_tenant_id or f"customer-{customer.id}"
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    adapter = integrations(app).providers.get(subscription.provider_key)
    calls = _calls_needed(adapter, change, subscription, tenant)
    wait = pacing(app).wait_before_call(subscription.provider_key, tenant, calls)
    if wait is not None:
        return Defer(wait)
    if not _mark_provisioning(session, change):
        return Done({"skipped": "finished meanwhile"})
    result = _apply(adapter, change, subscription, tenant)
    if isinstance(result, TechnicalFailure):
        if result.retry_after:
            pacing(app).pause(subscription.provider_key, tenant, result.retry_after)
        if item.attempts < item.max_attempts:
            _mark_retrying(session, change, result.message)
            return RetryLater(result.message, result.retry_after)
        _finish(session, customer, change, ChangeState.FAILED, answer=result.message)
        return Done({"state": "failed"})
    if isinstance(result, BusinessRejection):
        if change.kind is ChangeKind.PURCHASE:
            subscription.status = SubscriptionStatus.FAILED
        released = _finish(
            session,
            customer,
            change,
            ChangeState.REJECTED,
            answer=result.reason,
            code=result.code,
        )
        return Done({"state": "rejected", "code": result.code}, follow_up=released)
    _record_provisioned(subscription, change, result.value)
    released = _finish(
        session, customer, change, ChangeState.PROVISIONED, answer=_describe(result.value)
    )
    return Done({"state": "provisioned", "quantity": result.value.quantity}, follow_up=released)


def _calls_needed(
    adapter: ProviderAdapter, change: LicenceChange, subscription: Subscription, tenant: str
) -> int:
    """Requests this attempt sends: one per part of a bundle, a read-back first on a retry,
    and whatever reads the adapter says it needs (Partner Center counts every request)."""
    parts = [subscription, *subscription.children]
    if change.kind is ChangeKind.PURCHASE:
        return len(parts)
    calls = 0
    for part in parts:
        if change.attempts >= 1:  # this attempt reads the subscription back first
            calls += 1
        if isinstance(adapter, CallCounting) and part.provider_ref is not None:
            ref, target = part.provider_ref, change.quantity_to
            calls += max(
                1, adapter.calls_needed(QuantityChange(change.request_id, tenant, ref, target))
            )
        else:
            calls += 1
    return calls


def _load(session: Session, change_id: int) -> tuple[LicenceChange, Subscription, Customer] | None:
    """The change with its subscription (product, bundle parts) and customer, in one statement."""
    row = (
        session.execute(
            select(LicenceChange, Subscription, Customer)
            .join(Subscription, Subscription.id == LicenceChange.subscription_id)
            .join(Customer, Customer.id == LicenceChange.customer_id)
            .where(LicenceChange.id == change_id)
            .options(joinedload(Subscription.children))
        )
        .unique()
        .first()
    )
    return None if row is None else (row[0], row[1], row[2])


def _mark_provisioning(session: Session, change: LicenceChange) -> bool:
    """Show "provisioning" now (its own commit), unless the change finished meanwhile."""
    attempts = session.execute(
        update(LicenceChange)
        .where(LicenceChange.id == change.id, LicenceChange.state.in_(_IN_PROGRESS))
        .values(state=ChangeState.PROVISIONING, attempts=LicenceChange.attempts + 1)
        .returning(LicenceChange.attempts)
        .execution_options(synchronize_session=False)
    ).scalar()
    if attempts is None:
        session.rollback()
        return False
    set_committed_value(change, "state", ChangeState.PROVISIONING)
    set_committed_value(change, "attempts", attempts)
    # nothing else wrote these rows meanwhile (a subscription's changes run one at a time):
    # what is loaded stays valid, and reading it all again after the commit would be waste
    session.expire_on_commit = False
    try:
        session.commit()
    finally:
        session.expire_on_commit = True
    return True


def _mark_retrying(session: Session, change: LicenceChange, message: str) -> None:
    session.execute(
        update(LicenceChange)
        .where(LicenceChange.id == change.id, LicenceChange.state == ChangeState.PROVISIONING)
        .values(state=ChangeState.RETRYING, provider_answer=message[:ANSWER_LIMIT])
        .execution_options(synchronize_session=False)
    )
    if _untold_before(session, change):
        # the changes before this one are done: their requesters need not wait for this one
        _notify_later(session, change)
    session.commit()


def _apply(
    adapter: ProviderAdapter, change: LicenceChange, subscription: Subscription, tenant: str
) -> Result[ProviderSubscription]:
    """Send the change for the subscription and each child of a bundle; the parent's answer.

    Any technical failure makes the whole change retry (the parts already applied replay
    without a second effect); a rejection of any part rejects the change.
    """
    targets = [_Target(subscription, change.request_id)] + [
        _Target(child, str(uuid.uuid5(uuid.UUID(change.request_id), f"child-{child.id}")))
        for child in subscription.children
    ]
    answers: list[Result[ProviderSubscription]] = []
    for target in targets:
        answer = _apply_one(adapter, change, target, tenant)
        if not isinstance(answer, Succeeded):
            return answer
        if change.kind is ChangeKind.PURCHASE:
            target.subscription.provider_ref = answer.value.subscription_ref
        answers.append(answer)
    for target, answer in zip(targets[1:], answers[1:], strict=True):
        assert isinstance(answer, Succeeded)
        _record_provisioned(target.subscription, change, answer.value)
    return answers[0]


def _apply_one(
    adapter: ProviderAdapter, change: LicenceChange, target: _Target, tenant: str
) -> Result[ProviderSubscription]:
    subscription = target.subscription
    if change.kind is ChangeKind.PURCHASE:
        # the same request id: a purchase that did go through is answered, not bought again
        return adapter.create_subscription(
            NewSubscription(
                request_id=target.request_id,
                customer_tenant_id=tenant,
                offer_id=subscription.product.provider_offer_id,
                quantity=change.quantity_to,
                term=subscription.term.value,
                billing_frequency=subscription.billing_frequency.value,
            )
        )
    assert subscription.provider_ref is not None, "a bought subscription has a provider ref"
    if change.attempts > 1:
        # an earlier attempt may have taken effect without us hearing the answer
        read = adapter.get_subscription(tenant, subscription.provider_ref)
        if isinstance(read, Succeeded) and read.value.quantity == change.quantity_to:
            return read
        if isinstance(read, TechnicalFailure):
            return read
    return adapter.set_quantity(
        QuantityChange(target.request_id, tenant, subscription.provider_ref, change.quantity_to)
    )


def _record_provisioned(
    subscription: Subscription, change: LicenceChange, answer: ProviderSubscription
) -> None:
    subscription.quantity = answer.quantity
    subscription.status = SubscriptionStatus.ACTIVE
    if answer.term_ends_on is not None:
        subscription.term_ends_on = answer.term_ends_on
    change.effective_at = utcnow()


def _describe(answer: ProviderSubscription) -> str:
    return f"{answer.subscription_ref}: {answer.quantity} seats, {answer.status}"


def _finish(
    session: Session,
    customer: Customer,
    change: LicenceChange,
    state: ChangeState,
    *,
    answer: str,
    code: str | None = None,
) -> OutboxItem | None:
    """Record a final state (or failed), let the next change go and see that people are told.

    Returns the outbox item of the next change, when one was released: this worker runs it
    next. A provisioned change followed at once by the next one is told about with that one
    (one mail for a run of changes rather than one each).
    """
    change.state = state
    change.provider_answer = answer[:ANSWER_LIMIT]
    change.provider_code = code
    change.finished_at = utcnow()
    released = None
    if state is not ChangeState.FAILED:  # a failed change holds the later ones back
        session.flush()
        released = release_next(session, customer, change.subscription_id)
    if state is not ChangeState.PROVISIONED or released is None:
        _notify_later(session, change)
    return released.item if released is not None else None


def _notify_later(session: Session, change: LicenceChange) -> None:
    enqueue(
        session,
        NOTIFY_KIND,
        {"change_id": change.id},
        partner_id=change.partner_id,
        customer_id=change.customer_id,
    )


def _untold_before(session: Session, change: LicenceChange) -> bool:
    return (
        session.scalar(
            select(LicenceChange.id)
            .where(
                LicenceChange.subscription_id == change.subscription_id,
                LicenceChange.sequence < change.sequence,
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
    change = session.get(LicenceChange, int(str(item.payload["change_id"])))
    if change is None:
        return Done({"skipped": "missing"})
    partner = session.get(Partner, change.partner_id)
    assert partner is not None
    subscription = change.subscription
    done = list(
        session.scalars(
            select(LicenceChange)
            .where(
                LicenceChange.subscription_id == change.subscription_id,
                LicenceChange.sequence <= change.sequence,
                LicenceChange.state == ChangeState.PROVISIONED,
                LicenceChange.notified_at.is_(None),
            )
            .order_by(LicenceChange.sequence)
        )
    )
    for user_id, run in _by_requester(done).items():
        recipient = session.get(User, user_id) if user_id is not None else None
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
    problems = []
    if change.state in (ChangeState.FAILED, ChangeState.REJECTED) and change.notified_at is None:
        problems.append(change)
        for address in service_team(session, partner):
            _send(partner, "licence_problem", address, "en", subscription, change=change)
    now = utcnow()
    for told in (*done, *problems):
        told.notified_at = now
        _announce(told, subscription)
    return Done({"told": len(done) + len(problems)})


def _by_requester(changes: list[LicenceChange]) -> dict[int | None, list[LicenceChange]]:
    runs: dict[int | None, list[LicenceChange]] = {}
    for change in changes:
        runs.setdefault(change.requested_by_user_id, []).append(change)
    return runs


def _announce(change: LicenceChange, subscription: Subscription) -> None:
    integrations().fire(
        "portal_on_licence_change_finished",
        event=LicenceChangeFinished(
            change_id=change.id,
            customer_id=change.customer_id,
            subscription_ref=subscription.provider_ref or "",
            state=change.state.value,
            quantity_from=change.quantity_from,
            quantity_to=change.quantity_to,
            reason=change.provider_answer if change.state is not ChangeState.PROVISIONED else None,
        ),
    )


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
    configured = current_app.config.get("PORTAL_SERVICE_TEAM_EMAIL") or ""
    if configured:
        return [configured]
    return list(
        session.scalars(
            select(StaffUser.email)
            .where(
                StaffUser.partner_id == partner.id,
                StaffUser.active.is_(True),
                StaffUser.role.in_((StaffRole.ADMIN, StaffRole.SERVICE)),
            )
            .order_by(StaffUser.email)
            .execution_options(unscoped=True)
        )
    )


# -- staff actions ---------------------------------------------------------------------------------


def retry(db_session: Session, partner: Partner, change: LicenceChange, staff: StaffUser) -> None:
    """Send a failed change again (same request id: no second effect if it did go through)."""
    if change.state is not ChangeState.FAILED:
        raise ServiceError(_("Only a failed change can be retried."))
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
        change.effective_at = utcnow()
        for part in (subscription, *subscription.children):
            part.quantity = change.quantity_to
            part.status = SubscriptionStatus.ACTIVE
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
    release_next(db_session, customer, change.subscription_id)
