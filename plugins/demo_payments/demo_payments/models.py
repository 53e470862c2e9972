"""The demo gateway's own table (``demo_payments_payment``) on its own metadata.

It is not part of the portal's ``Base``: the plugin's Alembic branch
(``demo_payments/migrations``) creates it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from portal.db import NAMING_CONVENTION, UTCDateTime, utcnow


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
