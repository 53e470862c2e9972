"""The Stripe payment gateway: :class:`~portal.integrations.payments.SavedCardGateway` on the
official ``stripe`` SDK (``StripeClient``, API base from ``PORTAL_STRIPE_API_BASE``).

- Paying an invoice is a **hosted Checkout Session** (``mode=payment``): card data and 3-D
  Secure stay on Stripe's page (PCI SAQ A). The session's id is the ``gateway_ref``; its
  PaymentIntent (``pi_…``) is the ``payment_ref`` the ledger records, once. The invoice and
  customer refs travel as ``metadata`` on the session *and* on its PaymentIntent, so every
  webhook and every listed payment finds its invoice.
- Saving a card is a setup-mode Checkout Session; off-session charges are a PaymentIntent created
  and confirmed at once with ``off_session=true``. Stripe's 402 ``authentication_required`` and
  declines come back as outcomes (``REQUIRES_ACTION`` / ``FAILED``), not errors.
- Every POST carries the caller's idempotency key; the SDK retries connection errors, 409 and
  5xx with that same key (``max_network_retries``), so a timeout after Stripe did the work
  replays Stripe's first answer instead of charging again (reliability notes §1.1, A6).
- Webhooks are verified with the SDK's ``stripe.WebhookSignature.verify_header`` (the check
  ``stripe.Webhook.construct_event`` runs; 300 s tolerance) against each configured signing
  secret, before anything is decoded; the body is then parsed once, as plain JSON.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import stripe

from portal.integrations.payments import (
    AUTHENTICATION_REQUIRED,
    IDEMPOTENCY_KEY_REUSED,
    CardSetupOutcome,
    CardSetupRequest,
    CustomerProfile,
    Dispute,
    EventKind,
    PaymentOutcome,
    PaymentRequest,
    PaymentSession,
    PaymentStatus,
    Refund,
    RefundStatus,
    SavedCard,
    SavedCardCharge,
    SignatureError,
    WebhookEvent,
)
from portal.integrations.results import BusinessRejection, Result, Succeeded, TechnicalFailure
from stripe_payments.settings import StripeSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

KEY = "stripe"
SIGNATURE_HEADER = "Stripe-Signature"
TOLERANCE_SECONDS = stripe.Webhook.DEFAULT_TOLERANCE  # 300
# Stripe signs as it sends: a timestamp ahead of our clock is clock skew, never 5 minutes of it
FUTURE_SKEW_SECONDS = 60
CURRENCY = re.compile(r"[A-Z]{3}")
MAX_AMOUNT_MINOR = 99_999_999  # Stripe's limit for most currencies (8 digits)
SESSION_PLACEHOLDER = "{CHECKOUT_SESSION_ID}"
PAGE_SIZE = 100

PAYMENT_EVENTS = {
    "payment_intent.succeeded": EventKind.PAYMENT_SUCCEEDED,
    "payment_intent.payment_failed": EventKind.PAYMENT_FAILED,
    "payment_intent.processing": EventKind.PAYMENT_PENDING,
    "payment_intent.requires_action": EventKind.PAYMENT_PENDING,
    "payment_intent.canceled": EventKind.PAYMENT_FAILED,
}
CHECKOUT_EVENTS = {
    "checkout.session.completed": EventKind.CHECKOUT_COMPLETED,
    "checkout.session.async_payment_succeeded": EventKind.PAYMENT_SUCCEEDED,
    "checkout.session.async_payment_failed": EventKind.PAYMENT_FAILED,
}
REFUND_EVENTS = frozenset(
    {"refund.created", "refund.updated", "refund.failed", "charge.refund.updated"}
)
DISPUTE_EVENTS = frozenset({"charge.dispute.created", "charge.dispute.closed"})


class StripeGateway:
    """The ``"stripe"`` payment gateway (saved cards and autopay included)."""

    key = KEY
    display_name = "Stripe"

    def __init__(
        self,
        settings: StripeSettings,
        client: stripe.StripeClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.client = client or stripe.StripeClient(
            settings.secret_key,
            base_addresses={"api": settings.api_base},
            max_network_retries=settings.max_network_retries,
            http_client=stripe.RequestsClient(timeout=settings.timeout_seconds),
        )
        self._clock = clock

    def __repr__(self) -> str:
        return f"<StripeGateway api_base={self.settings.api_base!r}>"

    # -- paying an invoice ---------------------------------------------------------------------

    def start_payment(self, request: PaymentRequest) -> Result[PaymentSession]:
        """A hosted Checkout Session for ``amount_minor`` (partial amounts are smaller ones)."""
        refusal = _check_amount(request.amount_minor, request.currency)
        if refusal is not None:
            return refusal
        if not request.idempotency_key or len(request.idempotency_key) > 255:
            return BusinessRejection("The idempotency key is missing or too long")
        metadata = _refs(request.invoice_ref, request.customer_ref)
        params: dict[str, Any] = {
            "mode": "payment",
            "line_items": [
                {
                    "price_data": {
                        "currency": request.currency.lower(),
                        "unit_amount": request.amount_minor,
                        "product_data": {"name": (request.description or "Invoice")[:250]},
                    },
                    "quantity": 1,
                }
            ],
            "success_url": return_url(request.return_url),
            "cancel_url": return_url(request.return_url, canceled=True),
            "client_reference_id": request.invoice_ref[:200] or None,
            "metadata": metadata,
            "payment_intent_data": {
                "metadata": metadata,
                "description": (request.description or "")[:1000] or None,
            },
        }
        if request.expires_at is not None:
            # the portal's time, the same for every retry of the key (Stripe refuses the same
            # key with other parameters); Stripe takes 30 minutes to 24 hours from now
            params["expires_at"] = int(request.expires_at.timestamp())
        if request.gateway_customer_ref:
            params["customer"] = request.gateway_customer_ref
        if request.save_card:
            # the card is kept for autopay; Stripe needs a customer to keep it for
            params["payment_intent_data"]["setup_future_usage"] = "off_session"
            if not request.gateway_customer_ref:
                params["customer_creation"] = "always"
        found = self._call(
            lambda: self.client.v1.checkout.sessions.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": request.idempotency_key},
            )
        )
        if not isinstance(found, Succeeded):
            return found
        session = found.value
        return Succeeded(PaymentSession(gateway_ref=str(session.id), redirect_url=str(session.url)))

    def expire_payment(self, gateway_ref: str) -> Result[None]:
        """Expire an open Checkout Session so that it can never be paid
        (``POST /v1/checkout/sessions/{id}/expire``). A session that is no longer open (paid,
        or expired already) is a rejection: ask :meth:`get_payment` how it ended."""
        if not gateway_ref.startswith("cs_"):
            return BusinessRejection("Only a Checkout Session can be expired", code="not_a_session")
        found = self._call(lambda: self.client.v1.checkout.sessions.expire(gateway_ref))
        if not isinstance(found, Succeeded):
            return found
        return Succeeded(None)

    def get_payment(self, gateway_ref: str) -> Result[PaymentOutcome]:
        """A Checkout Session (``cs_…``) or a PaymentIntent (``pi_…``), with its refunds."""
        if gateway_ref.startswith("cs_"):
            found = self._call(
                lambda: self.client.v1.checkout.sessions.retrieve(
                    gateway_ref, params={"expand": ["payment_intent"]}
                )
            )
            if not isinstance(found, Succeeded):
                return found
            session = _plain(found.value)
            intent = session.get("payment_intent")
            if isinstance(intent, dict):
                outcome = _intent_outcome(intent, gateway_ref=gateway_ref)
            else:
                outcome = _session_outcome(session)
        elif gateway_ref.startswith("pi_"):
            got = self._call(lambda: self.client.v1.payment_intents.retrieve(gateway_ref))
            if not isinstance(got, Succeeded):
                return got
            outcome = _intent_outcome(_plain(got.value))
        else:
            return BusinessRejection("Stripe has no such payment", code="stripe.resource_missing")
        if outcome.payment_ref:
            refunds = self._refunds({"payment_intent": outcome.payment_ref})
            if not isinstance(refunds, Succeeded):
                return refunds
            outcome = _with(outcome, refunds=tuple(refunds.value))
        return Succeeded(outcome)

    def list_payments(self, since: datetime) -> Result[list[PaymentOutcome]]:
        """Every PaymentIntent created since ``since``, with the refunds made since then; and
        the older PaymentIntents that had a refund made (or failed) since then, with it, so that
        a refund of a payment older than the window is found too."""
        created = {"gte": int(since.timestamp())}
        intents = self._call(
            lambda: [
                _plain(intent)
                for intent in self.client.v1.payment_intents.list(
                    params={"created": created, "limit": PAGE_SIZE}  # type: ignore[arg-type]
                ).auto_paging_iter()
            ]
        )
        if not isinstance(intents, Succeeded):
            return intents
        refunds = self._refunds({"created": created})
        if not isinstance(refunds, Succeeded):
            return refunds
        by_payment: dict[str, list[Refund]] = {}
        for refund in refunds.value:
            by_payment.setdefault(refund.payment_ref, []).append(refund)
        outcomes = []
        for intent in intents.value:
            outcome = _intent_outcome(intent)
            outcomes.append(_with(outcome, refunds=tuple(by_payment.pop(outcome.reference, ()))))
        for payment_ref, refunded in by_payment.items():  # payments older than the window
            if not payment_ref.startswith("pi_"):
                continue
            got = self._intent(payment_ref)
            if not isinstance(got, Succeeded):
                return got
            outcomes.append(_with(_intent_outcome(got.value), refunds=tuple(refunded)))
        return Succeeded(outcomes)

    def _intent(self, payment_ref: str) -> Result[dict[str, Any]]:
        return self._call(lambda: _plain(self.client.v1.payment_intents.retrieve(payment_ref)))

    def _refunds(self, params: dict[str, Any]) -> Result[list[Refund]]:
        return self._call(
            lambda: [
                _refund(_plain(refund))
                for refund in self.client.v1.refunds.list(
                    params={**params, "limit": PAGE_SIZE}  # type: ignore[arg-type]
                ).auto_paging_iter()
            ]
        )

    # -- webhooks ------------------------------------------------------------------------------

    def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> WebhookEvent:
        """Verify ``Stripe-Signature`` with the SDK (any configured secret, any ``v1``, 300 s),
        refuse a timestamp more than a minute ahead or given twice, then decode."""
        header = next(
            (v for k, v in headers.items() if k.lower() == SIGNATURE_HEADER.lower()), None
        )
        if not header:
            raise SignatureError(f"no {SIGNATURE_HEADER} header")
        timestamps = [p[2:] for p in (part.strip() for part in header.split(",")) if p[:2] == "t="]
        if len(timestamps) != 1 or not timestamps[0].isdigit():
            raise SignatureError(f"the {SIGNATURE_HEADER} header needs exactly one timestamp")
        if int(timestamps[0]) > self._clock() + FUTURE_SKEW_SECONDS:
            raise SignatureError("the webhook's timestamp is in the future")
        try:
            payload = body.decode("utf-8")
        except UnicodeDecodeError as error:
            raise SignatureError("the webhook body is not UTF-8") from error
        # the SDK's own check (what construct_event runs), without construct_event's parse of
        # the body into StripeObjects that nothing here reads: the body is parsed once, below
        for secret in self.settings.webhook_secrets:
            try:
                stripe.WebhookSignature.verify_header(payload, header, secret, TOLERANCE_SECONDS)
            except stripe.SignatureVerificationError:
                continue
            break
        else:
            raise SignatureError("the webhook's signature does not verify (or is too old)")
        try:
            return event_from(json.loads(payload))
        except (KeyError, TypeError, ValueError, AttributeError) as error:  # signed, not an event
            raise SignatureError("the webhook body is not a Stripe event") from error

    # -- saved cards -------------------------------------------------------------------------

    def ensure_customer(self, profile: CustomerProfile) -> Result[str]:
        params: dict[str, Any] = {
            "name": profile.name[:256],
            "metadata": {"customer_ref": profile.customer_ref},
        }
        if profile.email:
            params["email"] = profile.email
        found = self._call(
            lambda: self.client.v1.customers.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": profile.idempotency_key},
            )
        )
        if not isinstance(found, Succeeded):
            return found
        return Succeeded(str(found.value.id))

    def start_card_setup(self, request: CardSetupRequest) -> Result[PaymentSession]:
        metadata = {"customer_ref": request.customer_ref}
        params: dict[str, Any] = {
            "mode": "setup",
            "customer": request.gateway_customer_ref,
            "payment_method_types": ["card"],
            "success_url": return_url(request.return_url),
            "cancel_url": return_url(request.return_url, canceled=True),
            "metadata": metadata,
            "setup_intent_data": {"metadata": metadata},
        }
        found = self._call(
            lambda: self.client.v1.checkout.sessions.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": request.idempotency_key},
            )
        )
        if not isinstance(found, Succeeded):
            return found
        session = found.value
        return Succeeded(PaymentSession(gateway_ref=str(session.id), redirect_url=str(session.url)))

    def get_card_setup(self, gateway_ref: str) -> Result[CardSetupOutcome]:
        if not gateway_ref.startswith("cs_"):
            return BusinessRejection(
                "Stripe has no such card setup", code="stripe.resource_missing"
            )
        found = self._call(
            lambda: self.client.v1.checkout.sessions.retrieve(
                gateway_ref, params={"expand": ["setup_intent.payment_method"]}
            )
        )
        if not isinstance(found, Succeeded):
            return found
        session = _plain(found.value)
        setup = session.get("setup_intent")
        card = None
        if isinstance(setup, dict) and isinstance(setup.get("payment_method"), dict):
            card = _card(setup["payment_method"])
        status = {
            "complete": PaymentStatus.SUCCEEDED,
            "expired": PaymentStatus.FAILED,
        }.get(str(session.get("status")), PaymentStatus.PROCESSING)
        if status is PaymentStatus.SUCCEEDED and card is None:
            status = PaymentStatus.PROCESSING  # complete, the card not attached yet
        return Succeeded(
            CardSetupOutcome(
                gateway_ref=gateway_ref,
                status=status,
                card=card if status is PaymentStatus.SUCCEEDED else None,
                customer_ref=(session.get("metadata") or {}).get("customer_ref"),
                failure_reason="The card page expired" if status is PaymentStatus.FAILED else None,
            )
        )

    def list_cards(self, gateway_customer_ref: str) -> Result[list[SavedCard]]:
        return self._call(
            lambda: [
                _card(_plain(method))
                for method in self.client.v1.customers.payment_methods.list(
                    gateway_customer_ref, params={"type": "card", "limit": PAGE_SIZE}
                ).auto_paging_iter()
            ]
        )

    def detach_card(self, card_ref: str) -> Result[None]:
        found = self._call(lambda: self.client.v1.payment_methods.detach(card_ref))
        if not isinstance(found, Succeeded):
            return found
        return Succeeded(None)

    def charge_saved_card(self, charge: SavedCardCharge) -> Result[PaymentOutcome]:
        """``POST /v1/payment_intents`` with ``confirm`` and ``off_session``."""
        refusal = _check_amount(charge.amount_minor, charge.currency)
        if refusal is not None:
            return refusal
        params: dict[str, Any] = {
            "amount": charge.amount_minor,
            "currency": charge.currency.lower(),
            "customer": charge.gateway_customer_ref,
            "payment_method": charge.card_ref,
            "off_session": True,
            "confirm": True,
            "description": (charge.description or "")[:1000] or None,
            "metadata": _refs(charge.invoice_ref, charge.customer_ref),
        }
        try:
            intent = self.client.v1.payment_intents.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": charge.idempotency_key},
            )
        except stripe.CardError as error:
            # 402: the charge was tried and the bank said no, or wants the customer
            body = _error_body(error)
            intent_data = body.get("payment_intent")
            code = str(body.get("code") or error.code or "card_declined")
            reason = str(body.get("message") or "The card was declined")
            ref = str(intent_data.get("id")) if isinstance(intent_data, dict) else ""
            status = (
                PaymentStatus.REQUIRES_ACTION
                if code == AUTHENTICATION_REQUIRED
                else PaymentStatus.FAILED
            )
            return Succeeded(
                PaymentOutcome(
                    gateway_ref=ref or charge.idempotency_key,
                    status=status,
                    amount_minor=charge.amount_minor,
                    currency=charge.currency,
                    failure_reason=reason,
                    failure_code=code
                    if code == AUTHENTICATION_REQUIRED
                    else str(body.get("decline_code") or code),
                    payment_ref=ref or None,
                    invoice_ref=charge.invoice_ref,
                    customer_ref=charge.customer_ref,
                )
            )
        except stripe.StripeError as error:
            return _classify(error)
        except Exception as error:
            return _unexpected(error)
        return Succeeded(_intent_outcome(_plain(intent)))

    # -- internals ---------------------------------------------------------------------------

    def _call(self, call: Callable[[], T]) -> Result[T]:
        try:
            return Succeeded(call())
        except stripe.StripeError as error:
            return _classify(error)
        except Exception as error:
            return _unexpected(error)


# -- what Stripe sends, as the portal's values ----------------------------------------------------


def event_from(data: dict[str, Any]) -> WebhookEvent:
    """A Stripe event (its JSON) as a :class:`WebhookEvent`."""
    event_id = str(data["id"])
    type_ = str(data["type"])
    obj = data["data"]["object"]
    occurred = _when(data.get("created"))
    if type_ in PAYMENT_EVENTS:
        return WebhookEvent(event_id, type_, _intent_outcome(obj), PAYMENT_EVENTS[type_], occurred)
    if type_ in CHECKOUT_EVENTS:
        if obj.get("mode") == "setup":
            setup = CardSetupOutcome(
                gateway_ref=str(obj["id"]),
                status=PaymentStatus.SUCCEEDED,
                customer_ref=(obj.get("metadata") or {}).get("customer_ref"),
            )
            return WebhookEvent(
                event_id, type_, None, EventKind.CARD_SAVED, occurred, card_setup=setup
            )
        outcome = _session_outcome(obj)
        if type_ == "checkout.session.async_payment_failed":
            outcome = _with(outcome, status=PaymentStatus.FAILED, failure_reason="Payment failed")
        return WebhookEvent(event_id, type_, outcome, CHECKOUT_EVENTS[type_], occurred)
    if type_ == "charge.refunded":
        listed = obj.get("refunds")
        refunds = None
        if isinstance(listed, dict) and not listed.get("has_more"):
            refunds = tuple(_refund(r) for r in listed.get("data") or [])
        return WebhookEvent(
            event_id,
            type_,
            _charge_outcome(obj),
            EventKind.CHARGE_REFUNDED,
            occurred,
            refunds=refunds,
        )
    if type_ in REFUND_EVENTS:
        return WebhookEvent(
            event_id, type_, None, EventKind.CHARGE_REFUNDED, occurred, refunds=(_refund(obj),)
        )
    if type_ in DISPUTE_EVENTS:
        dispute = Dispute(
            dispute_ref=str(obj["id"]),
            payment_ref=str(obj.get("payment_intent") or obj["charge"]),
            amount_minor=_int(obj["amount"]),
            currency=str(obj["currency"]).upper(),
            reason=str(obj.get("reason") or "unknown"),
            status=str(obj.get("status") or "needs_response"),
            created_at=_when(obj.get("created")),
        )
        kind = EventKind.DISPUTE_CREATED if type_ == "charge.dispute.created" else EventKind.OTHER
        return WebhookEvent(event_id, type_, None, kind, occurred, dispute=dispute)
    if type_ == "setup_intent.succeeded":
        setup = CardSetupOutcome(
            gateway_ref=str(obj["id"]),
            status=PaymentStatus.SUCCEEDED,
            customer_ref=(obj.get("metadata") or {}).get("customer_ref"),
        )
        return WebhookEvent(event_id, type_, None, EventKind.CARD_SAVED, occurred, card_setup=setup)
    return WebhookEvent(event_id, type_, None, EventKind.OTHER, occurred)


def _intent_outcome(intent: Mapping[str, Any], gateway_ref: str | None = None) -> PaymentOutcome:
    status_name = str(intent["status"])
    error = intent.get("last_payment_error") or None
    status = {
        "succeeded": PaymentStatus.SUCCEEDED,
        "requires_action": PaymentStatus.REQUIRES_ACTION,
        "canceled": PaymentStatus.FAILED,
    }.get(status_name, PaymentStatus.PROCESSING)
    if status_name == "requires_payment_method" and error:
        status = PaymentStatus.FAILED  # tried and refused; the page lets the customer retry
    reason = None
    code = None
    if isinstance(error, Mapping):
        reason = str(error.get("message") or "The payment failed")
        code = str(error.get("decline_code") or error.get("code") or "") or None
    if status_name == "canceled":
        reason = reason or "The payment was canceled"
        code = code or str(intent.get("cancellation_reason") or "canceled")
    metadata = intent.get("metadata") or {}
    amount_key = "amount_received" if status is PaymentStatus.SUCCEEDED else "amount"
    return PaymentOutcome(
        gateway_ref=gateway_ref or str(intent["id"]),
        status=status,
        amount_minor=_int(intent.get(amount_key) or intent["amount"]),
        currency=str(intent["currency"]).upper(),
        failure_reason=reason if status is not PaymentStatus.SUCCEEDED else None,
        failure_code=code if status is not PaymentStatus.SUCCEEDED else None,
        payment_ref=str(intent["id"]),
        invoice_ref=metadata.get("invoice_ref"),
        customer_ref=metadata.get("customer_ref"),
        created_at=_when(intent.get("created")),
    )


def _session_outcome(session: Mapping[str, Any]) -> PaymentOutcome:
    """A payment-mode Checkout Session whose PaymentIntent is not expanded."""
    paid = session.get("payment_status") in ("paid", "no_payment_required")
    status = PaymentStatus.SUCCEEDED if paid else PaymentStatus.PROCESSING
    reason = None
    if session.get("status") == "expired" and not paid:
        status, reason = PaymentStatus.FAILED, "The payment page expired"
    intent = session.get("payment_intent")
    metadata = session.get("metadata") or {}
    return PaymentOutcome(
        gateway_ref=str(session["id"]),
        status=status,
        amount_minor=_int(session.get("amount_total") or 0),
        currency=str(session.get("currency") or "").upper(),
        failure_reason=reason,
        failure_code="expired" if reason else None,
        payment_ref=str(intent) if isinstance(intent, str) and intent else None,
        invoice_ref=metadata.get("invoice_ref") or session.get("client_reference_id"),
        customer_ref=metadata.get("customer_ref"),
        created_at=_when(session.get("created")),
    )


def _charge_outcome(charge: Mapping[str, Any]) -> PaymentOutcome:
    """The payment a (refunded or disputed) charge belongs to: money that was received."""
    metadata = charge.get("metadata") or {}
    intent = charge.get("payment_intent")
    return PaymentOutcome(
        gateway_ref=str(intent or charge["id"]),
        status=PaymentStatus.SUCCEEDED
        if charge.get("status") == "succeeded"
        else PaymentStatus.FAILED,
        amount_minor=_int(charge.get("amount_captured") or charge["amount"]),
        currency=str(charge["currency"]).upper(),
        payment_ref=str(intent or charge["id"]),
        invoice_ref=metadata.get("invoice_ref"),
        customer_ref=metadata.get("customer_ref"),
        created_at=_when(charge.get("created")),
    )


def _refund(refund: Mapping[str, Any]) -> Refund:
    try:
        status = RefundStatus(str(refund.get("status")))
    except ValueError:
        status = RefundStatus.PENDING  # requires_action and future states: not money yet
    return Refund(
        refund_ref=str(refund["id"]),
        payment_ref=str(refund.get("payment_intent") or refund.get("charge")),
        amount_minor=_int(refund["amount"]),
        currency=str(refund["currency"]).upper(),
        status=status,
        created_at=_when(refund.get("created")),
    )


def _card(method: Mapping[str, Any]) -> SavedCard:
    card = method.get("card") or {}
    customer = method.get("customer")
    return SavedCard(
        card_ref=str(method["id"]),
        brand=str(card.get("brand") or "card"),
        last4=str(card.get("last4") or "????"),
        exp_month=_int(card.get("exp_month") or 1),
        exp_year=_int(card.get("exp_year") or 2000),
        gateway_customer_ref=str(customer) if isinstance(customer, str) else None,
    )


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Stripe sent {value!r} where a whole number of minor units belongs")
    return value


def _when(value: Any) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if isinstance(value, int) else None


def _with(outcome: PaymentOutcome, **changes: Any) -> PaymentOutcome:
    return replace(outcome, **changes)


def _plain(obj: Any) -> dict[str, Any]:
    """A StripeObject as plain dicts and lists."""
    if isinstance(obj, dict) and not isinstance(obj, stripe.StripeObject):
        return obj
    return dict(obj.to_dict())


def _refs(invoice_ref: str, customer_ref: str) -> dict[str, str]:
    # Stripe metadata values are at most 500 characters
    return {"invoice_ref": invoice_ref[:500], "customer_ref": customer_ref[:500]}


def return_url(url: str, *, canceled: bool = False) -> str:
    """The portal's return URL with ``payment={CHECKOUT_SESSION_ID}`` (Stripe fills the id in)
    and ``canceled=1`` for the cancel button, as the demo gateway's ``?payment=<ref>``."""
    parts = urlsplit(url)
    query = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if k not in ("payment", "canceled")
    ]
    encoded = urlencode(query)
    extra = f"payment={SESSION_PLACEHOLDER}" + ("&canceled=1" if canceled else "")
    return urlunsplit(parts._replace(query=f"{encoded}&{extra}" if encoded else extra))


def _check_amount(amount: Any, currency: str) -> BusinessRejection | None:
    if isinstance(amount, bool) or not isinstance(amount, int):
        return BusinessRejection(
            "The amount must be a whole number of minor units", code="stripe.invalid_amount"
        )
    if amount <= 0:
        return BusinessRejection("The amount must be more than zero", code="stripe.invalid_amount")
    if amount > MAX_AMOUNT_MINOR:
        return BusinessRejection(
            "The amount is more than Stripe accepts in one payment", code="stripe.invalid_amount"
        )
    if not CURRENCY.fullmatch(currency or ""):
        return BusinessRejection(
            "The currency must be a three-letter ISO 4217 code", code="stripe.invalid_currency"
        )
    return None


def _error_body(error: stripe.StripeError) -> dict[str, Any]:
    body = error.json_body if isinstance(error.json_body, dict) else {}
    inner = body.get("error")
    return inner if isinstance(inner, dict) else {}


def _classify(error: stripe.StripeError) -> TechnicalFailure | BusinessRejection:
    """Stripe's errors as the portal's results: what retrying can fix is technical."""
    body = _error_body(error)
    message = str(body.get("message") or error.user_message or "Stripe refused the request")
    code = str(body.get("code") or error.code or "") or None
    if isinstance(error, stripe.IdempotencyError):
        return BusinessRejection(
            "This idempotency key was already used for a different request",
            code=IDEMPOTENCY_KEY_REUSED,
        )
    if isinstance(error, stripe.RateLimitError):
        return TechnicalFailure("Stripe asked us to slow down", retry_after=timedelta(seconds=2))
    if isinstance(error, stripe.APIConnectionError):
        return TechnicalFailure("Stripe could not be reached", retry_after=timedelta(seconds=5))
    status = error.http_status or 0
    if status == 409 or status >= 500 or isinstance(error, stripe.APIError):
        return TechnicalFailure(f"Stripe failed ({status or 'no answer'})", timedelta(seconds=5))
    if isinstance(error, stripe.AuthenticationError | stripe.PermissionError):
        log.error("stripe: the secret key was refused (%s)", type(error).__name__)
        return BusinessRejection(
            "The portal's Stripe key was refused; the partner must fix its settings",
            code="stripe.authentication",
        )
    return BusinessRejection(message, code=f"stripe.{code}" if code else "stripe.invalid_request")


def _unexpected(error: Exception) -> TechnicalFailure:
    log.warning("stripe: unexpected %s", type(error).__name__, exc_info=True)
    return TechnicalFailure(f"Stripe's answer could not be read ({type(error).__name__})")
