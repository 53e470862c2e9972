"""The partner's settings, kept by its staff Admins: the brand (name, colours, support contacts,
legal links, time zone, default currency), the logo, the host names and the invoice details.

Every rule is checked here, whatever the browser sent, and every mistake of a form is reported
at once (:class:`SettingsError`). Each change is audited in its own transaction and these
functions commit; the brand cache is then cleared, so the next request of this process shows
the change (other processes see it within ``CACHE_SECONDS``).

Auditing: the audit trail is the identity capability's, which sits above tenancy, so this module
cannot import it. Identity hands its recorder to the app when the app is built
(:func:`set_audit_recorder`, called by ``portal.features.identity.audit.init_app``), and these
services write through it in their own transaction; without one they refuse to change anything.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, cast
from urllib.parse import urlsplit
from zoneinfo import available_timezones

from email_validator import EmailNotValidError, validate_email
from flask import Flask, current_app
from flask_babel import format_decimal
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from portal.core.errors import ServiceError, _
from portal.core.money import exponent
from portal.features.tenancy.branding.brand import brand_cache
from portal.features.tenancy.models import Partner, PartnerHost
from portal.features.tenancy.rules import (
    AA_NORMAL_TEXT,
    MAX_LOGO_BYTES,
    header_contrast,
    image_type,
    is_hex_colour,
    is_host_name,
    looks_like_url,
    readable_button,
    shown_ratio,
)

AUDIT_EXTENSION = "portal_tenancy_audit"
MAX_NAME = 200
MAX_URL = 500
MAX_PHONE = 40
MAX_TAX_ID = 64
MAX_TEXT = 2_000
PHONE_CHARACTERS = frozenset("0123456789 +-().")
EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}


class AuditRecorder(Protocol):
    """``portal.features.identity.audit.record``: one audit event in the caller's transaction."""

    def __call__(
        self,
        db_session: Session,
        *,
        partner_id: int,
        actor: str,
        action: str,
        customer_id: int | None = None,
        **detail: Any,
    ) -> object: ...


def set_audit_recorder(app: Flask, recorder: AuditRecorder) -> None:
    app.extensions[AUDIT_EXTENSION] = recorder


def _audit(db_session: Session, partner: Partner, actor: str, action: str, **detail: Any) -> None:
    recorder = cast(AuditRecorder | None, current_app.extensions.get(AUDIT_EXTENSION))
    if recorder is None:
        raise RuntimeError("no audit recorder: portal.features.identity.audit.init_app(app)")
    recorder(db_session, partner_id=partner.id, actor=actor, action=action, **detail)


class SettingsError(ServiceError):
    """One or more refused fields; ``problems`` lists (field or None, message) in form order."""

    def __init__(self, problems: list[tuple[str | None, str]]) -> None:
        super().__init__(problems[0][1], problems[0][0])
        self.problems = problems


def _committed(db_session: Session) -> None:
    db_session.commit()
    brand_cache().clear()


def _shown(value: object) -> str:
    return "—" if value in (None, "") else str(value)


def ratio_text(ratio: float) -> str:
    """A contrast ratio as people read it, in their language: ``4.49:1``, ``4,49:1``."""
    return f"{format_decimal(shown_ratio(ratio), format='0.0#')}:1"


# -- the brand ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BrandFields:
    """What staff set on the brand; empty optional text means "none"."""

    name: str
    primary_colour: str
    secondary_colour: str
    support_email: str
    support_phone: str
    terms_url: str
    privacy_url: str
    timezone: str
    default_currency: str


@lru_cache(maxsize=1)
def time_zones() -> frozenset[str]:
    """The IANA time zone names this system knows (``Europe/Madrid``, ``UTC``)."""
    return frozenset(available_timezones())


def _clean_brand(data: BrandFields) -> BrandFields:
    return BrandFields(
        name=data.name.strip(),
        primary_colour=data.primary_colour.strip().lower(),
        secondary_colour=data.secondary_colour.strip().lower(),
        support_email=data.support_email.strip(),
        support_phone=data.support_phone.strip(),
        terms_url=data.terms_url.strip(),
        privacy_url=data.privacy_url.strip(),
        timezone=data.timezone.strip(),
        default_currency=data.default_currency.strip().upper(),
    )


def _url_problem(url: str) -> str | None:
    if not url:
        return None
    if len(url) > MAX_URL:
        return _("Keep the address to %(max)d characters or fewer.", max=MAX_URL)
    parts = urlsplit(url)
    if parts.scheme.lower() != "https" or not parts.hostname or any(c.isspace() for c in url):
        return _("Enter a full https:// address, like https://example.com/terms.")
    return None


def _check_brand(data: BrandFields) -> None:
    problems: list[tuple[str | None, str]] = []

    def refuse(field: str, message: str) -> None:
        problems.append((field, message))

    if not data.name:
        refuse("name", _("Enter the brand's name."))
    elif len(data.name) > MAX_NAME:
        refuse("name", _("Keep the name to %(max)d characters or fewer.", max=MAX_NAME))
    if not is_hex_colour(data.primary_colour):
        refuse("primary_colour", _("Enter a colour as # and six hex digits, like #0b5cad."))
    else:
        button = readable_button(data.primary_colour)
        if button.ratio < AA_NORMAL_TEXT:
            refuse(
                "primary_colour",
                _(
                    "Button text on %(colour)s reaches a contrast of only %(ratio)s; WCAG AA "
                    "needs 4.5:1. Choose a darker or a lighter colour.",
                    colour=data.primary_colour,
                    ratio=ratio_text(button.ratio),
                ),
            )
    if not is_hex_colour(data.secondary_colour):
        refuse("secondary_colour", _("Enter a colour as # and six hex digits, like #1b1f24."))
    elif (ratio := header_contrast(data.secondary_colour)) < AA_NORMAL_TEXT:
        refuse(
            "secondary_colour",
            _(
                "The header's light text on %(colour)s reaches a contrast of only %(ratio)s; "
                "WCAG AA needs 4.5:1. Choose a darker colour.",
                colour=data.secondary_colour,
                ratio=ratio_text(ratio),
            ),
        )
    try:
        validate_email(data.support_email, check_deliverability=False)
    except EmailNotValidError:
        refuse("support_email", _("Enter a valid email address."))
    if len(data.support_phone) > MAX_PHONE or not set(data.support_phone) <= PHONE_CHARACTERS:
        refuse(
            "support_phone",
            _("Enter the phone number with digits, spaces and + - ( ) only, up to 40 of them."),
        )
    for field in ("terms_url", "privacy_url"):
        problem = _url_problem(getattr(data, field))
        if problem:
            refuse(field, problem)
    if data.timezone not in time_zones():
        refuse("timezone", _("Choose a time zone from the list, like Europe/Madrid or UTC."))
    try:
        exponent(data.default_currency)
    except ValueError:
        refuse("default_currency", _("Enter a three-letter ISO 4217 code, like USD."))
    if problems:
        raise SettingsError(problems)


def update_brand(db_session: Session, partner: Partner, data: BrandFields, actor: str) -> bool:
    """Save the brand; False (and nothing recorded) when nothing changed."""
    data = _clean_brand(data)
    _check_brand(data)
    values: dict[str, Any] = {
        field.name: getattr(data, field.name) or None for field in fields(data)
    }
    changes = {
        name: f"{_shown(getattr(partner, name))} → {_shown(value)}"
        for name, value in values.items()
        if getattr(partner, name) != value
    }
    if not changes:
        return False
    for name, value in values.items():
        setattr(partner, name, value)
    _audit(db_session, partner, actor, "settings.brand_updated", **changes)
    _committed(db_session)
    return True


# -- the invoice details --------------------------------------------------------------------------


@dataclass(frozen=True)
class InvoiceDetails:
    """Who the partner's invoices say sold: printed on the invoice page and PDF when set."""

    legal_name: str
    address: str
    tax_id: str
    footer: str


def update_invoice_details(
    db_session: Session, partner: Partner, data: InvoiceDetails, actor: str
) -> bool:
    """Save the invoice details; False (and nothing recorded) when nothing changed."""
    lines = [line.strip() for line in data.address.replace("\r\n", "\n").split("\n")]
    data = InvoiceDetails(
        legal_name=data.legal_name.strip(),
        address="\n".join(line for line in lines if line),
        tax_id=data.tax_id.strip(),
        footer=data.footer.replace("\r\n", "\n").strip(),
    )
    problems: list[tuple[str | None, str]] = []
    if len(data.legal_name) > MAX_NAME:
        problems.append(
            ("legal_name", _("Keep the name to %(max)d characters or fewer.", max=MAX_NAME))
        )
    if len(data.address) > MAX_TEXT:
        problems.append(
            ("address", _("Keep the address to %(max)d characters or fewer.", max=MAX_TEXT))
        )
    if len(data.tax_id) > MAX_TAX_ID:
        problems.append(
            ("tax_id", _("Keep the tax id to %(max)d characters or fewer.", max=MAX_TAX_ID))
        )
    if len(data.footer) > MAX_TEXT:
        problems.append(
            ("footer", _("Keep the footer to %(max)d characters or fewer.", max=MAX_TEXT))
        )
    if problems:
        raise SettingsError(problems)
    values = {
        "invoice_legal_name": data.legal_name or None,
        "invoice_address": data.address or None,
        "invoice_tax_id": data.tax_id or None,
        "invoice_footer": data.footer or None,
    }
    changes = {
        name: f"{_shown(getattr(partner, name))} → {_shown(value)}"
        for name, value in values.items()
        if getattr(partner, name) != value
    }
    if not changes:
        return False
    for name, value in values.items():
        setattr(partner, name, value)
    _audit(db_session, partner, actor, "settings.invoice_details_updated", **changes)
    _committed(db_session)
    return True


# -- the logo -------------------------------------------------------------------------------------


def set_logo(db_session: Session, partner: Partner, data: bytes, uploads: Path, actor: str) -> str:
    """Store a PNG, JPEG or WebP logo (the bytes decide, not the name) of at most 512 KB as
    ``uploads/<slug>/logo-<sha256>.<ext>`` and make it the brand's; its file name back."""
    if not data:
        raise SettingsError([("logo", _("Choose an image file to upload."))])
    if len(data) > MAX_LOGO_BYTES:
        raise SettingsError(
            [
                (
                    "logo",
                    _(
                        "The file is %(size)s KB; a logo can be at most 512 KB.",
                        size=format_decimal(-(-len(data) // 1024)),
                    ),
                )
            ]
        )
    kind = image_type(data)
    if kind is None:
        raise SettingsError(
            [("logo", _("The file is not a PNG, JPEG or WebP image. SVG is not accepted."))]
        )
    name = f"logo-{hashlib.sha256(data).hexdigest()[:20]}.{EXTENSIONS[kind]}"
    folder = uploads / partner.slug
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    if not target.exists():
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=".upload-")
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    filename = f"uploaded/{name}"
    previous = partner.logo_filename
    partner.logo_filename = filename
    _audit(
        db_session,
        partner,
        actor,
        "settings.logo_set",
        logo=f"{_shown(previous)} → {filename}",
        type=kind,
        bytes=len(data),
    )
    _committed(db_session)
    return filename


def remove_logo(db_session: Session, partner: Partner, actor: str) -> bool:
    """The brand shows its name instead of a logo; False when it had none."""
    if not partner.logo_filename:
        return False
    previous = partner.logo_filename
    partner.logo_filename = None
    _audit(db_session, partner, actor, "settings.logo_removed", logo=previous)
    _committed(db_session)
    return True


# -- host names -----------------------------------------------------------------------------------


def hosts(db_session: Session, partner: Partner) -> list[PartnerHost]:
    return list(
        db_session.scalars(
            select(PartnerHost).where(PartnerHost.partner_id == partner.id).order_by(PartnerHost.id)
        )
    )


def add_host(db_session: Session, partner: Partner, host: str, actor: str) -> PartnerHost:
    """The portal also answers on ``host``: a host name no partner uses yet."""
    name = host.strip().lower()
    if not name:
        raise SettingsError([("host", _("Enter a host name, like portal.example.com."))])
    if looks_like_url(name):
        raise SettingsError(
            [
                (
                    "host",
                    _(
                        "Enter the host name alone, like portal.example.com: no https://, "
                        "port or path."
                    ),
                )
            ]
        )
    if not is_host_name(name):
        raise SettingsError(
            [
                (
                    "host",
                    _(
                        "%(host)s is not a valid host name: use letters, digits, hyphens and "
                        "dots, like portal.example.com.",
                        host=name,
                    ),
                )
            ]
        )
    taken = db_session.scalar(
        select(func.count())
        .select_from(PartnerHost)
        .where(PartnerHost.host == name)
        .execution_options(unscoped=True)
    )
    in_use = SettingsError([("host", _("%(host)s is already in use by a portal.", host=name))])
    if taken:
        raise in_use
    row = PartnerHost(partner_id=partner.id, host=name)
    db_session.add(row)
    try:
        db_session.flush()
    except IntegrityError:  # added by someone else a moment ago
        db_session.rollback()
        raise in_use from None
    _audit(db_session, partner, actor, "settings.host_added", host=name)
    _committed(db_session)
    return row


def remove_host(db_session: Session, partner: Partner, host_id: int, actor: str) -> str:
    """The portal no longer answers on that host name; never its last one. The name back."""
    current = hosts(db_session, partner)
    row = next((h for h in current if h.id == host_id), None)
    if row is None:
        raise SettingsError([(None, _("That host name is not one of this portal's."))])
    if len(current) == 1:
        raise SettingsError(
            [
                (
                    None,
                    _(
                        "%(host)s is the portal's only host name and cannot be removed. Add "
                        "another one first.",
                        host=row.host,
                    ),
                )
            ]
        )
    name = row.host
    db_session.delete(row)
    _audit(db_session, partner, actor, "settings.host_removed", host=name)
    _committed(db_session)
    return name
