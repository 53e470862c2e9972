"""Resolving the partner for a request, and the brand snapshot templates read."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import cast

from flask import Flask, abort, current_app, g, request
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal.features.tenancy.models import Partner, PartnerHost
from portal.features.tenancy.rules import readable_button

CACHE_SECONDS = 30.0


@dataclass(frozen=True)
class Brand:
    """What a page needs to know of its partner: a plain snapshot, safe to cache."""

    id: int
    slug: str
    name: str
    logo_filename: str | None
    primary_colour: str
    secondary_colour: str
    support_email: str
    support_phone: str | None
    terms_url: str | None
    privacy_url: str | None
    timezone: str
    default_currency: str = "USD"
    invoice_legal_name: str | None = None
    invoice_address: str | None = None
    invoice_tax_id: str | None = None
    invoice_footer: str | None = None

    @classmethod
    def of(cls, partner: Partner) -> Brand:
        return cls(
            id=partner.id,
            slug=partner.slug,
            name=partner.name,
            logo_filename=partner.logo_filename,
            primary_colour=partner.primary_colour,
            secondary_colour=partner.secondary_colour,
            support_email=partner.support_email,
            support_phone=partner.support_phone,
            terms_url=partner.terms_url,
            privacy_url=partner.privacy_url,
            timezone=partner.timezone,
            default_currency=partner.default_currency,
            invoice_legal_name=partner.invoice_legal_name,
            invoice_address=partner.invoice_address,
            invoice_tax_id=partner.invoice_tax_id,
            invoice_footer=partner.invoice_footer,
        )

    @property
    def css_version(self) -> str:
        key = f"{self.primary_colour}{self.secondary_colour}".encode()
        return hashlib.sha256(key).hexdigest()[:10]

    def css(self) -> str:
        """CSS custom properties from the brand's colours (served as a file: no inline styles)."""
        button = readable_button(self.primary_colour)
        r, gr, b = (int(button.background[i : i + 2], 16) for i in (1, 3, 5))
        return (
            ":root {\n"
            f"  --portal-primary: {button.background};\n"
            f"  --portal-on-primary: {button.text};\n"
            f"  --portal-secondary: {self.secondary_colour};\n"
            f"  --bs-primary: {button.background};\n"
            f"  --bs-primary-rgb: {r}, {gr}, {b};\n"
            f"  --bs-link-color: {button.background};\n"
            f"  --bs-link-color-rgb: {r}, {gr}, {b};\n"
            f"  --bs-link-hover-color: {button.background};\n"
            "}\n"
        )


class _BrandCache:
    """Host → brand, for a few seconds, so a page costs no partner query."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, Brand]] = {}

    def get(self, host: str) -> Brand | None:
        entry = self._entries.get(host)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, host: str, brand: Brand) -> None:
        self._entries[host] = (time.monotonic() + CACHE_SECONDS, brand)

    def clear(self) -> None:
        self._entries.clear()


def init_app(app: Flask) -> None:
    app.extensions["portal_brand_cache"] = _BrandCache()


def brand_cache(app: Flask | None = None) -> _BrandCache:
    return cast(_BrandCache, (app or current_app).extensions["portal_brand_cache"])


def request_host() -> str:
    return request.host.rsplit(":", 1)[0].lower().strip("[]")


def resolve_brand(db_session: Session, host: str) -> Brand | None:
    """The partner that answers on ``host``; with a single partner, that one answers everywhere."""
    cache = brand_cache()
    cached = cache.get(host)
    if cached is not None:
        return cached
    partner = db_session.scalars(
        select(Partner).join(PartnerHost).where(PartnerHost.host == host)
    ).first()
    if partner is None:
        partner = _fallback_partner(db_session, host)
    if partner is None:
        return None
    brand = Brand.of(partner)
    cache.put(host, brand)
    return brand


def _fallback_partner(db_session: Session, host: str) -> Partner | None:
    from portal.integrations.registry import integrations

    slug = integrations().resolve_partner_slug(host) or current_app.config["PORTAL_DEFAULT_PARTNER"]
    if slug:
        return db_session.scalars(select(Partner).where(Partner.slug == slug)).first()
    if db_session.scalar(select(func.count()).select_from(Partner)) == 1:
        return db_session.scalars(select(Partner)).first()
    return None


def current_brand() -> Brand:
    brand = g.get("brand")
    if brand is None:
        abort(404)
    return cast(Brand, brand)
