"""Licence providers (Partner Center, distributors): the Protocol and what it exchanges.

Every call that changes something carries a ``request_id`` that is stable for one logical
operation (the licence change, the purchase, the acceptance): the adapter sends it as the
provider's idempotency key (Partner Center: ``MS-RequestId``) on every attempt, so a repeated
call has one effect. Every outcome is a :mod:`portal.integrations.results` value; an adapter
never raises for a failure of the provider.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol, runtime_checkable

from portal.integrations.results import Result


@dataclass(frozen=True)
class ProviderSubscription:
    """A subscription as the provider sees it.

    ``term_ends_on`` is the last day of the current term (Partner Center's
    ``commitmentEndDate``, inclusive) when the provider tells it. The rest, each None when the
    provider does not say, is what importing a subscription the portal did not buy needs:
    ``term`` (ISO 8601: ``P1M``, ``P1Y``, ``P3Y``; Partner Center's ``termDuration``),
    ``billing_frequency`` (``monthly``, ``annual``, ``triennial``; ``billingCycle``),
    ``term_started_on`` (the current term's first day; ``effectiveStartDate``),
    ``auto_renew`` (``autoRenewEnabled``), ``name`` (``friendlyName``) and
    ``renewal_quantity`` (the quantity scheduled for the next term, when one is;
    ``scheduledNextTermInstructions.quantity``).
    """

    subscription_ref: str
    offer_id: str
    quantity: int
    status: str
    term_ends_on: date | None = None
    term: str | None = None
    billing_frequency: str | None = None
    term_started_on: date | None = None
    auto_renew: bool | None = None
    name: str | None = None
    renewal_quantity: int | None = None


@dataclass(frozen=True)
class ProviderCustomer:
    """A customer as the provider knows it: its Microsoft Entra tenant id (lowercase GUID), its
    company name and its primary domain (None when the provider does not say)."""

    tenant_id: str
    name: str
    domain: str | None = None


@dataclass(frozen=True)
class QuantityChange:
    """Set a subscription to an absolute quantity.

    ``request_id`` is stable for one change (derived from the change id): sending the same
    request twice must have one effect, and an unknown outcome is resolved by reading the
    subscription back.
    """

    request_id: str
    customer_tenant_id: str
    subscription_ref: str
    target_quantity: int


@dataclass(frozen=True)
class NewSubscription:
    """Buy a new subscription of ``offer_id`` with ``quantity`` seats.

    ``term`` is an ISO 8601 duration (``P1M``, ``P1Y``, ``P3Y``); ``billing_frequency`` is
    ``monthly``, ``annual`` or ``triennial``. The same ``request_id`` must never buy twice.
    """

    request_id: str
    customer_tenant_id: str
    offer_id: str
    quantity: int
    term: str
    billing_frequency: str


@dataclass(frozen=True)
class AgreementTemplate:
    """The current Microsoft Customer Agreement: its template id and where to read it."""

    template_id: str
    link: str


@dataclass(frozen=True)
class AgreementAttestation:
    """The partner's attestation that the customer accepted the agreement ``template_id``."""

    request_id: str
    customer_tenant_id: str
    template_id: str
    first_name: str
    last_name: str
    email: str
    phone: str | None
    accepted_at: datetime


@dataclass(frozen=True)
class AgreementConfirmation:
    """The provider recorded the acceptance; ``reference`` is its id for it, when it has one."""

    template_id: str
    reference: str | None = None


# -- renewals (issue 14, point 4): what the customer tells the provider about the next term ---


@dataclass(frozen=True)
class AutoRenewSetting:
    """Turn the subscription's automatic renewal on or off (Partner Center: ``PATCH`` the
    subscription with ``autoRenewEnabled``). ``request_id`` is stable for one instruction."""

    request_id: str
    customer_tenant_id: str
    subscription_ref: str
    auto_renew: bool


@dataclass(frozen=True)
class RenewalQuantity:
    """The quantity of the subscription's next term (Partner Center:
    ``scheduledNextTermInstructions.quantity``); the current term keeps its quantity."""

    request_id: str
    customer_tenant_id: str
    subscription_ref: str
    quantity: int


@runtime_checkable
class CallCounting(Protocol):
    """Optional for a provider adapter: how many requests ``set_quantity(change)`` will send.

    The portal paces calls per customer tenant (``PORTAL_PROVIDER_CALL_LIMIT``) and takes that
    many slots of the budget before the call. An adapter that reads a resource before writing
    it, only sometimes, says so here; without it every call counts as one request.
    """

    def calls_needed(self, change: QuantityChange) -> int: ...


@runtime_checkable
class ProviderAdapter(Protocol):
    key: str
    display_name: str

    def get_subscription(
        self, customer_tenant_id: str, subscription_ref: str
    ) -> Result[ProviderSubscription]:
        """Read one subscription back from the provider (an unknown one is a rejection)."""
        ...

    def find_customers(self, query: str) -> Result[list[ProviderCustomer]]:
        """The partner's customers at the provider whose tenant id is ``query`` (a GUID, exact)
        or whose primary domain starts with it (``contoso``); none found is an empty list.
        Staff use it to onboard a customer the provider already has."""
        ...

    def list_subscriptions(self, customer_tenant_id: str) -> Result[list[ProviderSubscription]]:
        """Every subscription the customer has at the provider now, whoever bought it (the
        portal imports them at onboarding and compares them with its own to see changes made
        at the provider). A customer the provider does not know is a rejection."""
        ...

    def set_quantity(self, change: QuantityChange) -> Result[ProviderSubscription]:
        """Apply ``change`` exactly once; return the subscription as it now stands."""
        ...

    def create_subscription(self, purchase: NewSubscription) -> Result[ProviderSubscription]:
        """Buy ``purchase`` exactly once per request id; return the new subscription."""
        ...

    def get_agreement_template(self) -> Result[AgreementTemplate]:
        """The Microsoft Customer Agreement customers must accept before buying."""
        ...

    def confirm_agreement(self, attestation: AgreementAttestation) -> Result[AgreementConfirmation]:
        """Attest the customer's acceptance; confirming the same acceptance again succeeds."""
        ...

    # -- renewals (issue 14, point 4) ---------------------------------------------------------

    def set_auto_renew(self, setting: AutoRenewSetting) -> Result[ProviderSubscription]:
        """Turn automatic renewal on or off exactly once per request id; return the
        subscription as it now stands (its ``auto_renew`` shows the setting)."""
        ...

    def schedule_renewal_quantity(self, renewal: RenewalQuantity) -> Result[ProviderSubscription]:
        """Schedule the next term's quantity exactly once per request id; return the
        subscription as it now stands (its ``renewal_quantity`` shows it). At renewal the new
        term starts with that quantity."""
        ...
