"""The staff settings page: the partner's brand, logo, host names and invoice details, for
staff Admins (``Permission.MANAGE_SETTINGS``), on their own blueprint.

Views stay thin: the rules are in :mod:`portal.features.tenancy.settings`.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user
from werkzeug.wrappers import Response

from portal.core import db
from portal.core.errors import ServiceError
from portal.core.roles import Permission
from portal.features.tenancy import settings
from portal.features.tenancy.branding.themes import themes
from portal.features.tenancy.forms import (
    BrandForm,
    HostForm,
    InvoiceDetailsForm,
    LogoForm,
    RemoveHostForm,
    show_problems,
)
from portal.features.tenancy.models import Partner
from portal.features.tenancy.rules import AA_NORMAL_TEXT, header_contrast, readable_button
from portal.web.access import staff_required
from portal.web.forms import ConfirmForm

bp = Blueprint("staff_settings", __name__, url_prefix="/staff", template_folder="templates")


def _partner() -> Partner:
    return db.session.get_one(Partner, g.brand.id)


def _actor() -> str:
    """Who did it, as the staff area's audit events name people."""
    return str(current_user.get_id())


def _brand_form(partner: Partner) -> BrandForm:
    form = BrandForm(formdata=None, obj=partner)
    for name in ("support_phone", "terms_url", "privacy_url"):
        form[name].data = getattr(partner, name) or ""
    return form


def _invoice_form(partner: Partner) -> InvoiceDetailsForm:
    return InvoiceDetailsForm(
        formdata=None,
        legal_name=partner.invoice_legal_name or "",
        address=partner.invoice_address or "",
        tax_id=partner.invoice_tax_id or "",
        footer=partner.invoice_footer or "",
    )


def _contrast(partner: Partner) -> dict[str, Any]:
    """What the page says of the saved colours' contrast (UX: the staff page shows the ratio)."""
    button = readable_button(partner.primary_colour)
    header = header_contrast(partner.secondary_colour)
    return {
        "button": button,
        "button_ratio": settings.ratio_text(button.ratio),
        "button_adjusted": button.background != partner.primary_colour.lower(),
        "header_ratio": settings.ratio_text(header),
        "header_passes": header >= AA_NORMAL_TEXT,
    }


def _page(
    partner: Partner,
    *,
    brand_form: BrandForm | None = None,
    invoice_form: InvoiceDetailsForm | None = None,
    logo_form: LogoForm | None = None,
    host_form: HostForm | None = None,
) -> str:
    return render_template(
        "staff/settings.html",
        partner=partner,
        brand_form=brand_form or _brand_form(partner),
        invoice_form=invoice_form or _invoice_form(partner),
        logo_form=logo_form or LogoForm(formdata=None),
        host_form=host_form or HostForm(formdata=None),
        hosts=settings.hosts(db.session, partner),
        time_zones=sorted(settings.time_zones()),
        **_contrast(partner),
    )


def _saved(changed: bool) -> None:
    if changed:
        flash(_("The settings are saved. Customers see them on their next page."), "success")
    else:
        flash(_("Nothing changed."), "info")


@bp.route("/settings", methods=["GET", "POST"])
@staff_required(Permission.MANAGE_SETTINGS)
def index() -> Response | tuple[str, int] | str:
    partner = _partner()
    if request.method == "GET":
        return _page(partner)
    form = BrandForm()
    if form.validate_on_submit():
        fields = settings.BrandFields(
            name=form.name.data or "",
            primary_colour=form.primary_colour.data or "",
            secondary_colour=form.secondary_colour.data or "",
            support_email=form.support_email.data or "",
            support_phone=form.support_phone.data or "",
            terms_url=form.terms_url.data or "",
            privacy_url=form.privacy_url.data or "",
            timezone=form.timezone.data or "",
            default_currency=form.default_currency.data or "",
        )
        try:
            changed = settings.update_brand(db.session, partner, fields, _actor())
        except ServiceError as error:
            db.session.rollback()
            show_problems(form, error)
        else:
            _saved(changed)
            return redirect(url_for("staff_settings.index"))
    return _page(_partner(), brand_form=form), 422


@bp.route("/settings/invoice", methods=["POST"])
@staff_required(Permission.MANAGE_SETTINGS)
def invoice_details() -> Response | tuple[str, int]:
    partner = _partner()
    form = InvoiceDetailsForm()
    if form.validate_on_submit():
        details = settings.InvoiceDetails(
            legal_name=form.legal_name.data or "",
            address=form.address.data or "",
            tax_id=form.tax_id.data or "",
            footer=form.footer.data or "",
        )
        try:
            changed = settings.update_invoice_details(db.session, partner, details, _actor())
        except ServiceError as error:
            db.session.rollback()
            show_problems(form, error)
        else:
            _saved(changed)
            return redirect(url_for("staff_settings.index"))
    return _page(_partner(), invoice_form=form), 422


@bp.route("/settings/logo", methods=["POST"])
@staff_required(Permission.MANAGE_SETTINGS)
def logo() -> Response | tuple[str, int]:
    partner = _partner()
    form = LogoForm()
    if form.validate_on_submit():
        upload = form.logo.data
        data = upload.read() if upload is not None and hasattr(upload, "read") else b""
        try:
            settings.set_logo(db.session, partner, data, themes().uploads_root, _actor())
        except ServiceError as error:
            db.session.rollback()
            show_problems(form, error)
        else:
            flash(_("The logo is saved. Customers see it on their next page."), "success")
            return redirect(url_for("staff_settings.index"))
    return _page(_partner(), logo_form=form), 422


@bp.route("/settings/logo/remove", methods=["POST"])
@staff_required(Permission.MANAGE_SETTINGS)
def remove_logo() -> Response:
    if ConfirmForm().validate_on_submit():
        if settings.remove_logo(db.session, _partner(), _actor()):
            flash(_("The logo is removed: the portal shows the brand's name."), "success")
    else:
        flash(_("This form has expired. Reload the page and try again."), "danger")
    return redirect(url_for("staff_settings.index"))


@bp.route("/settings/hosts", methods=["POST"])
@staff_required(Permission.MANAGE_SETTINGS)
def add_host() -> Response | tuple[str, int]:
    partner = _partner()
    form = HostForm()
    if form.validate_on_submit():
        try:
            row = settings.add_host(db.session, partner, form.host.data or "", _actor())
        except ServiceError as error:
            db.session.rollback()
            show_problems(form, error)
        else:
            flash(_("The portal now also answers on %(host)s.", host=row.host), "success")
            return redirect(url_for("staff_settings.index"))
    return _page(_partner(), host_form=form), 422


@bp.route("/settings/hosts/remove", methods=["POST"])
@staff_required(Permission.MANAGE_SETTINGS)
def remove_host() -> Response | tuple[str, int]:
    partner = _partner()
    form = RemoveHostForm()
    if not form.validate_on_submit():
        flash(_("This form has expired. Reload the page and try again."), "danger")
        return redirect(url_for("staff_settings.index"))
    host_id = int(form.host_id.data) if (form.host_id.data or "").isdigit() else 0
    try:
        name = settings.remove_host(db.session, partner, host_id, _actor())
    except ServiceError as error:
        db.session.rollback()
        host_form = HostForm(formdata=None)
        host_form.form_errors.append(error.message)
        return _page(_partner(), host_form=host_form), 422
    flash(_("The portal no longer answers on %(host)s.", host=name), "success")
    return redirect(url_for("staff_settings.index"))
