"""The demo provider's own tables (``demo_provider_*``) on its own metadata.

They are not part of the portal's ``Base``: the plugin's Alembic branch
(``demo_provider/migrations``) creates them, and the portal's migration-drift test never sees
them.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Boolean, Date, Integer, MetaData, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from portal.core.db import NAMING_CONVENTION, UTCDateTime, utcnow


class DemoProviderBase(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class DemoSubscription(DemoProviderBase):
    """A subscription as the demo provider holds it."""

    __tablename__ = "demo_provider_subscription"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_tenant_id: Mapped[str] = mapped_column(String(64))
    subscription_ref: Mapped[str] = mapped_column(String(128))
    offer_id: Mapped[str] = mapped_column(String(128))
    quantity: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32))
    # how many changes were applied: the "effect" idempotency must not repeat
    version: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # renewals: the term (ISO 8601, e.g. P1Y) and its last day when bought here (None: a
    # subscription the demo provider only knows by its quantity), whether it renews, and the
    # quantity scheduled for the next term
    term: Mapped[str | None] = mapped_column(String(8))
    term_ends_on: Mapped[date | None] = mapped_column(Date)
    auto_renew: Mapped[bool] = mapped_column(Boolean, default=True)
    renewal_quantity: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        UniqueConstraint(
            "customer_tenant_id", "subscription_ref", name="uq_demo_provider_subscription_ref"
        ),
    )


class DemoRequest(DemoProviderBase):
    """One quantity change by its ``request_id``: its attempts and, once final, its result."""

    __tablename__ = "demo_provider_request"

    request_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    customer_tenant_id: Mapped[str] = mapped_column(String(64))
    subscription_ref: Mapped[str] = mapped_column(String(128))
    target_quantity: Mapped[int] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # None while not final (new, or only technical failures so far); "succeeded" | "rejected"
    outcome: Mapped[str | None] = mapped_column(String(16))
    result_quantity: Mapped[int | None] = mapped_column(Integer)
    result_offer_id: Mapped[str | None] = mapped_column(String(128))
    result_status: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(String(500))
    code: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
