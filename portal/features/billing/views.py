"""Invoices in the customer portal (Administrator and Finance Manager): the list with its
filters and CSV export, one invoice with every line, and its PDF.

The session is scoped to the signed-in customer (:mod:`portal.core.scoping`): another customer's
invoice is simply not found (404), and drafts are never shown here. Reads go through
:mod:`portal.features.billing.services.queries`; the PDF is this page's document template printed by
:mod:`portal.features.billing.pdf`.
"""

from __future__ import annotations

from datetime import timedelta

from flask import (
    Blueprint,
    Response,
    abort,
    g,
    redirect,
    request,
    url_for,
)
from flask import stream_with_context as keep_request
from werkzeug.wrappers import Response as BaseResponse

from portal.core import db
from portal.core.errors import _
from portal.core.money import to_major
from portal.core.roles import Permission
from portal.features.billing.invoice_format import (
    CUSTOMER_STATUSES,
    InvoiceFilterForm,
    csv_rows,
    csv_text,
    register_template_helpers,
    status_label,
)
from portal.features.billing.invoice_format import (
    same_query as _same_query,
)
from portal.features.billing.pdf import pdf_response
from portal.features.billing.services import queries
from portal.features.tenancy.branding.themes import render_page
from portal.features.tenancy.services import partner_today
from portal.web.access import customer_required

bp = Blueprint("invoices", __name__, template_folder="templates")
register_template_helpers(bp)
PER_PAGE = 25


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
