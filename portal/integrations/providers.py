"""Licence providers (Partner Center, distributors): the Protocol and what it exchanges."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from portal.integrations.results import Result


@dataclass(frozen=True)
class ProviderSubscription:
    """A subscription as the provider sees it."""

    subscription_ref: str
    offer_id: str
    quantity: int
    status: str


@dataclass(frozen=True)
class QuantityChange:
    """Set a subscription to an absolute quantity.

    ``request_id`` is stable for one change (the change id): sending the same request twice must
    have one effect, and an unknown outcome is resolved by reading the subscription back.
    """

    request_id: str
    customer_tenant_id: str
    subscription_ref: str
    target_quantity: int


@runtime_checkable
class ProviderAdapter(Protocol):
    key: str
    display_name: str

    def get_subscription(
        self, customer_tenant_id: str, subscription_ref: str
    ) -> Result[ProviderSubscription]:
        """Read one subscription back from the provider."""
        ...

    def set_quantity(self, change: QuantityChange) -> Result[ProviderSubscription]:
        """Apply ``change`` exactly once; return the subscription as it now stands."""
        ...
