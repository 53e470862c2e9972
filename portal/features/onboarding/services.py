"""Onboarding use cases: creating a customer with its default contract, importing its
subscriptions from the provider onto a contract. Each one validates, writes, audits; the
caller (a staff page) commits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal.core.db import utcnow
from portal.core.errors import ServiceError, _
from portal.features.billing.models import BillingContract
from portal.features.billing.rules.invoicing import ContractFrequency
from portal.features.billing.services.contracts import (
    checked_currency,
    checked_terms_days,
    create_contract,
    default_contract,
    put_on_contract,
)
from portal.features.billing.services.holds import credit_limit_minor
from portal.features.identity import audit
from portal.features.licences.models import Subscription
from portal.features.licences.services import imports
from portal.features.onboarding import rules
from portal.features.tenancy.models import Customer, Partner
from portal.features.tenancy.services import local_today
from portal.integrations.providers import ProviderCustomer
from portal.integrations.registry import integrations
from portal.integrations.results import Succeeded

MAX_NAME = 200


@dataclass(frozen=True)
class NewCustomer:
    """What staff type to onboard a customer (checked by :func:`onboard_customer`).

    ``credit_limit`` is in the currency's major units as typed (``"5000"``, ``"2500.50"``),
    "" for none;
    ``provider_key`` "" means the partner's provider."""

    name: str
    tenant_id: str
    currency: str
    payment_terms_days: int
    domain: str = ""
    credit_limit: str = ""
    provider_key: str = ""


def onboard_customer(
    db_session: Session, partner: Partner, details: NewCustomer, by: str
) -> Customer:
    """A new customer of ``partner`` and its default billing contract in its currency (monthly,
    from today in the partner's time zone, on the customer's payment terms), so that what it
    buys is invoiced. Every bad value is refused with a message naming the field, and nothing
    is added. Audited."""
    name = (details.name or "").strip()
    if not name or len(name) > MAX_NAME:
        raise ServiceError(_("Give the customer a name of at most 200 characters."), "name")
    tenant = rules.tenant_id(details.tenant_id)
    if tenant is None:
        raise ServiceError(
            _(
                "A Microsoft tenant id looks like 0f9e8d7c-6b5a-4321-9876-0123456789ab "
                "(32 hexadecimal digits in groups of 8-4-4-4-12)."
            ),
            "tenant_id",
        )
    taken = db_session.scalar(
        select(Customer.name)
        .where(Customer.ms_tenant_id == tenant)
        .execution_options(unscoped=True)
    )
    if taken is not None:
        raise ServiceError(_("Another customer already has this Microsoft tenant id."), "tenant_id")
    domain = None
    if (details.domain or "").strip():
        domain = rules.domain(details.domain)
        if domain is None:
            raise ServiceError(
                _("A domain looks like contoso.onmicrosoft.com or contoso.com."), "domain"
            )
    currency = checked_currency(details.currency)
    terms = checked_terms_days(details.payment_terms_days)
    limit = credit_limit_minor(details.credit_limit, currency, "credit_limit")
    provider_key = (details.provider_key or "").strip() or None
    if provider_key is not None and provider_key not in integrations().providers:
        raise ServiceError(_("Choose one of the providers listed."), "provider_key")
    duplicate = db_session.scalar(
        select(Customer.id).where(func.lower(Customer.name) == name.lower())
    )
    if duplicate is not None:
        raise ServiceError(_("A customer with this name exists already."), "name")
    customer = Customer(
        partner_id=partner.id,
        name=name,
        ms_tenant_id=tenant,
        domain=domain,
        default_currency=currency,
        payment_terms_days=terms,
        credit_limit_minor=limit,
        provider_key=provider_key,
        credit_hold=False,
    )
    db_session.add(customer)
    db_session.flush()
    audit.record(
        db_session,
        partner_id=partner.id,
        customer_id=customer.id,
        actor=by,
        action="customer.onboarded",
        name=name,
        tenant_id=tenant,
        currency=currency,
        payment_terms_days=terms,
        credit_limit_minor=limit,
        provider=provider_key or "",
    )
    create_contract(
        db_session,
        customer,
        name=f"Default ({currency})",
        currency=currency,
        frequency=ContractFrequency.MONTHLY,
        anchor_on=local_today(partner, utcnow()),
        by=by,
        make_default=True,
    )
    return customer


def import_subscriptions(
    db_session: Session,
    partner: Partner,
    customer: Customer,
    refs: Sequence[str],
    by: str,
    contract: BillingContract | None = None,
) -> list[Subscription]:
    """Import the chosen subscriptions the provider lists for the customer (see
    :func:`portal.features.licences.services.imports.import_listed`) and put each on
    ``contract`` (one of the customer's active contracts in its currency), else on its default
    contract (made when there is none). Their seats are invoiced from that contract's next
    period on. Audited; the caller commits."""
    if contract is not None and (
        contract.customer_id != customer.id
        or not contract.active
        or contract.currency != customer.default_currency
    ):
        raise ServiceError(
            _(
                "Choose one of the customer's active contracts in %(currency)s.",
                currency=customer.default_currency,
            ),
            "contract",
        )
    made = imports.import_listed(db_session, partner, customer, refs, by)
    if not made:
        return made
    target = contract or default_contract(
        db_session,
        customer,
        customer.default_currency,
        starts_on=local_today(partner, utcnow()),
        by=by,
    )
    for subscription in made:
        put_on_contract(db_session, subscription, target)
    db_session.flush()
    audit.record(
        db_session,
        partner_id=partner.id,
        customer_id=customer.id,
        actor=by,
        action="billing.subscriptions_assigned",
        contract=target.id,
        subscriptions=",".join(str(s.id) for s in made),
    )
    return made


def provider_choices() -> list[tuple[str, str]]:
    """The providers a customer can be served by: (key, name) of each loaded adapter."""
    providers = integrations().providers
    keys = providers.keys()  # a registry, not a dict: no iteration of its own
    return [(key, providers.get(key).display_name) for key in keys]


@dataclass(frozen=True)
class Found:
    """A customer the provider has, and the portal's customer with its tenant id, if any."""

    customer: ProviderCustomer
    known_as: Customer | None


def find_at_provider(
    db_session: Session, partner: Partner, query: str, provider_key: str = ""
) -> list[Found]:
    """The provider's customers whose tenant id is ``query`` or whose domain starts with it
    (the chosen provider, else the partner's), each with the portal's customer that has its
    tenant id already. A query of fewer than 3 characters, or a provider that cannot answer,
    is refused with the reason."""
    text = (query or "").strip()
    if len(text) < 3 or len(text) > 253:
        raise ServiceError(
            _("Search with a tenant id, or the first 3 or more letters of a domain."), "find"
        )
    key = (provider_key or "").strip() or None
    if key is not None and key not in integrations().providers:
        raise ServiceError(_("Choose one of the providers listed."), "provider_key")
    adapter = integrations().provider(key, partner.provider_key)
    answer = adapter.find_customers(text)
    if not isinstance(answer, Succeeded):
        raise ServiceError(
            _(
                "%(provider)s could not search its customers: %(reason)s",
                provider=adapter.display_name,
                reason=getattr(answer, "reason", "") or _("no answer"),
            ),
            "find",
        )
    tenants = [c.tenant_id for c in answer.value]
    known = {
        c.ms_tenant_id: c
        for c in db_session.scalars(select(Customer).where(Customer.ms_tenant_id.in_(tenants)))
    }
    return [Found(c, known.get(c.tenant_id)) for c in answer.value]
