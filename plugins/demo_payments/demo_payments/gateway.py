"""The demo payment gateway: a :class:`~portal.integrations.payments.PaymentGateway` whose
"hosted payment page" is the plugin's own test card form.

- ``start_payment`` is idempotent by the request's ``idempotency_key`` and sends the customer to
  ``/p/demo_payments/pay/<gateway_ref>`` (the ref is an unguessable token).
- Test cards: ``4242 4242 4242 4242`` succeeds, ``4000 0000 0000 0002`` is declined,
  ``4000 0025 0000 3155`` asks for extra authentication first.
- Webhooks are signed like Stripe's: header ``Demo-Signature: t=<unix>,v1=<hex>``, an
  HMAC-SHA256 over ``"<t>.<body>"`` with ``PORTAL_DEMO_PAYMENTS_WEBHOOK_SECRET``, valid for
  five minutes.
- Amounts are integer minor units, always.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy import Engine, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from demo_payments.models import DemoPayment
from portal.db import utcnow
from portal.integrations.payments import (
    PaymentOutcome,
    PaymentRequest,
    PaymentSession,
    PaymentStatus,
    SignatureError,
    WebhookEvent,
)
from portal.integrations.registry import PluginError
from portal.integrations.results import BusinessRejection, Result, Succeeded, TechnicalFailure

log = logging.getLogger(__name__)

MOUNT = "/p/demo_payments"
SIGNATURE_HEADER = "Demo-Signature"
TOLERANCE_SECONDS = 300
# a fixed value so that development works with no set-up; production never runs the demo
DEVELOPMENT_WEBHOOK_SECRET = "demo-payments-development-webhook-secret"  # noqa: S105
MAX_AMOUNT_MINOR = 999_999_999_999

SUCCEEDING_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000002"
AUTHENTICATION_CARD = "4000002500003155"
TEST_CARDS = frozenset({SUCCEEDING_CARD, DECLINED_CARD, AUTHENTICATION_CARD})

DECLINED = "Your card was declined."
NOT_AUTHENTICATED = "The payment was not authenticated."
FINAL = frozenset({PaymentStatus.SUCCEEDED, PaymentStatus.FAILED})
CURRENCY = re.compile(r"[A-Z]{3}")
EVENT_TYPES = {
    PaymentStatus.PROCESSING: "payment.processing",
    PaymentStatus.REQUIRES_ACTION: "payment.requires_action",
    PaymentStatus.SUCCEEDED: "payment.succeeded",
    PaymentStatus.FAILED: "payment.failed",
}


@dataclass(frozen=True)
class DemoPaymentSettings:
    """``PORTAL_DEMO_PAYMENTS_*`` settings."""

    webhook_secret: str = DEVELOPMENT_WEBHOOK_SECRET

    @classmethod
    def from_settings(cls, raw: Mapping[str, Any]) -> DemoPaymentSettings:
        secret = str(raw.get("WEBHOOK_SECRET") or DEVELOPMENT_WEBHOOK_SECRET)
        return cls(webhook_secret=secret)


@dataclass(frozen=True)
class PaymentView:
    """What the card form shows of a payment."""

    gateway_ref: str
    amount_minor: int
    currency: str
    description: str
    status: PaymentStatus
    failure_reason: str | None
    return_url: str

    @property
    def final(self) -> bool:
        return self.status in FINAL

    @property
    def back_url(self) -> str:
        """The portal's ``return_url`` with ``?payment=<gateway_ref>``."""
        parts = urlsplit(self.return_url)
        query = [
            (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "payment"
        ]
        query.append(("payment", self.gateway_ref))
        return urlunsplit(parts._replace(query=urlencode(query)))


def card_digits(number: str) -> str:
    """The card number without the spaces and dashes people type."""
    return re.sub(r"[\s-]", "", number)


def signature_header(body: bytes, secret: str, timestamp: int) -> str:
    """The ``Demo-Signature`` value for ``body`` signed at ``timestamp`` (unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


class DemoPaymentGateway:
    """The ``"demo"`` payment gateway."""

    key = "demo"
    display_name = "Demo payments"

    def __init__(
        self,
        engine: Engine,
        settings: DemoPaymentSettings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.settings = settings or DemoPaymentSettings()
        self._clock = clock

    def __repr__(self) -> str:
        return f"<DemoPaymentGateway key={self.key!r}>"

    # -- the Protocol ------------------------------------------------------------------------

    def start_payment(self, request: PaymentRequest) -> Result[PaymentSession]:
        """Open a payment once per idempotency key; the customer pays on the card form."""
        refusal = _check_request(request)
        if refusal is not None:
            return refusal
        try:
            with Session(self.engine) as session, session.begin():
                session.execute(
                    _insert_ignoring_duplicates(
                        self.engine,
                        {
                            "gateway_ref": "dp_" + secrets.token_urlsafe(24),
                            "idempotency_key": request.idempotency_key,
                            "invoice_ref": request.invoice_ref,
                            "customer_ref": request.customer_ref,
                            "amount_minor": request.amount_minor,
                            "currency": request.currency,
                            "description": request.description,
                            "return_url": request.return_url,
                            "status": PaymentStatus.PROCESSING.value,
                            "created_at": utcnow(),
                            "updated_at": utcnow(),
                        },
                    )
                )
                payment = session.scalars(
                    select(DemoPayment).where(
                        DemoPayment.idempotency_key == request.idempotency_key
                    )
                ).one()
                if _asked_for(payment) != _asked(request):
                    return BusinessRejection(
                        "This idempotency key was already used for a different payment",
                        code="demo.idempotency_key_reused",
                    )
                return Succeeded(
                    PaymentSession(
                        gateway_ref=payment.gateway_ref,
                        redirect_url=f"{MOUNT}/pay/{payment.gateway_ref}",
                    )
                )
        except SQLAlchemyError as error:
            return _store_failure(error)

    def get_payment(self, gateway_ref: str) -> Result[PaymentOutcome]:
        """The payment as it truly stands; an unknown ref is a rejection (``demo.not_found``)."""
        try:
            view = self.find(gateway_ref)
        except SQLAlchemyError as error:
            return _store_failure(error)
        if view is None:
            return BusinessRejection("The demo gateway has no such payment", code="demo.not_found")
        return Succeeded(_outcome(view))

    def list_payments(self, since: datetime) -> Result[list[PaymentOutcome]]:
        """Every demo payment created at or after ``since``, oldest first (reconciliation)."""
        try:
            with Session(self.engine) as session:
                payments = session.scalars(
                    select(DemoPayment)
                    .where(DemoPayment.created_at >= since)
                    .order_by(DemoPayment.created_at, DemoPayment.id)
                ).all()
                return Succeeded(
                    [
                        replace(
                            _outcome(_view(payment)),
                            invoice_ref=payment.invoice_ref,
                            customer_ref=payment.customer_ref,
                            created_at=payment.created_at,
                        )
                        for payment in payments
                    ]
                )
        except SQLAlchemyError as error:
            return _store_failure(error)

    def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> WebhookEvent:
        """Verify ``Demo-Signature`` (HMAC-SHA256, five minutes' tolerance), then decode."""
        self._verify(body, headers)
        try:
            data = json.loads(body)
            payment = data.get("payment")
            outcome = None
            if payment is not None:
                amount = payment["amount_minor"]
                if isinstance(amount, bool) or not isinstance(amount, int):
                    raise TypeError("amount_minor must be an integer")
                outcome = PaymentOutcome(
                    gateway_ref=str(payment["gateway_ref"]),
                    status=PaymentStatus(payment["status"]),
                    amount_minor=amount,
                    currency=str(payment["currency"]),
                    failure_reason=payment.get("failure_reason"),
                )
            return WebhookEvent(event_id=str(data["id"]), type=str(data["type"]), payment=outcome)
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise SignatureError("the webhook body is not a demo payments event") from error

    # -- the card form (and tests) ---------------------------------------------------------

    def find(self, gateway_ref: str) -> PaymentView | None:
        with Session(self.engine) as session:
            payment = session.scalars(
                select(DemoPayment).where(DemoPayment.gateway_ref == gateway_ref)
            ).first()
            return None if payment is None else _view(payment)

    def pay_with_card(self, gateway_ref: str, card_number: str) -> PaymentView | None:
        """Charge a test card; None when the number is not a test card (nothing changes)."""
        number = card_digits(card_number)
        if number not in TEST_CARDS:
            return None
        if number == SUCCEEDING_CARD:
            return self._move(gateway_ref, PaymentStatus.PROCESSING, PaymentStatus.SUCCEEDED)
        if number == DECLINED_CARD:
            return self._move(
                gateway_ref, PaymentStatus.PROCESSING, PaymentStatus.FAILED, reason=DECLINED
            )
        return self._move(gateway_ref, PaymentStatus.PROCESSING, PaymentStatus.REQUIRES_ACTION)

    def authenticate(self, gateway_ref: str, approve: bool) -> PaymentView | None:
        """The customer's answer on the extra authentication page."""
        if approve:
            return self._move(gateway_ref, PaymentStatus.REQUIRES_ACTION, PaymentStatus.SUCCEEDED)
        return self._move(
            gateway_ref,
            PaymentStatus.REQUIRES_ACTION,
            PaymentStatus.FAILED,
            reason=NOT_AUTHENTICATED,
        )

    def sign(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        """Headers a webhook from the demo gateway carries for ``body``."""
        when = int(self._clock()) if timestamp is None else timestamp
        return {SIGNATURE_HEADER: signature_header(body, self.settings.webhook_secret, when)}

    def webhook_for(self, gateway_ref: str) -> tuple[bytes, dict[str, str]]:
        """The signed webhook the demo gateway would send about the payment's current state."""
        view = self.find(gateway_ref)
        if view is None:
            raise LookupError(f"no demo payment {gateway_ref!r}")
        body = json.dumps(
            {
                "id": "evt_" + secrets.token_hex(12),
                "type": EVENT_TYPES[view.status],
                "payment": {
                    "gateway_ref": view.gateway_ref,
                    "status": view.status.value,
                    "amount_minor": view.amount_minor,
                    "currency": view.currency,
                    "failure_reason": view.failure_reason,
                },
            },
            separators=(",", ":"),
        ).encode()
        return body, self.sign(body)

    # -- internals ---------------------------------------------------------------------------

    def _move(
        self,
        gateway_ref: str,
        current: PaymentStatus,
        new: PaymentStatus,
        reason: str | None = None,
    ) -> PaymentView | None:
        """Move the payment from ``current`` to ``new``; a payment in any other state stays."""
        with Session(self.engine) as session, session.begin():
            session.execute(
                update(DemoPayment)
                .where(DemoPayment.gateway_ref == gateway_ref, DemoPayment.status == current.value)
                .values(status=new.value, failure_reason=reason, updated_at=utcnow())
            )
        return self.find(gateway_ref)

    def _verify(self, body: bytes, headers: Mapping[str, str]) -> None:
        header = next(
            (v for k, v in headers.items() if k.lower() == SIGNATURE_HEADER.lower()), None
        )
        if not header:
            raise SignatureError(f"no {SIGNATURE_HEADER} header")
        timestamp: int | None = None
        signatures: list[str] = []
        for part in header.split(","):
            name, _, value = part.strip().partition("=")
            if name == "t" and value.isdigit():
                timestamp = int(value)
            elif name == "v1":
                signatures.append(value)
        if timestamp is None or not signatures:
            raise SignatureError(f"the {SIGNATURE_HEADER} header is malformed")
        if abs(self._clock() - timestamp) > TOLERANCE_SECONDS:
            raise SignatureError("the webhook's timestamp is outside the tolerance")
        expected = signature_header(body, self.settings.webhook_secret, timestamp)
        expected_mac = expected.partition(",v1=")[2]
        if not any(hmac.compare_digest(expected_mac, given) for given in signatures):
            raise SignatureError("the webhook's signature does not match its body")


def _check_request(request: PaymentRequest) -> BusinessRejection | None:
    amount = request.amount_minor
    if isinstance(amount, bool) or not isinstance(amount, int):
        return BusinessRejection(
            "The amount must be a whole number of minor units", code="demo.invalid_amount"
        )
    if amount <= 0:
        return BusinessRejection("The amount must be more than zero", code="demo.invalid_amount")
    if amount > MAX_AMOUNT_MINOR:
        return BusinessRejection(
            "The amount is more than the demo gateway accepts", code="demo.invalid_amount"
        )
    if not CURRENCY.fullmatch(request.currency or ""):
        return BusinessRejection(
            "The currency must be a three-letter ISO 4217 code", code="demo.invalid_currency"
        )
    limits = {
        "idempotency_key": (request.idempotency_key, 255),
        "invoice_ref": (request.invoice_ref, 128),
        "customer_ref": (request.customer_ref, 128),
        "description": (request.description, 500),
        "return_url": (request.return_url, 2000),
    }
    if not _safe_return_url(request.return_url or ""):
        return BusinessRejection(
            "The return URL must be an http(s) address or a path on the portal",
            code="demo.invalid_request",
        )
    for name, (value, limit) in limits.items():
        if len(value or "") > limit or (name in {"idempotency_key", "return_url"} and not value):
            return BusinessRejection(
                f"The payment's {name} is missing or too long", code="demo.invalid_request"
            )
    return None


def _safe_return_url(url: str) -> bool:
    """An address the card form may send the customer back to (and link to): never a
    ``javascript:`` or ``data:`` URL."""
    parts = urlsplit(url)
    if parts.scheme in {"http", "https"}:
        return bool(parts.netloc)
    return not parts.scheme and not parts.netloc and url.startswith("/") and "\\" not in url


def _asked(request: PaymentRequest) -> tuple[object, ...]:
    return (
        request.invoice_ref,
        request.customer_ref,
        request.amount_minor,
        request.currency,
        request.description,
        request.return_url,
    )


def _asked_for(payment: DemoPayment) -> tuple[object, ...]:
    return (
        payment.invoice_ref,
        payment.customer_ref,
        payment.amount_minor,
        payment.currency,
        payment.description,
        payment.return_url,
    )


def _view(payment: DemoPayment) -> PaymentView:
    return PaymentView(
        gateway_ref=payment.gateway_ref,
        amount_minor=int(payment.amount_minor),
        currency=payment.currency,
        description=payment.description,
        status=PaymentStatus(payment.status),
        failure_reason=payment.failure_reason,
        return_url=payment.return_url,
    )


def _outcome(view: PaymentView) -> PaymentOutcome:
    return PaymentOutcome(
        gateway_ref=view.gateway_ref,
        status=view.status,
        amount_minor=view.amount_minor,
        currency=view.currency,
        failure_reason=view.failure_reason,
    )


def _store_failure(error: SQLAlchemyError) -> TechnicalFailure:
    log.warning("demo payments: its store failed (%s)", type(error).__name__)
    return TechnicalFailure("The demo gateway could not reach its store", timedelta(seconds=5))


def _insert_ignoring_duplicates(engine: Engine, values: dict[str, Any]) -> Any:
    dialect = engine.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(DemoPayment).values(**values).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(DemoPayment).values(**values).on_conflict_do_nothing()
    raise PluginError(f"demo payments supports SQLite and PostgreSQL, not {dialect}")
