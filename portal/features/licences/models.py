"""Customers' subscriptions and the licence change log."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import (
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.core.db import Base, UTCDateTime, enum_column, utcnow
from portal.core.scoping import CustomerScoped, PartnerScoped
from portal.features.catalogue.models import Product
from portal.features.catalogue.rules import BillingFrequency, Term
from portal.features.licences.rules import ChangeKind, ChangeState, HoldReason
from portal.features.tenancy.models import Customer


class SubscriptionStatus(StrEnum):
    PENDING = "pending"  # bought, not yet provisioned
    ACTIVE = "active"
    SUSPENDED = "suspended"
    CANCELLED = "cancelled"
    FAILED = "failed"  # the purchase was rejected
    EXPIRED = "expired"  # its term ended without renewal (auto-renew off)


class Subscription(PartnerScoped, CustomerScoped, Base):
    """A customer's subscription to a product.

    ``quantity`` is what the provider confirmed; changes asked for but not yet provisioned are
    in the change log. ``version`` increases with every change request: a request made from a
    page showing an older version is refused rather than silently overtaking another.
    """

    __tablename__ = "subscription"

    id: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("product.id", ondelete="RESTRICT"))
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscription.id", ondelete="CASCADE"), index=True
    )
    provider_key: Mapped[str] = mapped_column(String(63))
    provider_ref: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[SubscriptionStatus] = mapped_column(
        enum_column(SubscriptionStatus, "subscription_status")
    )
    quantity: Mapped[int] = mapped_column(Integer, default=0)
    term: Mapped[Term] = mapped_column(enum_column(Term, "term"))
    billing_frequency: Mapped[BillingFrequency] = mapped_column(
        enum_column(BillingFrequency, "billing_frequency")
    )
    currency: Mapped[str] = mapped_column(String(3))
    # the current term: the reduction window of the whole quantity opens at its start
    term_started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    term_ends_on: Mapped[date] = mapped_column(Date)  # the last day of the term
    auto_renew: Mapped[bool] = mapped_column(default=True)
    # the quantity the provider confirmed for the next term (None: the same as now)
    renewal_quantity: Mapped[int | None] = mapped_column(Integer)
    # the billing contract whose invoices carry it (None: not invoiced by the portal)
    billing_contract_id: Mapped[int | None] = mapped_column(
        ForeignKey("billing_contract.id", ondelete="RESTRICT"), index=True
    )
    version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    product: Mapped[Product] = relationship(lazy="joined", innerjoin=True)
    customer: Mapped[Customer] = relationship()
    children: Mapped[list[Subscription]] = relationship(order_by="Subscription.id")

    __table_args__ = (
        UniqueConstraint("provider_key", "provider_ref"),
        CheckConstraint("quantity >= 0", name="quantity_non_negative"),
    )


class LicenceChange(PartnerScoped, CustomerScoped, Base):
    """One requested change of a subscription (the License Change Log): never a silent edit.

    Changes of one subscription apply in ``sequence`` order. ``request_id`` is sent to the
    provider on every attempt (Partner Center's ``MS-RequestId``), so a repeat has one effect.
    """

    __tablename__ = "licence_change"

    id: Mapped[int] = mapped_column(primary_key=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("subscription.id", ondelete="CASCADE"))
    sequence: Mapped[int] = mapped_column(Integer)
    request_id: Mapped[str] = mapped_column(String(36), unique=True)
    kind: Mapped[ChangeKind] = mapped_column(enum_column(ChangeKind, "licence_change_kind"))
    state: Mapped[ChangeState] = mapped_column(enum_column(ChangeState, "licence_change_state"))
    hold_reason: Mapped[HoldReason | None] = mapped_column(enum_column(HoldReason, "hold_reason"))
    quantity_from: Mapped[int] = mapped_column(Integer)
    quantity_to: Mapped[int] = mapped_column(Integer)
    # the price effect shown when it was confirmed: + charge, - credit (minor units)
    amount_minor: Mapped[int] = mapped_column(Integer, default=0)
    currency: Mapped[str] = mapped_column(String(3))
    requested_by: Mapped[str] = mapped_column(String(300))
    requested_by_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("app_user.id", ondelete="SET NULL")
    )
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    provider_answer: Mapped[str | None] = mapped_column(Text)
    provider_code: Mapped[str | None] = mapped_column(String(64))
    effective_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # provider applied it
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # the requester (success) or the service team (failure, rejection) was told; a change
    # followed at once by the next one of its subscription is told about with that one
    notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_by: Mapped[str | None] = mapped_column(String(300))
    resolution_note: Mapped[str | None] = mapped_column(Text)

    subscription: Mapped[Subscription] = relationship()

    __table_args__ = (
        UniqueConstraint("subscription_id", "sequence"),
        Index("ix_licence_change_state_requested_at", "state", "requested_at"),
        CheckConstraint("quantity_to >= 0 AND quantity_from >= 0", name="quantities_non_negative"),
    )


class AttestationState(StrEnum):
    PENDING = "pending"  # recorded here, being attested to the provider
    CONFIRMED = "confirmed"  # the provider recorded it: purchases may go ahead
    REJECTED = "rejected"  # the provider refused it (reason kept); accept again


class AgreementAcceptance(PartnerScoped, CustomerScoped, Base):
    """A customer user's acceptance: who signed, when, from where, which agreement."""

    __tablename__ = "agreement_acceptance"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id", ondelete="SET NULL"))
    provider_key: Mapped[str] = mapped_column(String(63))
    template_id: Mapped[str] = mapped_column(String(100))
    agreement_link: Mapped[str] = mapped_column(String(500))
    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str] = mapped_column(String(254))
    phone: Mapped[str | None] = mapped_column(String(40))
    accepted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ip: Mapped[str | None] = mapped_column(String(45))
    request_id: Mapped[str] = mapped_column(String(36), unique=True)
    state: Mapped[AttestationState] = mapped_column(
        enum_column(AttestationState, "attestation_state")
    )
    provider_answer: Mapped[str | None] = mapped_column(Text)
    provider_reference: Mapped[str | None] = mapped_column(String(200))
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


# -- renewals (issue 14, point 4) -------------------------------------------------------------


class InstructionKind(StrEnum):
    AUTO_RENEW = "auto_renew"  # turn automatic renewal on or off
    RENEWAL_QUANTITY = "renewal_quantity"  # the quantity of the next term


class InstructionState(StrEnum):
    QUEUED = "queued"  # waiting for a worker
    RETRYING = "retrying"  # a technical failure; will be tried again
    DONE = "done"  # the provider confirmed it
    FAILED = "failed"  # retries exhausted
    REJECTED = "rejected"  # the provider refused it; its reason is shown


INSTRUCTION_IN_FLIGHT = (InstructionState.QUEUED, InstructionState.RETRYING)


class RenewalInstruction(PartnerScoped, CustomerScoped, Base):
    """A customer's instruction for the next term: auto-renew on/off, or its quantity.

    Sent to the provider once (one outbox item, ``request_id`` on every attempt); the
    subscription's ``auto_renew`` / ``renewal_quantity`` follow what the provider confirmed.
    """

    __tablename__ = "renewal_instruction"

    id: Mapped[int] = mapped_column(primary_key=True)
    subscription_id: Mapped[int] = mapped_column(
        ForeignKey("subscription.id", ondelete="CASCADE"), index=True
    )
    request_id: Mapped[str] = mapped_column(String(36), unique=True)
    kind: Mapped[InstructionKind] = mapped_column(enum_column(InstructionKind, "instruction_kind"))
    state: Mapped[InstructionState] = mapped_column(
        enum_column(InstructionState, "instruction_state")
    )
    auto_renew: Mapped[bool | None] = mapped_column()
    quantity: Mapped[int | None] = mapped_column(Integer)
    provider_answer: Mapped[str | None] = mapped_column(Text)
    requested_by: Mapped[str] = mapped_column(String(300))
    requested_by_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("app_user.id", ondelete="SET NULL")
    )
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RenewalReminder(PartnerScoped, CustomerScoped, Base):
    """A renewal reminder mailed for one term of a subscription, ``days`` before it renews:
    the unique key makes each reminder go once, however often (or at once) the job runs."""

    __tablename__ = "renewal_reminder"

    id: Mapped[int] = mapped_column(primary_key=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("subscription.id", ondelete="CASCADE"))
    term_ends_on: Mapped[date] = mapped_column(Date)
    days: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (UniqueConstraint("subscription_id", "term_ends_on", "days"),)
