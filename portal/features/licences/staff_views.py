"""The staff area's catalogue (products and prices) and licence change queue.

Views stay thin: the catalogue's rules are in :mod:`portal.features.catalogue.services`, retrying
and resolving failed changes in :mod:`portal.features.licences.services.provisioning`. Staff of a
partner see only
that partner's rows: the request's session is partner-scoped (:mod:`portal.core.scoping`).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import joinedload
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Response

from portal.core import db
from portal.core.errors import ServiceError
from portal.core.roles import Permission
from portal.core.scoping import get_or_404
from portal.features.catalogue.forms import show_problems
from portal.features.identity.models import StaffUser
from portal.features.licences.forms import ResolveForm, labels
from portal.features.licences.models import LicenceChange, Subscription
from portal.features.licences.rules import ChangeState
from portal.features.licences.services import provisioning
from portal.features.tenancy.models import Customer, Partner
from portal.web.access import staff_required
from portal.web.forms import ConfirmForm

bp = Blueprint("staff_licences", __name__, url_prefix="/staff", template_folder="templates")
PAGE_SIZE = 25


def _partner() -> Partner:
    return db.session.get_one(Partner, g.brand.id)


def _staff() -> StaffUser:
    staff = current_user.account
    assert isinstance(staff, StaffUser)
    return staff


def _actor() -> str:
    """Who did it, as the staff area's audit events name people."""
    return str(current_user.get_id())


def _page_number() -> int:
    return max(request.args.get("page", 1, type=int) or 1, 1)


# -- catalogue ------------------------------------------------------------------------------------


# -- licence change queue -----------------------------------------------------------------------


def _queue_filters(values: MultiDict[str, str]) -> dict[str, Any]:
    """The queue's filters from a query string (or a form's hidden copy of it), cleaned."""
    state = values.get("state", "")
    page = values.get("page", "1")
    return {
        "state": state if state in {s.value for s in ChangeState} else "",
        "q": values.get("q", "").strip()[:100],
        "page": max(int(page), 1) if page.isdigit() else 1,
    }


def _queue_url(filters: dict[str, Any]) -> str:
    return url_for(
        "staff_licences.licence_changes",
        state=filters["state"] or None,
        q=filters["q"] or None,
        page=filters["page"] if filters["page"] > 1 else None,
    )


def _by_customer(query: str) -> list[ColumnElement[bool]]:
    """The condition of a customer name search, if there is one."""
    if not query:
        return []
    matching = select(Customer.id).where(func.lower(Customer.name).like(f"%{query.lower()}%"))
    return [LicenceChange.customer_id.in_(matching)]


def _queue_page(
    filters: dict[str, Any],
    resolve_form: ResolveForm | None = None,
    resolve_change_id: int | None = None,
) -> str:
    by_customer = _by_customer(filters["q"])
    counts: dict[ChangeState, int] = {
        state: number
        for state, number in db.session.execute(
            select(LicenceChange.state, func.count())
            .where(*by_customer)
            .group_by(LicenceChange.state)
        ).all()
    }
    statement = select(LicenceChange).where(*by_customer)
    if filters["state"]:
        statement = statement.where(LicenceChange.state == ChangeState(filters["state"]))
    total = db.session.scalar(select(func.count()).select_from(statement.subquery())) or 0
    pages = max((total + PAGE_SIZE - 1) // PAGE_SIZE, 1)
    page = min(filters["page"], pages)
    changes = list(
        db.session.scalars(
            statement.options(
                joinedload(LicenceChange.subscription).joinedload(Subscription.customer)
            )
            .order_by(LicenceChange.requested_at.desc(), LicenceChange.id.desc())
            .limit(PAGE_SIZE)
            .offset((page - 1) * PAGE_SIZE)
        )
    )
    return render_template(
        "staff/licence_changes.html",
        changes=changes,
        filters={**filters, "page": page},
        total=total,
        pages=pages,
        counts={state: counts.get(state, 0) for state in ChangeState},
        failed_count=counts.get(ChangeState.FAILED, 0),
        states=list(ChangeState),
        resolve_form=resolve_form,
        resolve_change_id=resolve_change_id,
        **labels(),
    )


@bp.route("/licence-changes")
@staff_required(Permission.VIEW_LICENCE_QUEUE)
def licence_changes() -> str:
    return _queue_page(_queue_filters(request.args))


@bp.route("/licence-changes/<int:change_id>/retry", methods=["POST"])
@staff_required(Permission.MANAGE_LICENCE_QUEUE)
def retry(change_id: int) -> Response:
    change = get_or_404(db.session, LicenceChange, change_id)
    filters = _queue_filters(request.form)
    if not ConfirmForm().validate_on_submit():
        flash(_("This form has expired. Reload the page and try again."), "danger")
        return redirect(_queue_url(filters))
    try:
        provisioning.retry(db.session, _partner(), change, _staff())
        db.session.commit()
    except ServiceError as error:
        db.session.rollback()
        flash(error.message, "danger")
    else:
        flash(
            _(
                "Change #%(id)d of %(customer)s is queued again; the provider gets the same "
                "request id, so it cannot apply twice.",
                id=change.id,
                customer=change.subscription.customer.name,
            ),
            "success",
        )
    return redirect(_queue_url(filters))


@bp.route("/licence-changes/<int:change_id>/resolve", methods=["POST"])
@staff_required(Permission.MANAGE_LICENCE_QUEUE)
def resolve(change_id: int) -> Response | tuple[str, int]:
    change = get_or_404(db.session, LicenceChange, change_id)
    filters = _queue_filters(request.form)
    form = ResolveForm()
    if form.validate_on_submit():
        applied = form.outcome.data == "applied"
        try:
            provisioning.resolve(
                db.session, _partner(), change, _staff(), applied=applied, note=form.note.data
            )
            db.session.commit()
        except ServiceError as error:
            db.session.rollback()
            if error.field is None:
                flash(error.message, "danger")
                return redirect(_queue_url(filters))
            show_problems(form, error)
        else:
            customer = change.subscription.customer.name
            flash(
                _(
                    "Change #%(id)d of %(customer)s is resolved as applied: the subscription "
                    "has %(count)d seats.",
                    id=change.id,
                    customer=customer,
                    count=change.quantity_to,
                )
                if applied
                else _(
                    "Change #%(id)d of %(customer)s is resolved as not applied.",
                    id=change.id,
                    customer=customer,
                ),
                "success",
            )
            return redirect(_queue_url(filters))
    return _queue_page(filters, form, change.id), 422
