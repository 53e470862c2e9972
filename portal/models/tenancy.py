"""Partners (brands), their customer accounts, the people in them, and partner staff."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Enum,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.db import Base, UTCDateTime, utcnow
from portal.domain.roles import CustomerRole, StaffRole
from portal.models.scoped import CustomerScoped, PartnerScoped


def _enum(enum_cls: type, name: str) -> Enum:
    return Enum(
        enum_cls,
        name=name,
        values_callable=lambda members: [m.value for m in members],
        native_enum=False,
        length=32,
        validate_strings=True,
    )


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
    default_currency: Mapped[str] = mapped_column(String(3), default="USD")
    credit_hold: Mapped[bool] = mapped_column(Boolean, default=False)
    credit_limit_minor: Mapped[int | None] = mapped_column(Integer)
    payment_terms_days: Mapped[int] = mapped_column(Integer, default=30)
    # a customer bought through another provider than the partner's default (a distributor)
    provider_key: Mapped[str | None] = mapped_column(String(63))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    memberships: Mapped[list[Membership]] = relationship(
        back_populates="customer", cascade="all, delete-orphan"
    )

    __table_args__ = (
        CheckConstraint("payment_terms_days >= 0", name="payment_terms_non_negative"),
        CheckConstraint(
            "credit_limit_minor IS NULL OR credit_limit_minor >= 0",
            name="credit_limit_non_negative",
        ),
    )


class User(PartnerScoped, Base):
    """A person who signs in to a partner's customer portal; may belong to several accounts."""

    __tablename__ = "app_user"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254))
    name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str | None] = mapped_column(String(200))
    locale: Mapped[str | None] = mapped_column(String(8))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    memberships: Mapped[list[Membership]] = relationship(back_populates="user")

    __table_args__ = (UniqueConstraint("partner_id", "email"),)


class Membership(CustomerScoped, Base):
    """A user's place in one customer account, with one role."""

    __tablename__ = "membership"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id", ondelete="CASCADE"), index=True)
    role: Mapped[CustomerRole] = mapped_column(_enum(CustomerRole, "customer_role"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    user: Mapped[User] = relationship(back_populates="memberships")
    customer: Mapped[Customer] = relationship(back_populates="memberships")

    __table_args__ = (UniqueConstraint("customer_id", "user_id"),)


class StaffUser(PartnerScoped, Base):
    """A member of the partner's own team; signs in to the staff area only."""

    __tablename__ = "staff_user"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254))
    name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str | None] = mapped_column(String(200))
    role: Mapped[StaffRole] = mapped_column(_enum(StaffRole, "staff_role"))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (UniqueConstraint("partner_id", "email"),)


class Invitation(CustomerScoped, Base):
    """A single-use, expiring offer to join a customer account with a role."""

    __tablename__ = "invitation"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254))
    role: Mapped[CustomerRole] = mapped_column(_enum(CustomerRole, "customer_role"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    invited_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    customer: Mapped[Customer] = relationship()


class AuditEvent(PartnerScoped, Base):
    """Who did what, when, from where: security events and every change to roles and money."""

    __tablename__ = "audit_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int | None] = mapped_column(
        ForeignKey("customer.id", ondelete="SET NULL"), index=True
    )
    actor: Mapped[str] = mapped_column(String(300))
    action: Mapped[str] = mapped_column(String(80), index=True)
    detail: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)
    ip: Mapped[str | None] = mapped_column(String(45))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
