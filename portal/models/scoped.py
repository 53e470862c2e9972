"""Ownership mixins read by the tenant-scoped data-access layer (:mod:`portal.scoping`)."""

from __future__ import annotations

from sqlalchemy import ForeignKey
from sqlalchemy.orm import Mapped, mapped_column


class PartnerScoped:
    """A row that belongs to one partner brand; invisible from any other partner's requests."""

    partner_id: Mapped[int] = mapped_column(
        ForeignKey("partner.id", ondelete="CASCADE"), index=True
    )


class CustomerScoped:
    """A row that belongs to one customer account; invisible from any other customer's requests."""

    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customer.id", ondelete="CASCADE"), index=True
    )
