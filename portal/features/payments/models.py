"""Customer-facing payments (issue 6): payment attempts, the gateway's customer, saved cards
(payment profiles), card-saving sessions and the staff's single-use card links.

Decisions, and why:

- **One gateway session per attempt.** A payment attempt is stored *before* the gateway is
  called, with the idempotency key the call will carry, so a retry (a double click, a timeout, a
  worker that died) sends the same key and the gateway opens one session, charges once
  (reliability notes §1.1, A5/A6). ``UNIQUE (invoice_id, number)`` numbers an invoice's attempts,
  and a partial unique index allows at most one *open* on-session attempt per invoice: ten
  concurrent "Pay" clicks all land on the same row. A finished attempt (declined, expired) is
  never reused; the next click is a new attempt with a new key.
- **Autopay is attempt number 0** of its invoice, so ``UNIQUE (invoice_id, number)`` is also
  "at most one off-session charge per invoice", whatever the outbox does.
- **The ledger stays the truth of what is paid.** An attempt's ``state`` is only what the portal
  last learnt of it; money is recorded in :class:`~portal.features.billing.models.InvoicePayment`
  once the gateway confirms (``portal.features.payments.services.events``).
- **Cards are the gateway's.** A :class:`PaymentProfile` keeps what may be shown (brand, last 4,
  expiry) and the gateway's card reference, never a number. The default card is marked by
  ``default_for = customer_id`` under a unique constraint (NULL on the others): one default per
  customer on every engine, no partial index needed.
- **Card links** store only the SHA-256 of their token, expire, and are used once: the row is
  claimed by a conditional UPDATE when the card is saved.

Webhook events and disputes:

Decisions, and why:

- **Every event once**: ``UNIQUE (gateway_key, event_id)`` on :class:`PaymentWebhookEvent`. The
  handler inserts the event with ``ON CONFLICT DO NOTHING`` and applies its effect (a ledger
  row, a dispute) in the *same* transaction, so a delivery either leaves both or neither, and
  a duplicate delivery, concurrent or later, finds the row and does nothing (reliability notes
  §1.2, A1).
- **The money once**: the effect itself is keyed by the gateway's ids, each under its own
  unique constraint: a payment by its PaymentIntent (``invoice_payment``'s ``(gateway_key,
  gateway_reference)``), a refund by its refund id, a dispute by its dispute id. Three events
  announcing the same payment (``payment_intent.succeeded``, ``checkout.session.completed``,
  the return page, the reconciliation) record it once.
- **Nothing moves backwards**: the ledger only grows and an invoice's status is derived from it
  (``portal.features.billing.services.queries``), so the order events arrive in cannot matter; a
  ``payment_failed`` that arrives after the ``succeeded`` has nothing to undo.
- Events are **not tenant-scoped**: they arrive before anyone knows whose they are; the
  invoice they were matched to (when any) says it. Only services and staff read them.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from portal.core.db import Base, UTCDateTime, enum_column, utcnow
from portal.core.scoping import CustomerScoped, PartnerScoped

AUTOPAY_NUMBER = 0  # an invoice's off-session attempt; on-session ones are 1, 2, …


class AttemptKind(StrEnum):
    ON_SESSION = "on_session"  # a person pressed "Pay" and pays on the gateway's page
    AUTOPAY = "autopay"  # the default card charged off-session when the invoice was issued


class AttemptState(StrEnum):
    """What the portal last learnt of an attempt (never what is paid: that is the ledger)."""

    OPEN = "open"  # the gateway's page is (or may be) in use; not known to be finished
    SUCCEEDED = "succeeded"  # the gateway confirmed the money (the ledger has it)
    FAILED = "failed"  # declined, not authenticated, canceled: a new click is a new attempt
    SUPERSEDED = "superseded"  # replaced by an attempt for another amount
    EXPIRED = "expired"  # too old to reuse (gateway sessions and keys last about a day)


class CardSetupState(StrEnum):
    OPEN = "open"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class PaymentAttempt(PartnerScoped, CustomerScoped, Base):
    """One try at paying (part of) an invoice through the gateway."""

    __tablename__ = "payment_attempt"

    id: Mapped[int] = mapped_column(primary_key=True)
    invoice_id: Mapped[int] = mapped_column(
        ForeignKey("invoice.id", ondelete="RESTRICT"), index=True
    )
    number: Mapped[int] = mapped_column(Integer)
    kind: Mapped[AttemptKind] = mapped_column(enum_column(AttemptKind, "payment_attempt_kind"))
    state: Mapped[AttemptState] = mapped_column(enum_column(AttemptState, "payment_attempt_state"))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    gateway_key: Mapped[str] = mapped_column(String(63))
    # sent with every gateway call of this attempt; stored before the first one
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    gateway_ref: Mapped[str | None] = mapped_column(String(255), index=True)
    redirect_url: Mapped[str | None] = mapped_column(String(2000))
    payment_ref: Mapped[str | None] = mapped_column(String(255))
    card_ref: Mapped[str | None] = mapped_column(String(255))  # autopay: the card charged
    # keep the card used (the payer ticked the box): part of what the gateway was asked
    save_card: Mapped[bool] = mapped_column(Boolean, default=False)
    failure_code: Mapped[str | None] = mapped_column(String(100))
    failure_reason: Mapped[str | None] = mapped_column(String(500))
    created_by: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("invoice_id", "number"),
        CheckConstraint("amount_minor > 0", name="amount_positive"),
        CheckConstraint("number >= 0", name="number_non_negative"),
        CheckConstraint("(kind = 'autopay') = (number = 0)", name="autopay_is_number_zero"),
        # at most one open on-session attempt per invoice: concurrent clicks share it (A5)
        Index(
            "uq_payment_attempt_open_invoice",
            "invoice_id",
            unique=True,
            postgresql_where=text("state = 'open' AND number > 0"),
            sqlite_where=text("state = 'open' AND number > 0"),
        ),
        # the dashboard's failed automatic payments
        Index("ix_payment_attempt_customer_id_kind_state", "customer_id", "kind", "state"),
    )


class PaymentCustomer(PartnerScoped, CustomerScoped, Base):
    """The gateway's own record of a customer (Stripe: ``cus_…``), made once per gateway."""

    __tablename__ = "payment_customer"

    id: Mapped[int] = mapped_column(primary_key=True)
    gateway_key: Mapped[str] = mapped_column(String(63))
    gateway_customer_ref: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("customer_id", "gateway_key"),
        UniqueConstraint("gateway_key", "gateway_customer_ref"),
    )


class PaymentProfile(PartnerScoped, CustomerScoped, Base):
    """A saved card: what may be shown of it and the gateway's reference to charge it."""

    __tablename__ = "payment_profile"

    id: Mapped[int] = mapped_column(primary_key=True)
    gateway_key: Mapped[str] = mapped_column(String(63))
    card_ref: Mapped[str] = mapped_column(String(255))
    gateway_customer_ref: Mapped[str] = mapped_column(String(255))
    brand: Mapped[str] = mapped_column(String(40))
    last4: Mapped[str] = mapped_column(String(4))
    exp_month: Mapped[int] = mapped_column(Integer)
    exp_year: Mapped[int] = mapped_column(Integer)
    # the customer's id on its default card, NULL on the others (unique: one default each)
    default_for: Mapped[int | None] = mapped_column(Integer, unique=True)
    created_by: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("gateway_key", "card_ref"),
        CheckConstraint("exp_month BETWEEN 1 AND 12", name="exp_month_range"),
        CheckConstraint("default_for IS NULL OR default_for = customer_id", name="default_own"),
    )

    @property
    def is_default(self) -> bool:
        return self.default_for is not None


class CardLink(PartnerScoped, CustomerScoped, Base):
    """A link staff send so that a customer can add a card without signing in: single use,
    expiring, only the token's SHA-256 stored."""

    __tablename__ = "card_link"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(String(254))
    created_by: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class CardSetup(PartnerScoped, CustomerScoped, Base):
    """One card-saving session on the gateway's page (from the portal or a card link)."""

    __tablename__ = "card_setup"

    id: Mapped[int] = mapped_column(primary_key=True)
    gateway_key: Mapped[str] = mapped_column(String(63))
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    gateway_ref: Mapped[str | None] = mapped_column(String(255), index=True)
    redirect_url: Mapped[str | None] = mapped_column(String(2000))
    state: Mapped[CardSetupState] = mapped_column(enum_column(CardSetupState, "card_setup_state"))
    card_link_id: Mapped[int | None] = mapped_column(
        ForeignKey("card_link.id", ondelete="SET NULL"), index=True
    )
    failure_reason: Mapped[str | None] = mapped_column(String(500))
    created_by: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WebhookResult(StrEnum):
    """What a received event did."""

    RECORDED = "recorded"  # it changed the ledger or recorded a dispute
    NO_EFFECT = "no_effect"  # known already (another event or path got there first), or a
    # state the ledger does not record (pending, failed)
    UNMATCHED = "unmatched"  # money for no invoice the portal can take it for: staff look


class PaymentWebhookEvent(Base):
    """One event a payment gateway sent, recorded once by its id."""

    __tablename__ = "payment_webhook_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    gateway_key: Mapped[str] = mapped_column(String(63))
    event_id: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(40))
    occurred_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    payment_ref: Mapped[str | None] = mapped_column(String(255))
    invoice_id: Mapped[int | None] = mapped_column(
        ForeignKey("invoice.id", ondelete="SET NULL"), index=True
    )
    result: Mapped[WebhookResult] = mapped_column(enum_column(WebhookResult, "webhook_result"))
    note: Mapped[str | None] = mapped_column(String(500))

    __table_args__ = (
        UniqueConstraint("gateway_key", "event_id"),
        # what staff look at: the events that found no invoice, newest first
        Index("ix_payment_webhook_event_result_received_at", "result", "received_at"),
    )


class PaymentDispute(PartnerScoped, CustomerScoped, Base):
    """A chargeback the card holder's bank opened against a payment of an invoice; shown on the
    invoice. Recorded once per gateway dispute id; the ledger is unchanged until the money
    actually moves (a lost dispute is then a refund)."""

    __tablename__ = "payment_dispute"

    id: Mapped[int] = mapped_column(primary_key=True)
    invoice_id: Mapped[int] = mapped_column(
        ForeignKey("invoice.id", ondelete="RESTRICT"), index=True
    )
    gateway_key: Mapped[str] = mapped_column(String(63))
    dispute_ref: Mapped[str] = mapped_column(String(255))
    payment_ref: Mapped[str] = mapped_column(String(255))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    reason: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(40))
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("gateway_key", "dispute_ref"),)
