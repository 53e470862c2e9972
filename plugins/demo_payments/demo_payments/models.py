"""The demo gateway's own tables (``demo_payments_*``) on their own metadata: payments (and
off-session charges), the gateway's customers, their saved cards, and card-saving sessions.

They are not part of the portal's ``Base``: the plugin's Alembic branch
(``demo_payments/migrations``) creates them.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Integer, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from portal.core.db import NAMING_CONVENTION, UTCDateTime, utcnow


class DemoPaymentsBase(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class DemoPayment(DemoPaymentsBase):
    """One payment: what was asked for, and how it stands."""

    __tablename__ = "demo_payments_payment"

    id: Mapped[int] = mapped_column(primary_key=True)
    gateway_ref: Mapped[str] = mapped_column(String(64), unique=True)
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    invoice_ref: Mapped[str] = mapped_column(String(128))
    customer_ref: Mapped[str] = mapped_column(String(128))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    description: Mapped[str] = mapped_column(String(500))
    return_url: Mapped[str] = mapped_column(String(2000))
    status: Mapped[str] = mapped_column(String(32))
    failure_reason: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # saved cards (revision demo_payments_0002)
    failure_code: Mapped[str | None] = mapped_column(String(64))
    save_card: Mapped[bool] = mapped_column(Boolean, default=False)
    gateway_customer_ref: Mapped[str | None] = mapped_column(String(64))
    # the card paid with: kept when ``save_card``, charged off-session for a saved-card charge
    card_ref: Mapped[str | None] = mapped_column(String(64))
    off_session: Mapped[bool] = mapped_column(Boolean, default=False)


class DemoCustomer(DemoPaymentsBase):
    """The gateway's record of a portal customer (``dcus_…``)."""

    __tablename__ = "demo_payments_customer"

    id: Mapped[int] = mapped_column(primary_key=True)
    gateway_customer_ref: Mapped[str] = mapped_column(String(64), unique=True)
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    customer_ref: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(254))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DemoCard(DemoPaymentsBase):
    """A saved test card (``dpm_…``); ``behaviour`` is what charging it off-session does."""

    __tablename__ = "demo_payments_card"

    id: Mapped[int] = mapped_column(primary_key=True)
    card_ref: Mapped[str] = mapped_column(String(64), unique=True)
    gateway_customer_ref: Mapped[str] = mapped_column(String(64), index=True)
    brand: Mapped[str] = mapped_column(String(20))
    last4: Mapped[str] = mapped_column(String(4))
    exp_month: Mapped[int] = mapped_column(Integer)
    exp_year: Mapped[int] = mapped_column(Integer)
    behaviour: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    detached_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DemoSetup(DemoPaymentsBase):
    """A card-saving session: the setup form the customer fills in (``dseti_…``)."""

    __tablename__ = "demo_payments_setup"

    id: Mapped[int] = mapped_column(primary_key=True)
    gateway_ref: Mapped[str] = mapped_column(String(64), unique=True)
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    customer_ref: Mapped[str] = mapped_column(String(128))
    gateway_customer_ref: Mapped[str] = mapped_column(String(64))
    return_url: Mapped[str] = mapped_column(String(2000))
    status: Mapped[str] = mapped_column(String(32))
    card_ref: Mapped[str | None] = mapped_column(String(64))
    # the card waiting for the extra authentication step (its number is never stored)
    pending_behaviour: Mapped[str | None] = mapped_column(String(32))
    pending_last4: Mapped[str | None] = mapped_column(String(4))
    failure_reason: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
