"""Invoices in the customer portal (Administrator and Finance Manager): the list with its
filters and CSV export, one invoice with every line, and its PDF.

The session is scoped to the signed-in customer (:mod:`portal.scoping`): another customer's
invoice is simply not found (404), and drafts are never shown here. Reads go through
:mod:`portal.services.billing_queries`; the PDF is this page's document template printed by
:mod:`portal.services.invoice_pdf`.
"""

from __future__ import annotations

import io
from datetime import date, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    g,
    redirect,
    request,
    send_file,
    url_for,
)
from flask import stream_with_context as keep_request
from werkzeug.wrappers import Response as BaseResponse

from portal import db
from portal.branding import render_page
from portal.branding.brand import Brand
from portal.branding.themes import themes
from portal.db import utcnow
from portal.domain.money import to_major
from portal.domain.roles import Permission
from portal.services import _
from portal.services import billing_queries as queries
from portal.services.invoice_pdf import LocalAssets, pdf_file_name, render_pdf
from portal.web.access import customer_required
from portal.web.invoice_format import (
    CUSTOMER_STATUSES,
    InvoiceFilterForm,
    csv_rows,
    csv_text,
    register_template_helpers,
    status_label,
)
from portal.web.invoice_format import (
    same_query as _same_query,
)

bp = Blueprint("invoices", __name__)
register_template_helpers(bp)
PER_PAGE = 25


def partner_today(brand: Brand) -> date:
    """Today in the partner's time zone: the day that decides what is overdue."""
    return utcnow().astimezone(ZoneInfo(brand.timezone or "UTC")).date()


def _filters() -> InvoiceFilterForm:
    form = InvoiceFilterForm(CUSTOMER_STATUSES, formdata=request.args)
    form.check()
    return form


@bp.route("/invoices")
@customer_required(Permission.VIEW_INVOICES)
def index() -> str:
    form = _filters()
    requested = request.args.get("page", "1")
    query = {
        "today": partner_today(g.brand),
        "customer_id": g.customer.id,
        "statuses": form.statuses(),
        "issued_from": form.issued_from.data,
        "issued_to": form.issued_to.data,
        "per_page": PER_PAGE,
    }
    found = queries.list_invoices(
        db.session, page=int(requested) if requested.isdigit() else 1, **query
    )
    if found.page > found.pages:  # a page beyond the last (the list got shorter): the last
        found = queries.list_invoices(db.session, page=found.pages, **query)
    return render_page(
        "invoices/index.html",
        form=form,
        found=found,
        filter_args=form.query_args(),
        filtered=bool(form.query_args()),
    )


@bp.route("/invoices.csv")
@customer_required(Permission.VIEW_INVOICES)
def export() -> BaseResponse:
    """The list as CSV, every page of it, with the same filters (amounts in major units)."""
    form = _filters()
    if form.errors:
        return redirect(_same_query(url_for(".index")))
    rows = queries.iter_invoices(
        db.session,
        today=partner_today(g.brand),
        customer_id=g.customer.id,
        statuses=form.statuses(),
        issued_from=form.issued_from.data,
        issued_to=form.issued_to.data,
    )
    header = [
        _("Number"),
        _("Period start"),
        _("Period end"),
        _("Issued"),
        _("Due"),
        _("Currency"),
        _("Total"),
        _("Credited"),
        _("Paid"),
        _("Balance"),
        _("Status"),
    ]
    body = csv_rows(header, (_csv_row(row) for row in rows))
    response = Response(keep_request(body), mimetype="text/csv")
    response.headers["Content-Disposition"] = "attachment; filename=invoices.csv"
    return response


def _csv_row(row: queries.InvoiceRow) -> list[object]:
    invoice = row.invoice
    currency = invoice.currency
    return [
        csv_text(invoice.number or ""),
        invoice.period_start.isoformat(),
        (invoice.period_end - timedelta(days=1)).isoformat(),
        invoice.issued_on.isoformat() if invoice.issued_on else "",
        invoice.due_on.isoformat() if invoice.due_on else "",
        currency,
        to_major(invoice.total_minor, currency),
        to_major(row.credited_minor, currency),
        to_major(row.paid_minor, currency),
        to_major(row.balance_minor, currency),
        status_label(row.status),
    ]


def _detail(invoice_id: int) -> queries.InvoiceDetail:
    found = queries.invoice_detail(db.session, invoice_id, today=partner_today(g.brand))
    if found is None:
        abort(404)
    return found


@bp.route("/invoices/<int:invoice_id>")
@customer_required(Permission.VIEW_INVOICES)
def detail(invoice_id: int) -> str:
    return render_page("invoices/detail.html", doc=_detail(invoice_id))


@bp.route("/invoices/<int:invoice_id>/pdf")
@customer_required(Permission.VIEW_INVOICES)
def pdf(invoice_id: int) -> BaseResponse:
    doc = _detail(invoice_id)
    html = render_page("invoices/pdf.html", doc=doc)
    return pdf_response(html, doc.invoice.number or str(doc.invoice.id))


def pdf_response(html: str, number: str) -> BaseResponse:
    """The PDF of a rendered invoice document, as a download with a safe file name."""
    brand: Brand = g.brand
    assert current_app.static_folder is not None
    assets = LocalAssets(
        static_dir=Path(current_app.static_folder),
        theme_file=lambda name: themes().static_path(brand.slug, name),
        brand_css=brand.css(),
    )
    document = render_pdf(html, request.host_url, assets)
    return send_file(
        io.BytesIO(document),
        mimetype="application/pdf",
        as_attachment=True,
        download_name=pdf_file_name(number),
        conditional=False,
        etag=False,
        last_modified=None,
        max_age=None,
    )
