"""The Microsoft Customer Agreement: show it, take a customer's acceptance, attest it to the
provider in the background, and gate Microsoft purchases and changes on it (DESIGN §4, Gates).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import datetime

from flask import current_app, has_request_context, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.core.db import utcnow
from portal.core.errors import ServiceError, _
from portal.features.identity import audit
from portal.features.identity.models import User
from portal.features.licences.models import AgreementAcceptance, AttestationState
from portal.features.tenancy.models import Customer, Partner
from portal.integrations.providers import AgreementAttestation, AgreementTemplate, ProviderAdapter
from portal.integrations.registry import PluginError, integrations
from portal.integrations.results import BusinessRejection, Succeeded, TechnicalFailure
from portal.outbox.handlers import Done, Outcome, RetryLater
from portal.outbox.items import enqueue
from portal.outbox.models import OutboxItem

log = logging.getLogger(__name__)

ATTEST_KIND = "agreements.attest"
TEMPLATE_CACHE_SECONDS = 3600.0  # the agreement's version changes rarely

_template_cache: dict[str, tuple[float, AgreementTemplate]] = {}
_template_lock = threading.Lock()


class AgreementRequired(ServiceError):
    """A Microsoft purchase or change before the agreement is accepted and confirmed."""


def provider_for(partner: Partner, customer: Customer) -> ProviderAdapter:
    return integrations().provider(customer.provider_key, partner.provider_key)


def current_acceptance(db_session: Session, customer: Customer) -> AgreementAcceptance | None:
    """The customer's latest acceptance (confirmed, pending or rejected), if any."""
    return db_session.scalars(
        select(AgreementAcceptance)
        .where(AgreementAcceptance.customer_id == customer.id)
        .order_by(AgreementAcceptance.accepted_at.desc(), AgreementAcceptance.id.desc())
        .limit(1)
    ).first()


def is_confirmed(db_session: Session, customer: Customer) -> bool:
    found = db_session.scalar(
        select(AgreementAcceptance.id)
        .where(
            AgreementAcceptance.customer_id == customer.id,
            AgreementAcceptance.state == AttestationState.CONFIRMED,
        )
        .limit(1)
    )
    return found is not None


def require_agreement(db_session: Session, customer: Customer) -> None:
    """Refuse unless the customer's acceptance is confirmed by the provider."""
    if is_confirmed(db_session, customer):
        return
    latest = current_acceptance(db_session, customer)
    if latest is not None and latest.state is AttestationState.PENDING:
        raise AgreementRequired(
            _(
                "Your acceptance of the Microsoft Customer Agreement is still being confirmed "
                "with Microsoft. Try again in a minute."
            )
        )
    raise AgreementRequired(
        _("Accept the Microsoft Customer Agreement before buying or changing Microsoft products.")
    )


def agreement_template(partner: Partner, customer: Customer) -> AgreementTemplate:
    """The agreement to show, from the provider (cached for an hour per provider)."""
    try:
        provider = provider_for(partner, customer)
    except PluginError:
        log.exception("no provider for %s: the agreement cannot be shown", customer.id)
        raise ServiceError(
            _("The Microsoft Customer Agreement cannot be loaded right now.")
        ) from None
    with _template_lock:
        cached = _template_cache.get(provider.key)
        if cached and time.monotonic() - cached[0] < TEMPLATE_CACHE_SECONDS:
            return cached[1]
    result = provider.get_agreement_template()
    if not isinstance(result, Succeeded):
        raise ServiceError(
            _(
                "The Microsoft Customer Agreement cannot be loaded right now. Try again in a few "
                "minutes."
            )
        )
    with _template_lock:
        _template_cache[provider.key] = (time.monotonic(), result.value)
    return result.value


def accept(
    db_session: Session,
    partner: Partner,
    customer: Customer,
    user: User,
    *,
    first_name: str,
    last_name: str,
    email: str,
    phone: str | None,
    template: AgreementTemplate,
    now: datetime | None = None,
) -> AgreementAcceptance:
    """Record the acceptance and queue its attestation to the provider; the caller commits."""
    if is_confirmed(db_session, customer):
        raise ServiceError(_("The Microsoft Customer Agreement is already accepted."))
    if not customer.ms_tenant_id:
        raise ServiceError(
            _(
                "This account has no Microsoft tenant yet; contact %(partner)s to set it up.",
                partner=partner.name,
            )
        )
    acceptance = AgreementAcceptance(
        partner_id=partner.id,
        customer_id=customer.id,
        user_id=user.id,
        provider_key=provider_for(partner, customer).key,
        template_id=template.template_id,
        agreement_link=template.link,
        first_name=first_name.strip(),
        last_name=last_name.strip(),
        email=email.strip(),
        phone=(phone or "").strip() or None,
        accepted_at=now or utcnow(),
        ip=request.remote_addr if has_request_context() else None,
        request_id=str(uuid.uuid4()),
        state=AttestationState.PENDING,
    )
    db_session.add(acceptance)
    db_session.flush()
    enqueue(
        db_session,
        ATTEST_KIND,
        {"acceptance_id": acceptance.id},
        partner_id=partner.id,
        customer_id=customer.id,
    )
    audit.record(
        db_session,
        partner_id=partner.id,
        customer_id=customer.id,
        actor=user.email,
        action="agreement.accepted",
        acceptance=acceptance.id,
        template=template.template_id,
        signer=f"{acceptance.first_name} {acceptance.last_name} <{acceptance.email}>",
    )
    return acceptance


def attest(item: OutboxItem, session: Session) -> Outcome:
    """Outbox handler: tell the provider about one acceptance (idempotent by its request id)."""
    acceptance = session.get(AgreementAcceptance, int(str(item.payload["acceptance_id"])))
    if acceptance is None or acceptance.state is not AttestationState.PENDING:
        return Done({"skipped": True})
    customer = session.get(Customer, acceptance.customer_id)
    assert customer is not None and customer.ms_tenant_id
    adapter = integrations(current_app).providers.get(acceptance.provider_key)
    result = adapter.confirm_agreement(
        AgreementAttestation(
            request_id=acceptance.request_id,
            customer_tenant_id=customer.ms_tenant_id,
            template_id=acceptance.template_id,
            first_name=acceptance.first_name,
            last_name=acceptance.last_name,
            email=acceptance.email,
            phone=acceptance.phone,
            accepted_at=acceptance.accepted_at,
        )
    )
    if isinstance(result, TechnicalFailure):
        if item.attempts < item.max_attempts:
            return RetryLater(result.message, result.retry_after)
        acceptance.state = AttestationState.REJECTED
        acceptance.provider_answer = _short(
            f"The provider could not be reached after {item.attempts} attempts: {result.message}"
        )
        return Done({"state": "rejected"})
    if isinstance(result, BusinessRejection):
        acceptance.state = AttestationState.REJECTED
        acceptance.provider_answer = _short(result.reason)
        return Done({"state": "rejected", "code": result.code})
    acceptance.state = AttestationState.CONFIRMED
    acceptance.confirmed_at = utcnow()
    acceptance.provider_reference = result.value.reference
    return Done({"state": "confirmed"})


def _short(text: str) -> str:
    return text[:2000]
