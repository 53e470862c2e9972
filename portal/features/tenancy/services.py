"""The partner's day, the partner's address, and who an event is about: what several
capabilities need of a tenant."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from zoneinfo import ZoneInfo

from flask import (
    current_app,
)
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.core.db import utcnow
from portal.features.tenancy.branding.brand import Brand
from portal.features.tenancy.models import Customer, Partner, PartnerHost
from portal.integrations.events import CustomerRef, PartnerRef


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


def parties(
    session: Session, partner_id: int, customer_ids: Iterable[int]
) -> tuple[PartnerRef, dict[int, CustomerRef]]:
    """The partner and the customers an event for plugins names, read once for a batch."""
    partner = session.execute(
        select(Partner.id, Partner.slug, Partner.name).where(Partner.id == partner_id)
    ).one()
    customers = session.execute(
        select(Customer.id, Customer.name, Customer.ms_tenant_id)
        .where(Customer.id.in_(sorted(set(customer_ids))), Customer.partner_id == partner_id)
        .execution_options(unscoped=True)
    ).all()
    refs = {
        row.id: CustomerRef(id=row.id, name=row.name, tenant_id=row.ms_tenant_id)
        for row in customers
    }
    return PartnerRef(id=partner.id, slug=partner.slug, name=partner.name), refs
