"""The partner's payment gateway, who may pay, idempotency keys and amounts in minor units."""

from __future__ import annotations

import logging
import secrets
from decimal import Decimal
from typing import Protocol, runtime_checkable

from portal.core.errors import ServiceError, _
from portal.core.money import exponent
from portal.core.roles import CustomerRole
from portal.features.tenancy.models import Partner
from portal.integrations.payments import (
    PaymentGateway,
)
from portal.integrations.registry import PluginError, integrations
from portal.integrations.results import Result

log = logging.getLogger(__name__)


@runtime_checkable
class ExpiringGateway(Protocol):
    """A gateway whose payment pages can be closed before they are paid (Stripe: expiring a
    Checkout Session). The portal closes the page of an attempt it replaces, so that a page it
    no longer offers cannot take money."""

    def expire_payment(self, gateway_ref: str) -> Result[None]:
        """Close the open payment page ``gateway_ref`` for good. A rejection means it is not
        open any more (paid, or closed already): ask ``get_payment`` how it ended."""
        ...


PAYING_ROLES = frozenset({CustomerRole.ADMINISTRATOR, CustomerRole.FINANCE_MANAGER})


def may_pay(role: CustomerRole | str | None) -> bool:
    """Administrators and Finance Managers pay invoices and manage cards (DESIGN §4)."""
    return role is not None and CustomerRole(role) in PAYING_ROLES


def require_paying_role(role: CustomerRole | str | None) -> None:
    if not may_pay(role):
        raise ServiceError(_("Only Administrators and Finance Managers can pay invoices."))


def configured_gateway(partner: Partner) -> PaymentGateway | None:
    """The partner's payment gateway (its own choice, else ``PORTAL_PAYMENT_GATEWAY``), or
    None when none is configured and loaded."""
    try:
        return integrations().payment_gateway(partner.payment_gateway_key)
    except PluginError:
        return None


def gateway_for(partner: Partner) -> PaymentGateway:
    """:func:`configured_gateway`, or a ServiceError that says whom to ask."""
    gateway = configured_gateway(partner)
    if gateway is None:
        log.warning("payments: no payment gateway is loaded for partner %s", partner.id)
        raise ServiceError(
            _(
                "Card payments are not available yet. Contact %(email)s to pay this invoice.",
                email=partner.support_email,
            )
        )
    return gateway


def new_key(prefix: str) -> str:
    """An idempotency key: readable in the gateway's logs, unique even across databases that
    reuse ids (a development database made again), at most 255 characters."""
    return f"{prefix}-{secrets.token_hex(8)}"


def minor_units(amount: Decimal, currency: str) -> int:
    """An amount typed in major units, exactly: more decimals than the currency has are refused,
    never rounded (a payment is for the amount the person typed, or not at all)."""
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise ServiceError(_("Enter the amount as a number, for example 120.50."), "amount")
    places = exponent(currency)
    scaled = amount.scaleb(places)
    if scaled != scaled.to_integral_value():
        raise ServiceError(
            _(
                "%(currency)s amounts have at most %(places)d decimals.",
                currency=currency,
                places=places,
            ),
            "amount",
        )
    return int(scaled)
