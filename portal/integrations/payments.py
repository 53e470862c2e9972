"""Payment gateways: the Protocol and what it exchanges. Amounts are integer minor units."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

from portal.integrations.results import Result


class PaymentStatus(StrEnum):
    PROCESSING = "processing"
    REQUIRES_ACTION = "requires_action"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class PaymentRequest:
    """Ask for ``amount_minor`` of ``currency``; one ``idempotency_key`` never charges twice."""

    idempotency_key: str
    invoice_ref: str
    customer_ref: str
    amount_minor: int
    currency: str
    description: str
    return_url: str


@dataclass(frozen=True)
class PaymentSession:
    """Where to send the customer to pay (the gateway's page; card data never touches us)."""

    gateway_ref: str
    redirect_url: str


@dataclass(frozen=True)
class PaymentOutcome:
    gateway_ref: str
    status: PaymentStatus
    amount_minor: int
    currency: str
    failure_reason: str | None = None


@dataclass(frozen=True)
class WebhookEvent:
    """A verified notification from the gateway; ``event_id`` is unique per event."""

    event_id: str
    type: str
    payment: PaymentOutcome | None


class SignatureError(Exception):
    """A webhook whose signature does not verify (or is too old): reject it, change nothing."""


@runtime_checkable
class PaymentGateway(Protocol):
    key: str
    display_name: str

    def start_payment(self, request: PaymentRequest) -> Result[PaymentSession]:
        """Open a payment; the customer finishes it on ``redirect_url``."""
        ...

    def get_payment(self, gateway_ref: str) -> Result[PaymentOutcome]:
        """The payment's true state, asked of the gateway."""
        ...

    def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> WebhookEvent:
        """Verify the signature, then decode; raise :class:`SignatureError` when it fails."""
        ...
