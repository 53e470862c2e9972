"""Acceptances of the Microsoft Customer Agreement and their attestation to the provider."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from portal.db import Base, UTCDateTime, utcnow
from portal.models.scoped import CustomerScoped, PartnerScoped
from portal.models.tenancy import _enum


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
    state: Mapped[AttestationState] = mapped_column(_enum(AttestationState, "attestation_state"))
    provider_answer: Mapped[str | None] = mapped_column(Text)
    provider_reference: Mapped[str | None] = mapped_column(String(200))
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
