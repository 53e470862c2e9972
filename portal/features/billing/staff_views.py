"""The staff area's billing: runs (start one, watch its progress and results), invoices across
customers (review a draft and issue it, discard it, void an issued one with a credit note) and
the deferred revenue report.

Views stay thin: :mod:`portal.features.billing.services.contracts` does the work and keeps the
audit trail,
:mod:`portal.features.billing.services.queries` reads. The session is partner-scoped: staff see
their partner's runs and invoices only.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from dateutil.relativedelta import relativedelta
from flask import Blueprint, Response, abort, flash, g, redirect, render_template, request, url_for
from flask import stream_with_context as keep_request
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel import ngettext
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import func, select
from werkzeug.wrappers import Response as BaseResponse
from wtforms import BooleanField, DateField, HiddenField, StringField, TextAreaField
from wtforms.validators import InputRequired, Length, StopValidation

from portal.core import db
from portal.core.errors import ServiceError
from portal.core.money import to_major
from portal.core.roles import Permission
from portal.features.billing.invoice_format import (
    InvoiceFilterForm,
    csv_rows,
    csv_text,
    status_label,
)
from portal.features.billing.invoice_format import same_query as _same_query
from portal.features.billing.models import BillingRunState, Invoice, InvoiceState, InvoiceStatus
from portal.features.billing.pdf import pdf_response
from portal.features.billing.services import documents, holds, queries, schedule
from portal.features.billing.services.documents import REASON_LIMIT
from portal.features.tenancy.models import Customer, Partner
from portal.features.tenancy.services import partner_today
from portal.web.access import staff_required
from portal.web.forms import ConfirmForm, show_refusal

bp = Blueprint("staff_billing", __name__, url_prefix="/staff", template_folder="templates")
PER_PAGE = 25
STAFF_STATUSES = (InvoiceStatus.DRAFT, *(s for s in InvoiceStatus if s is not InvoiceStatus.DRAFT))
REPORT_MONTHS = 12
MAX_REPORT_MONTHS = 36
ACTIVE_RUN_STATES = (BillingRunState.QUEUED, BillingRunState.RUNNING)


def _partner() -> Partner:
    return db.session.get_one(Partner, g.brand.id)


def _actor() -> str:
    """Who did it, as the staff area's audit events name people."""
    return str(current_user.get_id())


# -- forms ----------------------------------------------------------------------------------------


class RunBillingForm(FlaskForm):  # type: ignore[misc]
    on = DateField(
        _l("Billing date"),
        format="%Y-%m-%d",
        validators=[InputRequired(_l("Enter the day to bill, like 2026-05-01."))],
    )


class ReviewForm(FlaskForm):  # type: ignore[misc]
    review = BooleanField(_l("Staff review invoices before they are issued"))


class HoldRulesForm(FlaskForm):  # type: ignore[misc]
    """Both fields are parsed by the service, which says what is wrong in the user's language."""

    grace_days = StringField(_l("Grace period (days overdue)"))
    hold_limit = StringField(_l("Credit limit (overdue balance)"))


class ReasonForm(FlaskForm):  # type: ignore[misc]
    reason = TextAreaField(
        _l("Reason"),
        validators=[
            InputRequired(_l("Say why, for the record.")),
            Length(max=REASON_LIMIT, message=_l("Keep the reason under 1,000 characters.")),
        ],
    )
    action = HiddenField()

    def validate_reason(self, field: Any) -> None:
        if not (field.data or "").strip():
            raise StopValidation(str(_l("Say why, for the record.")))


# -- billing runs ---------------------------------------------------------------------------------


def _runs_context() -> dict[str, Any]:
    runs = queries.billing_runs(db.session, limit=20)
    return {
        "runs": runs,
        "active": any(run.state in ACTIVE_RUN_STATES for run in runs),
    }


@bp.route("/billing")
@staff_required(Permission.VIEW_BILLING)
def runs() -> str:
    return _runs_page(RunBillingForm(formdata=None, on=partner_today(g.brand)))


def _runs_page(form: RunBillingForm, hold_form: HoldRulesForm | None = None) -> str:
    settings = documents.billing_settings(db.session, g.brand.id)
    partner = _partner()
    return render_template(
        "staff/billing.html",
        form=form,
        review_form=ReviewForm(formdata=None, review=settings.invoice_review),
        hold_form=hold_form
        or HoldRulesForm(
            formdata=None,
            grace_days="" if settings.hold_grace_days is None else str(settings.hold_grace_days),
            hold_limit=""
            if settings.hold_limit_minor is None
            else str(to_major(settings.hold_limit_minor, partner.default_currency)),
        ),
        currency=partner.default_currency,
        settings=settings,
        drafts=db.session.scalar(
            select(func.count(Invoice.id)).where(Invoice.state == InvoiceState.DRAFT)
        )
        or 0,
        today=partner_today(g.brand),
        **_runs_context(),
    )


@bp.route("/billing/runs")
@staff_required(Permission.VIEW_BILLING)
def runs_status() -> str:
    """The runs table alone: the page reloads it while a run is queued or running."""
    return render_template("staff/billing_runs.html", **_runs_context())


@bp.route("/billing/run", methods=["POST"])
@staff_required(Permission.MANAGE_BILLING)
def start_run() -> BaseResponse | tuple[str, int]:
    form = RunBillingForm()
    if form.validate_on_submit():
        try:
            run = schedule.request_billing_run(db.session, _partner(), form.on.data, _actor())
        except ServiceError as error:
            db.session.rollback()
            form.on.errors = [error.message]
        else:
            db.session.commit()
            flash(
                _(
                    "Billing run #%(id)d for %(date)s is queued; its progress shows below.",
                    id=run.id,
                    date=form.on.data.isoformat(),
                ),
                "success",
            )
            return redirect(url_for(".runs"))
    elif form.on.errors and form.on.raw_data and form.on.raw_data[0]:
        form.on.errors = [_("Enter the day to bill, like 2026-05-01.")]
    return _runs_page(form), 422


@bp.route("/billing/review", methods=["POST"])
@staff_required(Permission.MANAGE_BILLING)
def review_setting() -> BaseResponse:
    form = ReviewForm()
    if not form.validate_on_submit():
        flash(_("This form has expired. Reload the page and try again."), "danger")
        return redirect(url_for(".runs"))
    documents.set_invoice_review(db.session, _partner(), bool(form.review.data), _actor())
    db.session.commit()
    flash(
        _("Invoices from billing runs now wait for staff review before they are issued.")
        if form.review.data
        else _("Invoices from billing runs are now issued at once, without review."),
        "success",
    )
    return redirect(url_for(".runs"))


@bp.route("/billing/hold-rules", methods=["POST"])
@staff_required(Permission.MANAGE_BILLING)
def hold_rules() -> BaseResponse | tuple[str, int]:
    form = HoldRulesForm()
    if form.validate_on_submit():
        try:
            holds.set_partner_rules(
                db.session,
                _partner(),
                form.grace_days.data or "",
                form.hold_limit.data or "",
                _actor(),
            )
        except ServiceError as error:
            db.session.rollback()
            show_refusal(form, error)
        else:
            db.session.commit()
            flash(_("The automatic credit hold rules are saved."), "success")
            return redirect(url_for(".runs"))
    else:
        form.form_errors.append(_("This form has expired. Reload the page and try again."))
    return _runs_page(RunBillingForm(formdata=None, on=partner_today(g.brand)), form), 422


# -- invoices across customers ----------------------------------------------------------------


def _invoice_filters() -> tuple[InvoiceFilterForm, dict[str, Any]]:
    form = InvoiceFilterForm(STAFF_STATUSES, formdata=request.args)
    form.check()
    number = request.args.get("number", "").strip()[:40]
    customer_query = request.args.get("q", "").strip()[:100]
    customer_arg = request.args.get("customer", "")
    run_arg = request.args.get("run", "")
    extra: dict[str, Any] = {
        "number": number,
        "q": customer_query,
        "customer": None,
        "run": int(run_arg) if run_arg.isdigit() else None,
        "matches": [],
    }
    if customer_arg.isdigit():
        extra["customer"] = db.session.scalars(
            select(Customer).where(Customer.id == int(customer_arg))
        ).first()
    elif customer_query:
        matches = list(
            db.session.scalars(
                select(Customer)
                .where(func.lower(Customer.name).contains(customer_query.lower()))
                .order_by(Customer.name, Customer.id)
                .limit(21)
            )
        )
        if len(matches) == 1:
            extra["customer"] = matches[0]
        else:
            extra["matches"] = matches
    return form, extra


def _filter_args(form: InvoiceFilterForm, extra: dict[str, Any]) -> dict[str, Any]:
    args: dict[str, Any] = dict(form.query_args())
    if extra["number"]:
        args["number"] = extra["number"]
    if extra["customer"] is not None:
        args["customer"] = extra["customer"].id
    elif extra["q"]:
        args["q"] = extra["q"]
    if extra["run"] is not None:
        args["run"] = extra["run"]
    return args


def _query(form: InvoiceFilterForm, extra: dict[str, Any]) -> dict[str, Any]:
    customer = extra["customer"]
    return {
        "statuses": form.statuses(),
        "issued_from": form.issued_from.data,
        "issued_to": form.issued_to.data,
        "number": extra["number"] or None,
        "customer_id": customer.id if customer is not None else None,
        "billing_run_id": extra["run"],
        "include_drafts": True,
    }


@bp.route("/invoices")
@staff_required(Permission.VIEW_BILLING)
def invoices() -> str:
    form, extra = _invoice_filters()
    requested = request.args.get("page", "1")
    page = int(requested) if requested.isdigit() else 1
    query = _query(form, extra)
    today = partner_today(g.brand)
    if extra["q"] and extra["customer"] is None:
        # a name that matches several customers (or none) lists nothing until one is chosen
        found = queries.InvoicePage(rows=[], page=1, per_page=PER_PAGE, total=0)
    else:
        found = queries.list_invoices(
            db.session, today=today, page=page, per_page=PER_PAGE, **query
        )
    if found.page > found.pages:
        found = queries.list_invoices(
            db.session, today=today, page=found.pages, per_page=PER_PAGE, **query
        )
    args = _filter_args(form, extra)
    return render_template(
        "staff/invoices.html",
        form=form,
        found=found,
        filter_args=args,
        other_args={k: v for k, v in args.items() if k not in ("q", "customer")},
        filtered=bool(args),
        has_drafts=any(row.status is InvoiceStatus.DRAFT for row in found.rows),
        **extra,
    )


@bp.route("/invoices.csv")
@staff_required(Permission.VIEW_BILLING)
def invoices_export() -> BaseResponse:
    form, extra = _invoice_filters()
    if form.errors:
        return redirect(_same_query(url_for(".invoices")))
    rows = (
        iter(())
        if extra["q"] and extra["customer"] is None
        else queries.iter_invoices(db.session, today=partner_today(g.brand), **_query(form, extra))
    )
    header = [
        _("Number"),
        _("Customer"),
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
    body = csv_rows(
        header,
        (
            [
                csv_text(row.invoice.number or ""),
                csv_text(row.customer_name),
                row.invoice.period_start.isoformat(),
                (row.invoice.period_end - timedelta(days=1)).isoformat(),
                row.invoice.issued_on.isoformat() if row.invoice.issued_on else "",
                row.invoice.due_on.isoformat() if row.invoice.due_on else "",
                row.invoice.currency,
                to_major(row.invoice.total_minor, row.invoice.currency),
                to_major(row.credited_minor, row.invoice.currency),
                to_major(row.paid_minor, row.invoice.currency),
                to_major(row.balance_minor, row.invoice.currency),
                status_label(row.status),
            ]
            for row in rows
        ),
    )
    response = Response(keep_request(body), mimetype="text/csv")
    response.headers["Content-Disposition"] = "attachment; filename=invoices.csv"
    return response


@bp.route("/invoices/issue", methods=["POST"])
@staff_required(Permission.MANAGE_BILLING)
def issue_selected() -> BaseResponse:
    """Issue the drafts ticked on the list (after review)."""
    back = request.form.get("back", "")
    target = back if back.startswith("/staff/invoices") else url_for(".invoices")
    if not ConfirmForm().validate_on_submit():
        flash(_("This form has expired. Reload the page and try again."), "danger")
        return redirect(target)
    ids = sorted({int(v) for v in request.form.getlist("invoice_id") if v.isdigit()})
    if not ids:
        flash(_("Tick the drafts to issue first."), "danger")
        return redirect(target)
    try:
        issued = documents.issue_invoices(db.session, _partner(), ids, _actor())
    except ServiceError as error:
        db.session.rollback()
        flash(error.message, "danger")
        return redirect(target)
    db.session.commit()
    if issued:
        flash(
            ngettext_issued(len(issued), ", ".join(i.number or "" for i in issued)),
            "success",
        )
    else:
        flash(_("None of these is a draft any more: nothing was issued."), "warning")
    return redirect(target)


def ngettext_issued(count: int, numbers: str) -> str:
    return str(
        ngettext(
            "%(num)d invoice issued: %(numbers)s. Its Finance Managers are emailed.",
            "%(num)d invoices issued: %(numbers)s. Their Finance Managers are emailed.",
            count,
            numbers=numbers,
        )
    )


def _invoice_detail(invoice_id: int) -> queries.InvoiceDetail:
    found = queries.invoice_detail(
        db.session, invoice_id, today=partner_today(g.brand), include_drafts=True
    )
    if found is None:
        abort(404)
    return found


def _invoice_page(
    doc: queries.InvoiceDetail, form: ReasonForm | None = None, status: int = 200
) -> str | tuple[str, int]:
    page = render_template(
        "staff/invoice.html",
        doc=doc,
        form=form or ReasonForm(formdata=None),
        reason_limit=REASON_LIMIT,
    )
    return page if status == 200 else (page, status)


@bp.route("/invoices/<int:invoice_id>")
@staff_required(Permission.VIEW_BILLING)
def invoice(invoice_id: int) -> str | tuple[str, int]:
    return _invoice_page(_invoice_detail(invoice_id))


@bp.route("/invoices/<int:invoice_id>/pdf")
@staff_required(Permission.VIEW_BILLING)
def invoice_pdf(invoice_id: int) -> BaseResponse:
    doc = _invoice_detail(invoice_id)
    html = render_template("invoices/pdf.html", doc=doc)
    return pdf_response(html, doc.invoice.number or f"draft-{doc.invoice.id}")


@bp.route("/invoices/<int:invoice_id>/issue", methods=["POST"])
@staff_required(Permission.MANAGE_BILLING)
def issue(invoice_id: int) -> BaseResponse | str | tuple[str, int]:
    doc = _invoice_detail(invoice_id)
    if not ConfirmForm().validate_on_submit():
        flash(_("This form has expired. Reload the page and try again."), "danger")
        return redirect(url_for(".invoice", invoice_id=invoice_id))
    try:
        issued = documents.issue_invoice(db.session, _partner(), doc.invoice, _actor())
    except ServiceError as error:
        db.session.rollback()
        flash(error.message, "danger")
        return redirect(url_for(".invoice", invoice_id=invoice_id))
    db.session.commit()
    flash(
        _(
            "Invoice %(number)s is issued; the customer's Finance Managers are emailed.",
            number=issued.number,
        ),
        "success",
    )
    return redirect(url_for(".invoice", invoice_id=invoice_id))


@bp.route("/invoices/<int:invoice_id>/void", methods=["POST"])
@staff_required(Permission.MANAGE_BILLING)
def void(invoice_id: int) -> BaseResponse | str | tuple[str, int]:
    doc = _invoice_detail(invoice_id)
    form = ReasonForm()
    form.action.data = "void"
    if not form.validate_on_submit():
        return _invoice_page(doc, form, 422)
    try:
        credit = documents.void_invoice(
            db.session, _partner(), doc.invoice, _actor(), form.reason.data
        )
    except ServiceError as error:
        db.session.rollback()
        if error.field == "reason":
            form.reason.errors = [error.message]
            return _invoice_page(_invoice_detail(invoice_id), form, 422)
        flash(error.message, "danger")
        return redirect(url_for(".invoice", invoice_id=invoice_id))
    db.session.commit()
    flash(
        _(
            "Invoice %(number)s is void; credit note %(credit)s cancels it.",
            number=doc.invoice.number,
            credit=credit.number,
        ),
        "success",
    )
    return redirect(url_for(".invoice", invoice_id=invoice_id))


@bp.route("/invoices/<int:invoice_id>/discard", methods=["POST"])
@staff_required(Permission.MANAGE_BILLING)
def discard(invoice_id: int) -> BaseResponse | str | tuple[str, int]:
    doc = _invoice_detail(invoice_id)
    form = ReasonForm()
    form.action.data = "discard"
    if not form.validate_on_submit():
        return _invoice_page(doc, form, 422)
    customer = doc.customer.name
    try:
        documents.discard_draft(db.session, _partner(), doc.invoice, _actor(), form.reason.data)
    except ServiceError as error:
        db.session.rollback()
        if error.field == "reason":
            form.reason.errors = [error.message]
            return _invoice_page(_invoice_detail(invoice_id), form, 422)
        flash(error.message, "danger")
        return redirect(url_for(".invoice", invoice_id=invoice_id))
    db.session.commit()
    flash(
        _(
            "The draft invoice of %(customer)s is discarded; the next billing run for its date "
            "makes it again.",
            customer=customer,
        ),
        "success",
    )
    return redirect(url_for(".invoices", status="draft"))


# -- deferred revenue -----------------------------------------------------------------------------


class ReportForm(FlaskForm):  # type: ignore[misc]
    class Meta:
        csrf = False

    first = DateField(_l("From month"), format="%Y-%m")
    last = DateField(_l("To month"), format="%Y-%m")


def _report_form() -> ReportForm:
    today = partner_today(g.brand).replace(day=1)
    default_first = today - relativedelta(months=REPORT_MONTHS - 1)
    form = ReportForm(formdata=request.args if request.args else None)
    if not request.args:
        form.first.data, form.last.data = default_first, today
        return form
    message = _("Enter a month like 2026-05.")
    for month_field, fallback in ((form.first, default_first), (form.last, today)):
        if not month_field.raw_data or not month_field.raw_data[0]:
            month_field.data = fallback
            continue
        if not month_field.validate(form):
            month_field.errors = [message]
            month_field.data = fallback
    if not form.first.errors and not form.last.errors:
        first, last = form.first.data, form.last.data
        if last < first:
            form.last.errors = [_("The last month is before the first.")]
            form.first.data, form.last.data = default_first, today
        elif (last.year - first.year) * 12 + last.month - first.month >= MAX_REPORT_MONTHS:
            form.last.errors = [
                _("Choose at most %(num)d months at a time.", num=MAX_REPORT_MONTHS)
            ]
            form.first.data, form.last.data = default_first, today
    return form


def _report(form: ReportForm) -> queries.DeferredRevenueReport:
    return queries.deferred_revenue_report(
        db.session, first_month=form.first.data, last_month=form.last.data
    )


@bp.route("/billing/deferred-revenue")
@staff_required(Permission.VIEW_BILLING)
def deferred_revenue() -> str:
    form = _report_form()
    report = _report(form)
    return render_template(
        "staff/billing_revenue.html",
        form=form,
        report=report,
        by_currency=report.by_currency(),
        csv_args={
            "first": form.first.data.strftime("%Y-%m"),
            "last": form.last.data.strftime("%Y-%m"),
        },
    )


@bp.route("/billing/deferred-revenue.csv")
@staff_required(Permission.VIEW_BILLING)
def deferred_revenue_export() -> BaseResponse:
    form = _report_form()
    if form.errors:
        return redirect(_same_query(url_for(".deferred_revenue")))
    report = _report(form)
    header = [_("Month"), _("Currency"), _("Recognised"), _("Deferred at month end")]
    body = csv_rows(
        header,
        (
            [
                month.month.strftime("%Y-%m"),
                month.currency,
                to_major(month.recognised_minor, month.currency),
                to_major(month.deferred_minor, month.currency),
            ]
            for month in report.months
        ),
    )
    response = Response(keep_request(body), mimetype="text/csv")
    response.headers["Content-Disposition"] = "attachment; filename=deferred-revenue.csv"
    return response
