"""Payment gateways: the Protocols and what they exchange. Amounts are integer minor units.

Two Protocols, because not every gateway can keep cards:

- :class:`PaymentGateway` (every gateway): open a payment on the gateway's hosted page for any
  amount up to the balance (partial payments are just smaller amounts; 3-D Secure and other
  extra steps happen on that page), read a payment's true state (with its refunds), list the
  payments made since a time (the daily reconciliation), and verify + decode a webhook into a
  typed :class:`WebhookEvent`.
- :class:`SavedCardGateway` (a gateway that can also keep cards, e.g. Stripe): the gateway's
  customer, saving a card on the gateway's page, reading, listing and removing saved cards, and
  charging a saved card off-session (autopay). The portal offers saved cards and autopay only
  when the chosen gateway is one: ``isinstance(gateway, SavedCardGateway)``.

Rules every adapter keeps (the contract suites in :mod:`portal.testing.contracts` check them):

- Card data never reaches the portal: the customer types it on the gateway's page.
- Every call that creates something takes the caller's ``idempotency_key``; the same key again
  returns the same object and never charges twice; the same key with different parameters is a
  :class:`~portal.integrations.results.BusinessRejection` (code ``idempotency_key_reused``).
- Calls return a :class:`~portal.integrations.results.Result`, never raise: a timeout or 5xx is a
  ``TechnicalFailure`` (retry with the same key), a refusal that retrying cannot change is a
  ``BusinessRejection``. A declined card or one that needs the customer to authenticate is not a
  rejection of the request: the charge was made and its :class:`PaymentOutcome` says so.
- ``invoice_ref`` and ``customer_ref`` are the portal's invoice and customer ids as text; the
  gateway stores them with the payment (Stripe: metadata) and gives them back on every read and
  webhook, which is how a payment finds its invoice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from flask import current_app

from portal.integrations.results import Result

if TYPE_CHECKING:
    from flask import Flask

# PaymentOutcome.failure_code values the portal acts on (others are shown as they are)
AUTHENTICATION_REQUIRED = "authentication_required"  # off-session: the bank wants the customer
CARD_DECLINED = "card_declined"
IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"  # BusinessRejection.code


class PaymentStatus(StrEnum):
    PROCESSING = "processing"  # open, or paid by a method that confirms later
    REQUIRES_ACTION = "requires_action"  # the customer must act (authenticate, retry on-session)
    SUCCEEDED = "succeeded"  # the money is received: the one state that is recorded
    FAILED = "failed"  # declined, canceled or expired; ``failure_reason`` says why


class RefundStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"  # the one state the ledger records
    FAILED = "failed"
    CANCELED = "canceled"


class EventKind(StrEnum):
    """What a webhook says happened. The event's fields carry the facts and the recording
    service acts on those (a succeeded payment outcome, refunds, a dispute), so an adapter that
    leaves an event ``OTHER`` still has its payments recorded."""

    PAYMENT_SUCCEEDED = "payment_succeeded"
    PAYMENT_FAILED = "payment_failed"
    PAYMENT_PENDING = "payment_pending"  # processing / requires action
    CHECKOUT_COMPLETED = "checkout_completed"  # the hosted page finished (payment or setup)
    CHARGE_REFUNDED = "charge_refunded"
    DISPUTE_CREATED = "dispute_created"
    CARD_SAVED = "card_saved"  # a card setup succeeded
    OTHER = "other"  # anything else: recorded as received, no effect


@dataclass(frozen=True)
class PaymentRequest:
    """Ask for ``amount_minor`` of ``currency`` (any amount up to the balance: partial payments
    are smaller amounts); one ``idempotency_key`` never charges twice.

    ``save_card`` asks the gateway to keep the card for later off-session charges (only a
    :class:`SavedCardGateway` can; others ignore it); ``gateway_customer_ref`` is the gateway's
    customer (:meth:`SavedCardGateway.ensure_customer`) the payment and card belong to.
    ``expires_at`` is when the payment page must stop taking payments (None: the gateway's
    default); every retry under the same key carries the same time.
    """

    idempotency_key: str
    invoice_ref: str
    customer_ref: str
    amount_minor: int
    currency: str
    description: str
    return_url: str
    save_card: bool = False
    gateway_customer_ref: str | None = None
    expires_at: datetime | None = None


@dataclass(frozen=True)
class PaymentSession:
    """Where to send the customer to pay or to save a card (the gateway's page; card data
    never touches us). ``gateway_ref`` is what :meth:`PaymentGateway.get_payment` (or
    :meth:`SavedCardGateway.get_card_setup`) takes; for Stripe a Checkout Session id."""

    gateway_ref: str
    redirect_url: str


@dataclass(frozen=True)
class Refund:
    """Money given back from a payment; ``refund_ref`` is unique at the gateway (one ledger row
    per refund, whatever the number of events that announce it)."""

    refund_ref: str
    payment_ref: str
    amount_minor: int
    currency: str
    status: RefundStatus
    created_at: datetime | None = None


@dataclass(frozen=True)
class Dispute:
    """A chargeback opened by the card holder's bank against a payment."""

    dispute_ref: str
    payment_ref: str
    amount_minor: int
    currency: str
    reason: str
    status: str
    created_at: datetime | None = None


@dataclass(frozen=True)
class SavedCard:
    """A card kept by the gateway: what the portal may show (never the number)."""

    card_ref: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    gateway_customer_ref: str | None = None


@dataclass(frozen=True)
class PaymentOutcome:
    """A payment as the gateway sees it.

    ``gateway_ref`` is the ref asked about (a Checkout Session for a hosted payment);
    ``payment_ref`` the money movement itself (Stripe: the PaymentIntent ``pi_…``), which is what
    the ledger records once (:attr:`reference`); None until one exists. ``failure_code`` is
    machine-readable (:data:`AUTHENTICATION_REQUIRED`, :data:`CARD_DECLINED`, a decline code),
    ``failure_reason`` for people. ``card`` is the card the payment was made with when the
    gateway saved it. ``refunds`` are those known with the payment (all of them when read with
    :meth:`PaymentGateway.get_payment`).
    """

    gateway_ref: str
    status: PaymentStatus
    amount_minor: int
    currency: str
    failure_reason: str | None = None
    failure_code: str | None = None
    payment_ref: str | None = None
    invoice_ref: str | None = None
    customer_ref: str | None = None
    created_at: datetime | None = None
    card: SavedCard | None = None
    refunds: tuple[Refund, ...] = ()

    @property
    def reference(self) -> str:
        """The ledger's ``gateway_reference`` for this payment."""
        return self.payment_ref or self.gateway_ref


@dataclass(frozen=True)
class CardSetupOutcome:
    """A card-saving session as the gateway sees it; ``card`` once it succeeded."""

    gateway_ref: str
    status: PaymentStatus
    card: SavedCard | None = None
    customer_ref: str | None = None
    failure_reason: str | None = None


@dataclass(frozen=True)
class WebhookEvent:
    """A verified notification from the gateway; ``event_id`` is unique per event.

    ``type`` is the gateway's own name (``payment_intent.succeeded``), ``kind`` the portal's
    (:class:`EventKind`), ``occurred_at`` when the gateway created it (events arrive in any
    order). The payload fields hold what the event is about: ``payment`` (its state in the
    event), ``refunds`` (None when the event does not list them: ask
    :meth:`PaymentGateway.get_payment`), ``dispute``, ``card_setup``.
    """

    event_id: str
    type: str
    payment: PaymentOutcome | None
    kind: EventKind = EventKind.OTHER
    occurred_at: datetime | None = None
    refunds: tuple[Refund, ...] | None = None
    dispute: Dispute | None = None
    card_setup: CardSetupOutcome | None = None


@dataclass(frozen=True)
class CustomerProfile:
    """The portal's customer, as the gateway's customer record is made from it."""

    idempotency_key: str
    customer_ref: str
    name: str
    email: str | None = None


@dataclass(frozen=True)
class CardSetupRequest:
    """Save a card for ``gateway_customer_ref`` on the gateway's page, then come back to
    ``return_url``."""

    idempotency_key: str
    customer_ref: str
    gateway_customer_ref: str
    return_url: str


@dataclass(frozen=True)
class SavedCardCharge:
    """Charge a saved card with the customer away (autopay)."""

    idempotency_key: str
    invoice_ref: str
    customer_ref: str
    gateway_customer_ref: str
    card_ref: str
    amount_minor: int
    currency: str
    description: str


class SignatureError(Exception):
    """A webhook whose signature does not verify (or is too old): reject it, change nothing."""


@runtime_checkable
class PaymentGateway(Protocol):
    key: str
    display_name: str

    def start_payment(self, request: PaymentRequest) -> Result[PaymentSession]:
        """Open a payment once per ``idempotency_key``; the customer finishes it (3-D Secure
        included) on ``redirect_url`` and comes back to ``request.return_url``."""
        ...

    def get_payment(self, gateway_ref: str) -> Result[PaymentOutcome]:
        """The payment's true state, asked of the gateway, with all its refunds. Takes a
        session's ``gateway_ref`` or a ``payment_ref``; an unknown one is a rejection."""
        ...

    def list_payments(self, since: datetime) -> Result[list[PaymentOutcome]]:
        """Every payment created at or after ``since`` (any status), for reconciliation:
        succeeded ones that no webhook announced are recorded from this."""
        ...

    def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> WebhookEvent:
        """Verify the signature on the raw ``body`` first, then decode; raise
        :class:`SignatureError` when either fails. Makes no network call."""
        ...


@runtime_checkable
class SavedCardGateway(PaymentGateway, Protocol):
    """A gateway that keeps cards for the portal's customers (saved cards, autopay)."""

    def ensure_customer(self, profile: CustomerProfile) -> Result[str]:
        """The gateway's customer id for ``profile`` (created once per idempotency key); the
        portal stores it and passes it as ``gateway_customer_ref`` from then on."""
        ...

    def start_card_setup(self, request: CardSetupRequest) -> Result[PaymentSession]:
        """Open a card-saving session (Stripe: setup-mode Checkout); the customer types the card
        (and authenticates) on ``redirect_url``."""
        ...

    def get_card_setup(self, gateway_ref: str) -> Result[CardSetupOutcome]:
        """The card-saving session's state and, once it succeeded, the saved card."""
        ...

    def list_cards(self, gateway_customer_ref: str) -> Result[list[SavedCard]]:
        """The customer's saved cards."""
        ...

    def detach_card(self, card_ref: str) -> Result[None]:
        """Remove a saved card; it can never be charged again."""
        ...

    def charge_saved_card(self, charge: SavedCardCharge) -> Result[PaymentOutcome]:
        """Charge a saved card off-session, once per ``idempotency_key``.

        ``Succeeded`` outcomes: ``SUCCEEDED`` (or ``PROCESSING``); ``REQUIRES_ACTION`` with
        ``failure_code`` :data:`AUTHENTICATION_REQUIRED` (the bank wants the customer: send them
        a link to pay on-session); ``FAILED`` with the decline's code and reason. A
        ``BusinessRejection`` means the request itself was refused (unknown card, bad amount).
        """
        ...


# -- webhook deliveries ---------------------------------------------------------------------------


class GatewayUnavailable(RuntimeError):
    """The gateway could not be asked what the event needs (answer 5xx: it delivers again)."""


class DeliveryReceipt(Protocol):
    """What one delivery did: its event's id, and whether it was already recorded."""

    @property
    def event_id(self) -> str: ...

    @property
    def duplicate(self) -> bool: ...


class WebhookReceiver(Protocol):
    def __call__(
        self, gateway: PaymentGateway, body: bytes, headers: Mapping[str, str]
    ) -> DeliveryReceipt: ...


_RECEIVER = "portal_webhook_receiver"


def set_webhook_receiver(app: Flask, receiver: WebhookReceiver) -> None:
    """The portal's payments capability names the function that records deliveries (once)."""
    app.extensions[_RECEIVER] = receiver


def receive_webhook(
    gateway: PaymentGateway, body: bytes, headers: Mapping[str, str]
) -> DeliveryReceipt:
    """Hand a gateway's webhook delivery to the portal: verified by ``gateway`` before anything
    is read or written, then its event and effect recorded once, in one transaction.

    For a gateway plugin's webhook view. Raises :class:`SignatureError` (answer 400) when the
    signature does not verify and :class:`GatewayUnavailable` (answer 5xx, nothing written)
    when the event needs the gateway and it cannot answer; a duplicate delivery is recorded
    nothing and answered like the first (``duplicate`` is then True).
    """
    receiver: WebhookReceiver = current_app.extensions[_RECEIVER]
    return receiver(gateway, body, headers)
