"""The partner's catalogue: products and their prices per currency."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.core.db import Base, UTCDateTime, enum_column, utcnow
from portal.core.scoping import PartnerScoped
from portal.features.catalogue.rules import (
    DEFAULT_WINDOW_HOURS,
    BillingFrequency,
    ProductClass,
    ReductionBehaviour,
    SubscriptionType,
    Term,
)


class Product(PartnerScoped, Base):
    """Something a customer can subscribe to, as one term and billing frequency.

    A bundle is a product whose components (products with ``bundle_id`` set to it) are bought,
    changed and shown with it.
    """

    __tablename__ = "product"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    product_class: Mapped[ProductClass] = mapped_column(enum_column(ProductClass, "product_class"))
    subscription_type: Mapped[SubscriptionType] = mapped_column(
        enum_column(SubscriptionType, "subscription_type")
    )
    # None: the customer's (or partner's, or deployment's) provider
    provider_key: Mapped[str | None] = mapped_column(String(63))
    provider_offer_id: Mapped[str] = mapped_column(String(200))
    term: Mapped[Term] = mapped_column(enum_column(Term, "term"))
    billing_frequency: Mapped[BillingFrequency] = mapped_column(
        enum_column(BillingFrequency, "billing_frequency")
    )
    min_quantity: Mapped[int] = mapped_column(Integer, default=1)
    max_quantity: Mapped[int] = mapped_column(Integer, default=300)
    reduction: Mapped[ReductionBehaviour] = mapped_column(
        enum_column(ReductionBehaviour, "reduction_behaviour")
    )
    window_hours: Mapped[int] = mapped_column(Integer, default=DEFAULT_WINDOW_HOURS)
    # a Microsoft product: buying or changing it needs the Microsoft Customer Agreement
    requires_mca: Mapped[bool] = mapped_column(Boolean, default=True)
    bundle_id: Mapped[int | None] = mapped_column(
        ForeignKey("product.id", ondelete="CASCADE"), index=True
    )
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    prices: Mapped[list[ProductPrice]] = relationship(
        back_populates="product", cascade="all, delete-orphan", order_by="ProductPrice.currency"
    )
    components: Mapped[list[Product]] = relationship(order_by="Product.id")

    __table_args__ = (
        CheckConstraint("min_quantity >= 1", name="min_quantity_positive"),
        CheckConstraint("max_quantity >= min_quantity", name="max_not_below_min"),
        CheckConstraint("window_hours >= 0", name="window_hours_non_negative"),
    )

    def price_in(self, currency: str) -> ProductPrice | None:
        return next((p for p in self.prices if p.currency == currency), None)


class ProductPrice(PartnerScoped, Base):
    """The price and cost of one seat for one billing period, in one currency."""

    __tablename__ = "product_price"

    id: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("product.id", ondelete="CASCADE"))
    currency: Mapped[str] = mapped_column(String(3))
    price_minor: Mapped[int] = mapped_column(Integer)
    cost_minor: Mapped[int] = mapped_column(Integer)

    product: Mapped[Product] = relationship(back_populates="prices")

    __table_args__ = (
        UniqueConstraint("product_id", "currency"),
        CheckConstraint("price_minor >= 0", name="price_non_negative"),
        CheckConstraint("cost_minor >= 0", name="cost_non_negative"),
    )
