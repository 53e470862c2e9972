"""The demo payment gateway: a :class:`~portal.integrations.payments.SavedCardGateway` whose
"hosted pages" are the plugin's own test card forms, so that every payment flow of the portal
works offline, with no credentials.

- ``start_payment`` is idempotent by the request's ``idempotency_key`` and sends the customer to
  ``/p/demo_payments/pay/<gateway_ref>`` (the ref is an unguessable token); any amount may be
  asked for (partial payments are smaller amounts).
- Saving a card: ``ensure_customer`` makes the gateway's customer, ``start_card_setup`` sends
  the customer to ``/p/demo_payments/setup/<gateway_ref>``; a payment may also keep its card
  (``save_card``). ``charge_saved_card`` charges a saved card off-session.
- Test cards (:data:`TEST_CARDS`), as Stripe's test cards behave:

  ===================  ====================================  ===================================
  number               paying on the form                    saving it, then charging it
  ===================  ====================================  ===================================
  4242 4242 4242 4242  succeeds                              saved; charges succeed
  4000 0000 0000 0002  declined                              declined (not saved)
  4000 0025 0000 3155  asks for authentication first         authenticate once; charges succeed
  4000 0027 6000 3184  asks for authentication first         authenticate; every off-session
                                                             charge needs authentication
  4000 0000 0000 0341  declined                              saved; charges are declined
  ===================  ====================================  ===================================

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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy import Engine, Table, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from demo_payments.models import DemoCard, DemoCustomer, DemoPayment, DemoSetup
from portal.core.db import utcnow
from portal.integrations.payments import (
    AUTHENTICATION_REQUIRED,
    CARD_DECLINED,
    IDEMPOTENCY_KEY_REUSED,
    CardSetupOutcome,
    CardSetupRequest,
    CustomerProfile,
    EventKind,
    PaymentOutcome,
    PaymentRequest,
    PaymentSession,
    PaymentStatus,
    SavedCard,
    SavedCardCharge,
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
AUTHENTICATION_CARD = "4000002500003155"  # authenticate once (on the page, or when saving)
ALWAYS_AUTHENTICATE_CARD = "4000002760003184"  # every off-session charge needs the customer
DECLINED_AFTER_SAVING_CARD = "4000000000000341"  # saved fine, every charge is declined
TEST_CARDS = frozenset(
    {
        SUCCEEDING_CARD,
        DECLINED_CARD,
        AUTHENTICATION_CARD,
        ALWAYS_AUTHENTICATE_CARD,
        DECLINED_AFTER_SAVING_CARD,
    }
)
# what charging a saved card does, by the number it was saved with
SUCCEED, REQUIRE_AUTHENTICATION, DECLINE = "succeed", "require_authentication", "decline"
CHARGE_BEHAVIOUR = {
    SUCCEEDING_CARD: SUCCEED,
    AUTHENTICATION_CARD: SUCCEED,
    ALWAYS_AUTHENTICATE_CARD: REQUIRE_AUTHENTICATION,
    DECLINED_AFTER_SAVING_CARD: DECLINE,
}
# the card for each behaviour (tests and the contract's ``save_card``)
CARD_FOR_BEHAVIOUR = {
    SUCCEED: SUCCEEDING_CARD,
    REQUIRE_AUTHENTICATION: ALWAYS_AUTHENTICATE_CARD,
    DECLINE: DECLINED_AFTER_SAVING_CARD,
}
AUTHENTICATE_FIRST = frozenset({AUTHENTICATION_CARD, ALWAYS_AUTHENTICATE_CARD})
DECLINED_ON_THE_PAGE = frozenset({DECLINED_CARD, DECLINED_AFTER_SAVING_CARD})
CARD_YEARS = 3  # a test card saved today expires in December, three years on

DECLINED = "Your card was declined."
NOT_AUTHENTICATED = "The payment was not authenticated."
CARD_NOT_AUTHENTICATED = "The card was not authenticated."
AUTHENTICATION_NEEDED = "The card holder's bank asks them to authenticate this payment."
FINAL = frozenset({PaymentStatus.SUCCEEDED, PaymentStatus.FAILED})
CURRENCY = re.compile(r"[A-Z]{3}")
EVENT_TYPES = {
    PaymentStatus.PROCESSING: "payment.processing",
    PaymentStatus.REQUIRES_ACTION: "payment.requires_action",
    PaymentStatus.SUCCEEDED: "payment.succeeded",
    PaymentStatus.FAILED: "payment.failed",
}
EVENT_KINDS = {
    "payment.processing": EventKind.PAYMENT_PENDING,
    "payment.requires_action": EventKind.PAYMENT_PENDING,
    "payment.succeeded": EventKind.PAYMENT_SUCCEEDED,
    "payment.failed": EventKind.PAYMENT_FAILED,
}


@dataclass(frozen=True)
class DemoPaymentSettings:
    """``PORTAL_DEMO_PAYMENTS_*`` settings."""

    webhook_secret: str = DEVELOPMENT_WEBHOOK_SECRET

    @classmethod
    def from_settings(cls, raw: Mapping[str, Any]) -> DemoPaymentSettings:
        secret = str(raw.get("WEBHOOK_SECRET") or DEVELOPMENT_WEBHOOK_SECRET)
        return cls(webhook_secret=secret)


def with_ref(return_url: str, name: str, ref: str) -> str:
    """``return_url`` with ``?<name>=<ref>`` (replacing one already there)."""
    parts = urlsplit(return_url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != name]
    query.append((name, ref))
    return urlunsplit(parts._replace(query=urlencode(query)))


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
    failure_code: str | None = None
    save_card: bool = False
    off_session: bool = False
    invoice_ref: str | None = None
    customer_ref: str | None = None
    created_at: datetime | None = None
    card: SavedCard | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL

    @property
    def back_url(self) -> str:
        """The portal's ``return_url`` with ``?payment=<gateway_ref>``."""
        return with_ref(self.return_url, "payment", self.gateway_ref)


@dataclass(frozen=True)
class SetupView:
    """What the card-saving form shows of a setup."""

    gateway_ref: str
    status: PaymentStatus
    return_url: str
    failure_reason: str | None
    pending_last4: str | None

    @property
    def final(self) -> bool:
        return self.status in FINAL

    @property
    def back_url(self) -> str:
        """The portal's ``return_url`` with ``?setup=<gateway_ref>``."""
        return with_ref(self.return_url, "setup", self.gateway_ref)


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

    # -- PaymentGateway --------------------------------------------------------------------

    def start_payment(self, request: PaymentRequest) -> Result[PaymentSession]:
        """Open a payment once per idempotency key; the customer pays on the card form."""
        refusal = _check_request(request)
        if refusal is not None:
            return refusal
        try:
            with Session(self.engine) as session, session.begin():
                if request.save_card:
                    customer = _customer(session, request.gateway_customer_ref or "")
                    if customer is None:
                        return _no_customer()
                session.execute(
                    _insert_ignoring(
                        self.engine,
                        DemoPayment,
                        {
                            **_payment_row(request.idempotency_key),
                            "invoice_ref": request.invoice_ref,
                            "customer_ref": request.customer_ref,
                            "amount_minor": request.amount_minor,
                            "currency": request.currency,
                            "description": request.description,
                            "return_url": request.return_url,
                            "status": PaymentStatus.PROCESSING.value,
                            "save_card": bool(request.save_card),
                            "gateway_customer_ref": request.gateway_customer_ref,
                        },
                    )
                )
                payment = _payment_by_key(session, request.idempotency_key)
                if _asked_for(payment) != _asked(request):
                    return _key_reused("payment")
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
                return Succeeded([_outcome(_view(session, payment)) for payment in payments])
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
                    failure_code=payment.get("failure_code"),
                    invoice_ref=payment.get("invoice_ref"),
                    customer_ref=payment.get("customer_ref"),
                )
            created = data.get("created")
            occurred = (
                datetime.fromtimestamp(int(created), UTC)
                if isinstance(created, int) and not isinstance(created, bool)
                else None
            )
            kind = EVENT_KINDS.get(str(data["type"]), EventKind.OTHER)
            return WebhookEvent(
                event_id=str(data["id"]),
                type=str(data["type"]),
                payment=outcome,
                kind=kind,
                occurred_at=occurred,
            )
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as error:
            raise SignatureError("the webhook body is not a demo payments event") from error

    # -- SavedCardGateway ------------------------------------------------------------------

    def ensure_customer(self, profile: CustomerProfile) -> Result[str]:
        """The gateway's customer (``dcus_…``) for ``profile``, made once per idempotency key."""
        if not profile.idempotency_key or len(profile.idempotency_key) > 255:
            return BusinessRejection("The idempotency key is missing or too long", "demo.invalid")
        if not profile.customer_ref or len(profile.customer_ref) > 128:
            return BusinessRejection("The customer ref is missing or too long", "demo.invalid")
        if len(profile.name or "") > 200 or len(profile.email or "") > 254:
            return BusinessRejection("The customer's name or email is too long", "demo.invalid")
        try:
            with Session(self.engine) as session, session.begin():
                session.execute(
                    _insert_ignoring(
                        self.engine,
                        DemoCustomer,
                        {
                            "gateway_customer_ref": "dcus_" + secrets.token_urlsafe(16),
                            "idempotency_key": profile.idempotency_key,
                            "customer_ref": profile.customer_ref,
                            "name": profile.name or "",
                            "email": profile.email,
                            "created_at": utcnow(),
                        },
                    )
                )
                found = session.scalars(
                    select(DemoCustomer).where(
                        DemoCustomer.idempotency_key == profile.idempotency_key
                    )
                ).one()
                if (found.customer_ref, found.name, found.email) != (
                    profile.customer_ref,
                    profile.name or "",
                    profile.email,
                ):
                    return _key_reused("customer")
                return Succeeded(found.gateway_customer_ref)
        except SQLAlchemyError as error:
            return _store_failure(error)

    def start_card_setup(self, request: CardSetupRequest) -> Result[PaymentSession]:
        """Open a card-saving session once per idempotency key: the setup card form."""
        if not request.idempotency_key or len(request.idempotency_key) > 255:
            return BusinessRejection("The idempotency key is missing or too long", "demo.invalid")
        if not _safe_return_url(request.return_url or "") or len(request.return_url) > 2000:
            return BusinessRejection(
                "The return URL must be an http(s) address or a path on the portal",
                code="demo.invalid_request",
            )
        if len(request.customer_ref or "") > 128:
            return BusinessRejection("The customer ref is too long", "demo.invalid")
        try:
            with Session(self.engine) as session, session.begin():
                if _customer(session, request.gateway_customer_ref) is None:
                    return _no_customer()
                session.execute(
                    _insert_ignoring(
                        self.engine,
                        DemoSetup,
                        {
                            "gateway_ref": "dseti_" + secrets.token_urlsafe(24),
                            "idempotency_key": request.idempotency_key,
                            "customer_ref": request.customer_ref,
                            "gateway_customer_ref": request.gateway_customer_ref,
                            "return_url": request.return_url,
                            "status": PaymentStatus.PROCESSING.value,
                            "created_at": utcnow(),
                            "updated_at": utcnow(),
                        },
                    )
                )
                setup = session.scalars(
                    select(DemoSetup).where(DemoSetup.idempotency_key == request.idempotency_key)
                ).one()
                asked = (request.customer_ref, request.gateway_customer_ref, request.return_url)
                if (setup.customer_ref, setup.gateway_customer_ref, setup.return_url) != asked:
                    return _key_reused("card setup")
                return Succeeded(
                    PaymentSession(
                        gateway_ref=setup.gateway_ref,
                        redirect_url=f"{MOUNT}/setup/{setup.gateway_ref}",
                    )
                )
        except SQLAlchemyError as error:
            return _store_failure(error)

    def get_card_setup(self, gateway_ref: str) -> Result[CardSetupOutcome]:
        """The setup's state and, once it succeeded, its card."""
        try:
            with Session(self.engine) as session:
                setup = _setup(session, gateway_ref)
                if setup is None:
                    return BusinessRejection(
                        "The demo gateway has no such card setup", code="demo.not_found"
                    )
                card = _card(session, setup.card_ref) if setup.card_ref else None
                return Succeeded(
                    CardSetupOutcome(
                        gateway_ref=setup.gateway_ref,
                        status=PaymentStatus(setup.status),
                        card=_saved(card) if card is not None else None,
                        customer_ref=setup.customer_ref,
                        failure_reason=setup.failure_reason,
                    )
                )
        except SQLAlchemyError as error:
            return _store_failure(error)

    def list_cards(self, gateway_customer_ref: str) -> Result[list[SavedCard]]:
        """The customer's saved cards, oldest first (an unknown customer has none)."""
        try:
            with Session(self.engine) as session:
                cards = session.scalars(
                    select(DemoCard)
                    .where(
                        DemoCard.gateway_customer_ref == gateway_customer_ref,
                        DemoCard.detached_at.is_(None),
                    )
                    .order_by(DemoCard.id)
                ).all()
                return Succeeded([_saved(card) for card in cards])
        except SQLAlchemyError as error:
            return _store_failure(error)

    def detach_card(self, card_ref: str) -> Result[None]:
        """Remove a saved card for good; removing it again changes nothing."""
        try:
            with Session(self.engine) as session, session.begin():
                card = _card(session, card_ref, include_detached=True)
                if card is None:
                    return BusinessRejection(
                        "The demo gateway has no such card", code="demo.no_such_card"
                    )
                if card.detached_at is None:
                    card.detached_at = utcnow()
                return Succeeded(None)
        except SQLAlchemyError as error:
            return _store_failure(error)

    def charge_saved_card(self, charge: SavedCardCharge) -> Result[PaymentOutcome]:
        """Charge a saved card off-session, once per idempotency key: the card's test number
        decides whether it succeeds, needs the customer (``authentication_required``) or is
        declined."""
        refusal = _check_charge(charge)
        if refusal is not None:
            return refusal
        asked = _charged(charge)
        try:
            with Session(self.engine) as session, session.begin():
                earlier = _payment_by_key(session, charge.idempotency_key, missing_ok=True)
                if earlier is None:
                    card = _card(session, charge.card_ref)
                    if card is None or (
                        charge.gateway_customer_ref
                        and card.gateway_customer_ref != charge.gateway_customer_ref
                    ):
                        return BusinessRejection(
                            "The demo gateway has no such saved card for this customer",
                            code="demo.no_such_card",
                        )
                    status, code, reason = _charge_result(card.behaviour)
                    session.execute(
                        _insert_ignoring(
                            self.engine,
                            DemoPayment,
                            {
                                **_payment_row(charge.idempotency_key),
                                "invoice_ref": charge.invoice_ref,
                                "customer_ref": charge.customer_ref,
                                "amount_minor": charge.amount_minor,
                                "currency": charge.currency,
                                "description": charge.description,
                                "return_url": "",
                                "status": status.value,
                                "failure_code": code,
                                "failure_reason": reason,
                                "gateway_customer_ref": charge.gateway_customer_ref,
                                "card_ref": charge.card_ref,
                                "off_session": True,
                            },
                        )
                    )
                    earlier = _payment_by_key(session, charge.idempotency_key)
                if _charged_for(earlier) != asked:
                    return _key_reused("charge")
                return Succeeded(_outcome(_view(session, earlier)))
        except SQLAlchemyError as error:
            return _store_failure(error)

    # -- the card forms (and tests) --------------------------------------------------------

    def find(self, gateway_ref: str) -> PaymentView | None:
        with Session(self.engine) as session:
            payment = session.scalars(
                select(DemoPayment).where(DemoPayment.gateway_ref == gateway_ref)
            ).first()
            return None if payment is None else _view(session, payment)

    def find_setup(self, gateway_ref: str) -> SetupView | None:
        with Session(self.engine) as session:
            setup = _setup(session, gateway_ref)
            if setup is None:
                return None
            return SetupView(
                gateway_ref=setup.gateway_ref,
                status=PaymentStatus(setup.status),
                return_url=setup.return_url,
                failure_reason=setup.failure_reason,
                pending_last4=setup.pending_last4,
            )

    def pay_with_card(self, gateway_ref: str, card_number: str) -> PaymentView | None:
        """Pay with a test card; None when the number is not a test card (nothing changes).
        A payment asked to keep its card saves it when the payment succeeds."""
        number = card_digits(card_number)
        if number not in TEST_CARDS:
            return None
        view = self.find(gateway_ref)
        if view is None or view.off_session or view.status is not PaymentStatus.PROCESSING:
            return view
        if view.save_card and number not in DECLINED_ON_THE_PAGE:
            self._hold_card(gateway_ref, number)
        if number in DECLINED_ON_THE_PAGE:
            return self._move(
                gateway_ref,
                PaymentStatus.PROCESSING,
                PaymentStatus.FAILED,
                reason=DECLINED,
                code=CARD_DECLINED,
            )
        if number in AUTHENTICATE_FIRST:
            return self._move(gateway_ref, PaymentStatus.PROCESSING, PaymentStatus.REQUIRES_ACTION)
        return self._move(gateway_ref, PaymentStatus.PROCESSING, PaymentStatus.SUCCEEDED)

    def authenticate(self, gateway_ref: str, approve: bool) -> PaymentView | None:
        """The customer's answer on the extra authentication page."""
        if approve:
            return self._move(gateway_ref, PaymentStatus.REQUIRES_ACTION, PaymentStatus.SUCCEEDED)
        return self._move(
            gateway_ref,
            PaymentStatus.REQUIRES_ACTION,
            PaymentStatus.FAILED,
            reason=NOT_AUTHENTICATED,
            code="authentication_failed",
        )

    def save_with_card(self, gateway_ref: str, card_number: str) -> SetupView | None:
        """Save a test card on the setup form; None when the number is not a test card."""
        number = card_digits(card_number)
        if number not in TEST_CARDS:
            return None
        with Session(self.engine) as session, session.begin():
            setup = _setup(session, gateway_ref, for_update=True)
            if setup is not None and setup.status == PaymentStatus.PROCESSING.value:
                if number == DECLINED_CARD:
                    _end_setup(setup, PaymentStatus.FAILED, DECLINED)
                elif number in AUTHENTICATE_FIRST:
                    setup.status = PaymentStatus.REQUIRES_ACTION.value
                    setup.pending_behaviour = CHARGE_BEHAVIOUR[number]
                    setup.pending_last4 = number[-4:]
                    setup.updated_at = utcnow()
                else:
                    card = self._new_card(session, setup.gateway_customer_ref, number)
                    setup.card_ref = card.card_ref
                    _end_setup(setup, PaymentStatus.SUCCEEDED, None)
        return self.find_setup(gateway_ref)

    def authenticate_setup(self, gateway_ref: str, approve: bool) -> SetupView | None:
        """The customer's answer on the setup's authentication page."""
        with Session(self.engine) as session, session.begin():
            setup = _setup(session, gateway_ref, for_update=True)
            if setup is not None and setup.status == PaymentStatus.REQUIRES_ACTION.value:
                if approve and setup.pending_behaviour and setup.pending_last4:
                    card = self._card_row(
                        setup.gateway_customer_ref, setup.pending_last4, setup.pending_behaviour
                    )
                    session.add(card)
                    session.flush()
                    setup.card_ref = card.card_ref
                    _end_setup(setup, PaymentStatus.SUCCEEDED, None)
                else:
                    _end_setup(setup, PaymentStatus.FAILED, CARD_NOT_AUTHENTICATED)
                setup.pending_behaviour = None
                setup.pending_last4 = None
        return self.find_setup(gateway_ref)

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
                "created": int(self._clock()),
                "payment": {
                    "gateway_ref": view.gateway_ref,
                    "status": view.status.value,
                    "amount_minor": view.amount_minor,
                    "currency": view.currency,
                    "failure_reason": view.failure_reason,
                    "failure_code": view.failure_code,
                    "invoice_ref": view.invoice_ref,
                    "customer_ref": view.customer_ref,
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
        code: str | None = None,
    ) -> PaymentView | None:
        """Move the payment from ``current`` to ``new``; a payment in any other state stays.
        A payment that succeeds keeps the card it held for saving."""
        with Session(self.engine) as session, session.begin():
            moved = session.execute(
                update(DemoPayment)
                .where(DemoPayment.gateway_ref == gateway_ref, DemoPayment.status == current.value)
                .values(
                    status=new.value,
                    failure_reason=reason,
                    failure_code=code,
                    updated_at=utcnow(),
                )
                .returning(DemoPayment.card_ref, DemoPayment.save_card)
            ).first()
            if moved is not None and new is PaymentStatus.SUCCEEDED and moved[1] and moved[0]:
                session.execute(
                    update(DemoCard)
                    .where(DemoCard.card_ref == moved[0], DemoCard.detached_at.is_not(None))
                    .values(detached_at=None)
                )
        return self.find(gateway_ref)

    def _hold_card(self, gateway_ref: str, number: str) -> None:
        """The card a payment will keep if it succeeds: made now, usable only then."""
        with Session(self.engine) as session, session.begin():
            payment = session.scalars(
                select(DemoPayment).where(DemoPayment.gateway_ref == gateway_ref)
            ).first()
            if payment is None or not payment.gateway_customer_ref or payment.card_ref:
                return
            card = self._card_row(
                payment.gateway_customer_ref, number[-4:], CHARGE_BEHAVIOUR[number]
            )
            card.detached_at = utcnow()
            session.add(card)
            session.flush()
            payment.card_ref = card.card_ref

    def _new_card(self, session: Session, gateway_customer_ref: str, number: str) -> DemoCard:
        card = self._card_row(gateway_customer_ref, number[-4:], CHARGE_BEHAVIOUR[number])
        session.add(card)
        session.flush()
        return card

    def _card_row(self, gateway_customer_ref: str, last4: str, behaviour: str) -> DemoCard:
        year = datetime.fromtimestamp(self._clock(), UTC).year + CARD_YEARS
        return DemoCard(
            card_ref="dpm_" + secrets.token_urlsafe(16),
            gateway_customer_ref=gateway_customer_ref,
            brand="visa",  # every test card is a Visa number
            last4=last4,
            exp_month=12,
            exp_year=year,
            behaviour=behaviour,
            created_at=utcnow(),
        )

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


def _check_amount(amount: object, currency: str) -> BusinessRejection | None:
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
    if not CURRENCY.fullmatch(currency or ""):
        return BusinessRejection(
            "The currency must be a three-letter ISO 4217 code", code="demo.invalid_currency"
        )
    return None


def _check_lengths(limits: Mapping[str, tuple[str | None, int]]) -> BusinessRejection | None:
    for name, (value, limit) in limits.items():
        if len(value or "") > limit or (name == "idempotency_key" and not value):
            return BusinessRejection(
                f"The payment's {name} is missing or too long", code="demo.invalid_request"
            )
    return None


def _check_request(request: PaymentRequest) -> BusinessRejection | None:
    refusal = _check_amount(request.amount_minor, request.currency)
    if refusal is not None:
        return refusal
    if not _safe_return_url(request.return_url or ""):
        return BusinessRejection(
            "The return URL must be an http(s) address or a path on the portal",
            code="demo.invalid_request",
        )
    return _check_lengths(
        {
            "idempotency_key": (request.idempotency_key, 255),
            "invoice_ref": (request.invoice_ref, 128),
            "customer_ref": (request.customer_ref, 128),
            "description": (request.description, 500),
            "return_url": (request.return_url, 2000),
            "gateway_customer_ref": (request.gateway_customer_ref, 64),
        }
    )


def _check_charge(charge: SavedCardCharge) -> BusinessRejection | None:
    refusal = _check_amount(charge.amount_minor, charge.currency)
    if refusal is not None:
        return refusal
    return _check_lengths(
        {
            "idempotency_key": (charge.idempotency_key, 255),
            "invoice_ref": (charge.invoice_ref, 128),
            "customer_ref": (charge.customer_ref, 128),
            "description": (charge.description, 500),
            "gateway_customer_ref": (charge.gateway_customer_ref, 64),
            "card_ref": (charge.card_ref, 64),
        }
    )


def _safe_return_url(url: str) -> bool:
    """An address the card form may send the customer back to (and link to): never a
    ``javascript:`` or ``data:`` URL."""
    parts = urlsplit(url)
    if parts.scheme in {"http", "https"}:
        return bool(parts.netloc)
    return not parts.scheme and not parts.netloc and url.startswith("/") and "\\" not in url


def _charge_result(behaviour: str) -> tuple[PaymentStatus, str | None, str | None]:
    if behaviour == REQUIRE_AUTHENTICATION:
        return PaymentStatus.REQUIRES_ACTION, AUTHENTICATION_REQUIRED, AUTHENTICATION_NEEDED
    if behaviour == DECLINE:
        return PaymentStatus.FAILED, CARD_DECLINED, DECLINED
    return PaymentStatus.SUCCEEDED, None, None


def _payment_row(idempotency_key: str) -> dict[str, Any]:
    return {
        "gateway_ref": "dp_" + secrets.token_urlsafe(24),
        "idempotency_key": idempotency_key,
        "created_at": utcnow(),
        "updated_at": utcnow(),
        "save_card": False,
        "off_session": False,
    }


def _asked(request: PaymentRequest) -> tuple[object, ...]:
    return (
        request.invoice_ref,
        request.customer_ref,
        request.amount_minor,
        request.currency,
        request.description,
        request.return_url,
        bool(request.save_card),
        request.gateway_customer_ref,
        False,
    )


def _asked_for(payment: DemoPayment) -> tuple[object, ...]:
    return (
        payment.invoice_ref,
        payment.customer_ref,
        payment.amount_minor,
        payment.currency,
        payment.description,
        payment.return_url,
        bool(payment.save_card),
        payment.gateway_customer_ref,
        bool(payment.off_session),
    )


def _charged(charge: SavedCardCharge) -> tuple[object, ...]:
    return (
        charge.invoice_ref,
        charge.customer_ref,
        charge.amount_minor,
        charge.currency,
        charge.description,
        charge.gateway_customer_ref,
        charge.card_ref,
        True,
    )


def _charged_for(payment: DemoPayment) -> tuple[object, ...]:
    return (
        payment.invoice_ref,
        payment.customer_ref,
        payment.amount_minor,
        payment.currency,
        payment.description,
        payment.gateway_customer_ref,
        payment.card_ref,
        bool(payment.off_session),
    )


def _key_reused(what: str) -> BusinessRejection:
    return BusinessRejection(
        f"This idempotency key was already used for a different {what}",
        code=IDEMPOTENCY_KEY_REUSED,
    )


def _no_customer() -> BusinessRejection:
    return BusinessRejection("The demo gateway has no such customer", code="demo.no_such_customer")


def _payment_by_key(session: Session, idempotency_key: str, missing_ok: bool = False) -> Any:
    found = session.scalars(
        select(DemoPayment).where(DemoPayment.idempotency_key == idempotency_key)
    ).first()
    if found is None and not missing_ok:
        raise LookupError(idempotency_key)
    return found


def _customer(session: Session, gateway_customer_ref: str) -> DemoCustomer | None:
    return session.scalars(
        select(DemoCustomer).where(DemoCustomer.gateway_customer_ref == gateway_customer_ref)
    ).first()


def _setup(session: Session, gateway_ref: str, for_update: bool = False) -> DemoSetup | None:
    query = select(DemoSetup).where(DemoSetup.gateway_ref == gateway_ref)
    if for_update:
        query = query.with_for_update()
    return session.scalars(query).first()


def _end_setup(setup: DemoSetup, status: PaymentStatus, reason: str | None) -> None:
    setup.status = status.value
    setup.failure_reason = reason
    setup.updated_at = utcnow()


def _card(
    session: Session, card_ref: str | None, include_detached: bool = False
) -> DemoCard | None:
    if not card_ref:
        return None
    query = select(DemoCard).where(DemoCard.card_ref == card_ref)
    if not include_detached:
        query = query.where(DemoCard.detached_at.is_(None))
    return session.scalars(query).first()


def _saved(card: DemoCard) -> SavedCard:
    return SavedCard(
        card_ref=card.card_ref,
        brand=card.brand,
        last4=card.last4,
        exp_month=int(card.exp_month),
        exp_year=int(card.exp_year),
        gateway_customer_ref=card.gateway_customer_ref,
    )


def _view(session: Session, payment: DemoPayment) -> PaymentView:
    card = None
    if payment.card_ref and (payment.save_card or payment.off_session):
        found = _card(session, payment.card_ref)
        card = _saved(found) if found is not None else None
    return PaymentView(
        gateway_ref=payment.gateway_ref,
        amount_minor=int(payment.amount_minor),
        currency=payment.currency,
        description=payment.description,
        status=PaymentStatus(payment.status),
        failure_reason=payment.failure_reason,
        return_url=payment.return_url,
        failure_code=payment.failure_code,
        save_card=bool(payment.save_card),
        off_session=bool(payment.off_session),
        invoice_ref=payment.invoice_ref,
        customer_ref=payment.customer_ref,
        created_at=payment.created_at,
        # the card paid with, when the gateway keeps it: a saved card charged off-session, or
        # the card a payment saved once it succeeded
        card=card if payment.off_session or payment.status == "succeeded" else None,
    )


def _outcome(view: PaymentView) -> PaymentOutcome:
    return PaymentOutcome(
        gateway_ref=view.gateway_ref,
        status=view.status,
        amount_minor=view.amount_minor,
        currency=view.currency,
        failure_reason=view.failure_reason,
        failure_code=view.failure_code,
        invoice_ref=view.invoice_ref,
        customer_ref=view.customer_ref,
        created_at=view.created_at,
        card=view.card,
    )


def _store_failure(error: SQLAlchemyError) -> TechnicalFailure:
    log.warning("demo payments: its store failed (%s)", type(error).__name__)
    return TechnicalFailure("The demo gateway could not reach its store", timedelta(seconds=5))


def _insert_ignoring(engine: Engine, model: type[Any], values: dict[str, Any]) -> Any:
    table: Table = model.__table__
    dialect = engine.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table).values(**values).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(table).values(**values).on_conflict_do_nothing()
    raise PluginError(f"demo payments supports SQLite and PostgreSQL, not {dialect}")
