"""The staff area: separate sign-in, customers, credit hold, inviting customer users.

Staff pages always render with the app's own templates: partner themes cannot touch them.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from sqlalchemy import func, or_, select
from sqlalchemy.orm import joinedload
from werkzeug.wrappers import Response

from portal import db
from portal.domain.roles import CustomerRole, Permission
from portal.extensions import rate_limited
from portal.integrations.registry import Registry, integrations
from portal.models import (
    AuditEvent,
    Customer,
    Membership,
    OutboxItem,
    OutboxState,
    Partner,
    StaffUser,
)
from portal.plugins import plugin_infos
from portal.scoping import get_or_404
from portal.services import ServiceError, auth, people
from portal.web.access import StaffPrincipal, public, sign_in, sign_out, staff_required
from portal.web.forms import (
    ConfirmForm,
    CreditHoldForm,
    ForgotPasswordForm,
    InviteForm,
    LoginForm,
    ResetPasswordForm,
    role_label,
)
from portal.web.redirects import safe_next

bp = Blueprint("staff", __name__, url_prefix="/staff")
PAGE_SIZE = 25


def _partner() -> Partner:
    return db.session.get_one(Partner, g.brand.id)


@bp.route("/login", methods=["GET", "POST"])
@rate_limited("PORTAL_RATELIMIT_LOGIN_IP", methods=("POST",))
@rate_limited("PORTAL_RATELIMIT_LOGIN_ACCOUNT", per="account", methods=("POST",))
@public
def login() -> Response | str:
    form = LoginForm()
    if request.method == "GET":
        form.next.data = request.args.get("next", "")
    if form.validate_on_submit():
        staff = auth.authenticate(
            db.session, _partner(), StaffUser, form.email.data, form.password.data
        )
        if isinstance(staff, StaffUser):
            sign_in(StaffPrincipal(staff))
            return redirect(safe_next(form.next.data, url_for("staff.customers")))
        form.form_errors.append(_("That email and password do not match a staff account."))
    return render_template("staff/login.html", form=form)


@bp.route("/logout", methods=["POST"])
@public
def logout() -> Response:
    if ConfirmForm().validate_on_submit():
        sign_out()
    return redirect(url_for("staff.login"))


@bp.route("/forgot-password", methods=["GET", "POST"])
@rate_limited("PORTAL_RATELIMIT_RESET_IP", methods=("POST",))
@rate_limited("PORTAL_RATELIMIT_RESET_ACCOUNT", per="account", methods=("POST",))
@public
def forgot_password() -> Response | str:
    form = ForgotPasswordForm()
    if form.validate_on_submit():
        auth.request_reset(db.session, _partner(), StaffUser, form.email.data)
        return render_template("staff/reset_sent.html", email=form.email.data)
    return render_template("staff/forgot_password.html", form=form)


@bp.route("/reset-password/<token>", methods=["GET", "POST"])
@rate_limited("PORTAL_RATELIMIT_RESET_IP")
@public
def reset_password(token: str) -> Response | tuple[str, int] | str:
    if auth.valid_reset_token(db.session, StaffUser, token) is None:
        return render_template("staff/link_invalid.html"), 400
    form = ResetPasswordForm()
    if form.validate_on_submit():
        try:
            auth.reset_password(db.session, _partner(), StaffUser, token, form.password.data)
        except ServiceError as error:
            form.password.errors.append(error.message)
        else:
            flash(_("Your password has been changed. Sign in with it now."), "success")
            return redirect(url_for("staff.login"))
    return render_template("staff/reset_password.html", form=form)


@bp.route("/")
@staff_required(Permission.VIEW_CUSTOMERS)
def customers() -> str:
    query = request.args.get("q", "").strip()[:100]
    page = max(request.args.get("page", 1, type=int) or 1, 1)
    statement = select(Customer)
    if query:
        pattern = f"%{query.lower()}%"
        statement = statement.where(
            or_(
                func.lower(Customer.name).like(pattern),
                func.lower(func.coalesce(Customer.ms_tenant_id, "")).like(pattern),
            )
        )
    total = db.session.scalar(select(func.count()).select_from(statement.subquery())) or 0
    rows = list(
        db.session.scalars(
            statement.order_by(func.lower(Customer.name), Customer.id)
            .limit(PAGE_SIZE)
            .offset((page - 1) * PAGE_SIZE)
        )
    )
    pages = max((total + PAGE_SIZE - 1) // PAGE_SIZE, 1)
    return render_template(
        "staff/customers.html", customers=rows, query=query, page=page, pages=pages, total=total
    )


def _customer_page(
    customer: Customer,
    invite_form: InviteForm | None = None,
    hold_form: CreditHoldForm | None = None,
) -> str:
    members = list(
        db.session.scalars(
            select(Membership)
            .where(Membership.customer_id == customer.id)
            .options(joinedload(Membership.user))
            .order_by(Membership.id)
        )
    )
    events = list(
        db.session.scalars(
            select(AuditEvent)
            .where(AuditEvent.customer_id == customer.id)
            .order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc())
            .limit(20)
        )
    )
    return render_template(
        "staff/customer.html",
        customer=customer,
        members=members,
        events=events,
        invitations=people.pending_invitations(db.session, customer.id),
        invite_form=invite_form or InviteForm(formdata=None),
        hold_form=hold_form or CreditHoldForm(formdata=None, on_hold=not customer.credit_hold),
        role_label=role_label,
    )


@bp.route("/customers/<int:customer_id>")
@staff_required(Permission.VIEW_CUSTOMERS)
def customer(customer_id: int) -> str:
    return _customer_page(get_or_404(db.session, Customer, customer_id))


@bp.route("/customers/<int:customer_id>/credit-hold", methods=["POST"])
@staff_required(Permission.SET_CREDIT_HOLD)
def credit_hold(customer_id: int) -> Response | tuple[str, int]:
    customer = get_or_404(db.session, Customer, customer_id)
    form = CreditHoldForm()
    if not form.validate_on_submit():
        return _customer_page(customer, hold_form=form), 422
    people.set_credit_hold(
        db.session,
        _partner(),
        customer,
        bool(form.on_hold.data),
        str(current_user.get_id()),
        form.reason.data,
    )
    flash(
        _("%(name)s is on credit hold.", name=customer.name)
        if customer.credit_hold
        else _("%(name)s is no longer on credit hold.", name=customer.name),
        "success",
    )
    return redirect(url_for("staff.customer", customer_id=customer.id))


@bp.route("/customers/<int:customer_id>/invitations", methods=["POST"])
@rate_limited("PORTAL_RATELIMIT_INVITE")
@staff_required(Permission.INVITE_CUSTOMER_USERS)
def invite(customer_id: int) -> Response | tuple[str, int]:
    customer = get_or_404(db.session, Customer, customer_id)
    form = InviteForm()
    if form.validate_on_submit():
        try:
            people.invite(
                db.session,
                _partner(),
                customer,
                form.email.data,
                CustomerRole(form.role.data),
                str(current_user.get_id()),
                current_user.account.name,
            )
        except ServiceError as error:
            form.email.errors.append(error.message)
        else:
            flash(_("Invitation sent to %(email)s.", email=form.email.data), "success")
            return redirect(url_for("staff.customer", customer_id=customer.id))
    return _customer_page(customer, invite_form=form), 422


OUTBOX_PAGE_SIZE = 50
STATE_LABELS = {
    OutboxState.PENDING.value: _l("Waiting"),
    OutboxState.RUNNING.value: _l("Running"),
    OutboxState.DONE.value: _l("Done"),
    OutboxState.FAILED.value: _l("Failed"),
}
STATE_BADGES = {
    OutboxState.PENDING.value: "text-bg-info",
    OutboxState.RUNNING.value: "text-bg-primary",
    OutboxState.DONE.value: "text-bg-success",
    OutboxState.FAILED.value: "text-bg-danger",
}


@bp.route("/system")
@staff_required(Permission.VIEW_SYSTEM)
def system() -> str:
    """Loaded plugins and their adapters, and the background work queue with its states."""
    state = request.args.get("state", "")
    mine = or_(OutboxItem.partner_id == g.brand.id, OutboxItem.partner_id.is_(None))
    counts = dict(
        db.session.execute(
            select(OutboxItem.state, func.count()).where(mine).group_by(OutboxItem.state)
        ).all()
    )
    statement = select(OutboxItem).where(mine)
    if state in {s.value for s in OutboxState}:
        statement = statement.where(OutboxItem.state == OutboxState(state))
    items = list(
        db.session.scalars(statement.order_by(OutboxItem.id.desc()).limit(OUTBOX_PAGE_SIZE))
    )
    loaded = integrations()
    registries: list[Registry[Any]] = [
        loaded.providers,
        loaded.payment_gateways,
        loaded.accounting_systems,
        loaded.notifiers,
    ]
    return render_template(
        "staff/system.html",
        plugins=list(plugin_infos().values()),
        registries=registries,
        counts={s: counts.get(s, 0) for s in OutboxState},
        items=items,
        state=state,
        states=list(OutboxState),
        state_labels=STATE_LABELS,
        state_badges=STATE_BADGES,
    )
