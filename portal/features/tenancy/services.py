"""The partner's day and the partner's address: what several capabilities need of a tenant."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

from flask import (
    current_app,
)
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.core.db import utcnow
from portal.features.tenancy.branding.brand import Brand
from portal.features.tenancy.models import Partner, PartnerHost


def portal_base_url(session: Session, partner: Partner) -> str:
    """``https://<the partner's first host name>`` (http with insecure development cookies)."""
    host = session.scalar(
        select(PartnerHost.host)
        .where(PartnerHost.partner_id == partner.id)
        .order_by(PartnerHost.id)
        .limit(1)
        .execution_options(unscoped=True)
    )
    scheme = "http" if current_app.config.get("PORTAL_INSECURE_COOKIES") else "https"
    return f"{scheme}://{host or 'localhost'}"


def local_today(partner: Partner, now: datetime) -> date:
    """Proration counts days in the partner's time zone."""
    return now.astimezone(ZoneInfo(partner.timezone or "UTC")).date()


def partner_today(brand: Brand) -> date:
    """Today in the partner's time zone: the day that decides what is overdue."""
    return utcnow().astimezone(ZoneInfo(brand.timezone or "UTC")).date()
