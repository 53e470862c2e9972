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
from sqlalchemy.orm import Session

from portal.db import utcnow
from portal.domain.licences import ChangeKind, ChangeState
from portal.domain.roles import StaffRole
from portal.integrations.events import LicenceChangeFinished
from portal.integrations.providers import (
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
    change = session.get(LicenceChange, int(str(item.payload["change_id"])))
    if change is None or change.state not in _IN_PROGRESS:
        return Done({"skipped": change.state.value if change else "missing"})
    subscription = change.subscription
    customer = session.get(Customer, change.customer_id)
    assert customer is not None
    tenant = customer.ms_tenant_id or f"customer-{customer.id}"
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    wait = pacing(app).wait_before_call(subscription.provider_key, tenant)
    if wait is not None:
        return Defer(wait)
    if not _mark_provisioning(session, change):
        return Done({"skipped": "finished meanwhile"})
    adapter = integrations(app).providers.get(subscription.provider_key)
    result = _apply(adapter, change, subscription, tenant)
    if isinstance(result, TechnicalFailure):
        if result.retry_after:
            pacing(app).pause(subscription.provider_key, tenant, result.retry_after)
        if item.attempts < item.max_attempts:
            _mark_retrying(session, change, result.message)
            return RetryLater(result.message, result.retry_after)
        _finish(session, change, ChangeState.FAILED, answer=result.message)
        return Done({"state": "failed"})
    if isinstance(result, BusinessRejection):
        _finish(session, change, ChangeState.REJECTED, answer=result.reason, code=result.code)
        if change.kind is ChangeKind.PURCHASE:
            subscription.status = SubscriptionStatus.FAILED
        return Done({"state": "rejected", "code": result.code})
    _record_provisioned(subscription, change, result.value)
    _finish(session, change, ChangeState.PROVISIONED, answer=_describe(result.value))
    return Done({"state": "provisioned", "quantity": result.value.quantity})


def _mark_provisioning(session: Session, change: LicenceChange) -> bool:
    """Show "provisioning" now (its own commit), unless the change finished meanwhile."""
    result = session.execute(
        update(LicenceChange)
        .where(LicenceChange.id == change.id, LicenceChange.state.in_(_IN_PROGRESS))
        .values(state=ChangeState.PROVISIONING, attempts=LicenceChange.attempts + 1)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    session.refresh(change)
    return getattr(result, "rowcount", 0) == 1


def _mark_retrying(session: Session, change: LicenceChange, message: str) -> None:
    session.execute(
        update(LicenceChange)
        .where(LicenceChange.id == change.id, LicenceChange.state == ChangeState.PROVISIONING)
        .values(state=ChangeState.RETRYING, provider_answer=message[:ANSWER_LIMIT])
        .execution_options(synchronize_session=False)
    )
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
    change: LicenceChange,
    state: ChangeState,
    *,
    answer: str,
    code: str | None = None,
) -> None:
    """Record a final state (or failed), tell people, and let the next change go."""
    change.state = state
    change.provider_answer = answer[:ANSWER_LIMIT]
    change.provider_code = code
    change.finished_at = utcnow()
    customer = session.get(Customer, change.customer_id)
    assert customer is not None
    enqueue(
        session,
        NOTIFY_KIND,
        {"change_id": change.id},
        partner_id=change.partner_id,
        customer_id=change.customer_id,
    )
    if state is not ChangeState.FAILED:  # a failed change holds the later ones back
        session.flush()
        release_next(session, customer, change.subscription_id)


# -- notifications --------------------------------------------------------------------------------


def notify(item: OutboxItem, session: Session) -> Outcome:
    """Outbox handler for ``licences.notify``: the customer hears of success, the service team
    of failures and rejections; plugins get ``portal_on_licence_change_finished``."""
    change = session.get(LicenceChange, int(str(item.payload["change_id"])))
    if change is None:
        return Done({"skipped": "missing"})
    partner = session.get(Partner, change.partner_id)
    assert partner is not None
    subscription = change.subscription
    if change.state is ChangeState.PROVISIONED:
        recipient = (
            session.get(User, change.requested_by_user_id) if change.requested_by_user_id else None
        )
        if recipient is not None and recipient.active:
            _send(
                partner,
                "licence_provisioned",
                recipient.email,
                recipient.locale,
                change,
                subscription,
            )
    elif change.state in (ChangeState.FAILED, ChangeState.REJECTED):
        for address in service_team(session, partner):
            _send(partner, "licence_problem", address, "en", change, subscription)
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
    return Done()


def _send(
    partner: Partner,
    template: str,
    to: str,
    locale: str | None,
    change: LicenceChange,
    subscription: Subscription,
) -> None:
    mail.send(
        mail.render_mail(
            template,
            partner,
            locale,
            to=to,
            change=change,
            subscription=subscription,
            product=subscription.product,
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
    change.finished_at = utcnow()
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
