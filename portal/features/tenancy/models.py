"""Partners (brands), their customer accounts, the people in them, and partner staff."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.core.db import Base, UTCDateTime, utcnow
from portal.core.scoping import PartnerScoped, narrow_by_customer


class Partner(Base):
    """A CSP partner's brand: everything a customer sees that says whose portal this is."""

    __tablename__ = "partner"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(63), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    logo_filename: Mapped[str | None] = mapped_column(String(200))
    primary_colour: Mapped[str] = mapped_column(String(7), default="#0b5cad")
    secondary_colour: Mapped[str] = mapped_column(String(7), default="#1b1f24")
    support_email: Mapped[str] = mapped_column(String(254))
    support_phone: Mapped[str | None] = mapped_column(String(40))
    terms_url: Mapped[str | None] = mapped_column(String(500))
    privacy_url: Mapped[str | None] = mapped_column(String(500))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    default_currency: Mapped[str] = mapped_column(String(3), default="USD", server_default="USD")
    # what the partner's invoices (page and PDF) print about the seller
    invoice_legal_name: Mapped[str | None] = mapped_column(String(200))
    invoice_address: Mapped[str | None] = mapped_column(Text)  # several lines
    invoice_tax_id: Mapped[str | None] = mapped_column(String(64))
    invoice_footer: Mapped[str | None] = mapped_column(Text)
    # adapters serving this partner (None: the deployment's PORTAL_* default)
    provider_key: Mapped[str | None] = mapped_column(String(63))
    payment_gateway_key: Mapped[str | None] = mapped_column(String(63))
    accounting_system_key: Mapped[str | None] = mapped_column(String(63))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    hosts: Mapped[list[PartnerHost]] = relationship(
        back_populates="partner", cascade="all, delete-orphan"
    )

    __table_args__ = (
        CheckConstraint("length(primary_colour) = 7", name="primary_colour_hex"),
        CheckConstraint("length(secondary_colour) = 7", name="secondary_colour_hex"),
    )


class PartnerHost(Base):
    """A host name the partner's portal answers on (portal.contoso-it.com …)."""

    __tablename__ = "partner_host"

    id: Mapped[int] = mapped_column(primary_key=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partner.id", ondelete="CASCADE"))
    host: Mapped[str] = mapped_column(String(253), unique=True)

    partner: Mapped[Partner] = relationship(back_populates="hosts")


class Customer(PartnerScoped, Base):
    """An end customer's account with the partner."""

    __tablename__ = "customer"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    ms_tenant_id: Mapped[str | None] = mapped_column(String(36), unique=True)
    # the customer's primary domain at Microsoft (contoso.onmicrosoft.com), when known
    domain: Mapped[str | None] = mapped_column(String(253))
    default_currency: Mapped[str] = mapped_column(String(3), default="USD")
    credit_hold: Mapped[bool] = mapped_column(Boolean, default=False)
    # the hold was put by the rules below, not by staff: paying the overdue balance lifts it
    credit_hold_automatic: Mapped[bool] = mapped_column(Boolean, default=False)
    credit_limit_minor: Mapped[int | None] = mapped_column(Integer)
    # days an invoice may be overdue before the automatic hold (None: the partner's setting)
    hold_grace_days: Mapped[int | None] = mapped_column(Integer)
    payment_terms_days: Mapped[int] = mapped_column(Integer, default=30)
    # a customer bought through another provider than the partner's default (a distributor)
    provider_key: Mapped[str | None] = mapped_column(String(63))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        CheckConstraint("payment_terms_days >= 0", name="payment_terms_non_negative"),
        CheckConstraint(
            "credit_limit_minor IS NULL OR credit_limit_minor >= 0",
            name="credit_limit_non_negative",
        ),
    )


# a customer's scope sees that customer only (its people's and rows' scopes are their own)
narrow_by_customer(Customer, lambda customer_id: lambda cls: cls.id == customer_id)
