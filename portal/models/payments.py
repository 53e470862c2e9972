"""Card payments (issue 6): the webhook events received from payment gateways, and disputes.

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
  (``portal.services.billing_queries``), so the order events arrive in cannot matter; a
  ``payment_failed`` that arrives after the ``succeeded`` has nothing to undo.
- Events are **not tenant-scoped**: they arrive before anyone knows whose they are; the
  invoice they were matched to (when any) says it. Only services and staff read them.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from portal.db import Base, UTCDateTime, utcnow
from portal.models.scoped import CustomerScoped, PartnerScoped
from portal.models.tenancy import _enum


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
    result: Mapped[WebhookResult] = mapped_column(_enum(WebhookResult, "webhook_result"))
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
