"""The staff area: separate sign-in, customers, credit hold, inviting customer users.

Staff pages always render with the app's own templates: partner themes cannot touch them.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from sqlalchemy import func, or_, select
from sqlalchemy.orm import joinedload
from werkzeug.wrappers import Response

from portal.core import db
from portal.core.errors import ServiceError
from portal.core.money import to_major
from portal.core.roles import CustomerRole, Permission
from portal.core.scoping import get_or_404
from portal.features.billing.forms import CustomerHoldRulesForm
from portal.features.billing.models import BillingContract
from portal.features.billing.services import holds
from portal.features.identity.forms import (
    InviteForm,
)
from portal.features.identity.models import AuditEvent, Membership
from portal.features.identity.services import people
from portal.features.licences.forms import CreditHoldForm
from portal.features.licences.services import subscriptions
from portal.features.payments.forms import CardLinkForm
from portal.features.payments.models import PaymentProfile
from portal.features.payments.services import cards as payment_profiles
from portal.features.tenancy.models import Customer, Partner
from portal.integrations.registry import Registry, integrations
from portal.outbox.models import OutboxItem, OutboxState
from portal.plugins import plugin_infos
from portal.web.access import staff_required
from portal.web.forms import role_label, show_refusal
from portal.web.rate_limits import rate_limited

bp = Blueprint("staff", __name__, url_prefix="/staff", template_folder="templates")
PAGE_SIZE = 25


def _partner() -> Partner:
    return db.session.get_one(Partner, g.brand.id)


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
    rules_form: CustomerHoldRulesForm | None = None,
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
        rules_form=rules_form
        or CustomerHoldRulesForm(
            formdata=None,
            credit_limit=""
            if customer.credit_limit_minor is None
            else str(to_major(customer.credit_limit_minor, customer.default_currency)),
            grace_days="" if customer.hold_grace_days is None else str(customer.hold_grace_days),
        ),
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
    subscriptions.set_credit_hold(
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


@bp.route("/customers/<int:customer_id>/hold-rules", methods=["POST"])
@staff_required(Permission.SET_CREDIT_HOLD)
def hold_rules(customer_id: int) -> Response | tuple[str, int]:
    customer = get_or_404(db.session, Customer, customer_id)
    form = CustomerHoldRulesForm()
    if form.validate_on_submit():
        try:
            holds.set_customer_rules(
                db.session,
                _partner(),
                customer,
                form.credit_limit.data or "",
                form.grace_days.data or "",
                str(current_user.get_id()),
            )
        except ServiceError as error:
            db.session.rollback()
            show_refusal(form, error)
        else:
            db.session.commit()
            flash(
                _("The credit limit and grace period of %(name)s are saved.", name=customer.name),
                "success",
            )
            return redirect(url_for("staff.customer", customer_id=customer.id))
    customer = get_or_404(db.session, Customer, customer_id)
    return _customer_page(customer, rules_form=form), 422


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


def card_link_form() -> CardLinkForm:
    """The customer page's form: the one just posted (with its errors), or an empty one."""
    posted: CardLinkForm | None = g.get("card_link_form")
    return posted if posted is not None else CardLinkForm(formdata=None)


def payment_methods_of(customer_id: int) -> tuple[list[PaymentProfile], list[BillingContract]]:
    """A customer's saved cards and its contracts on autopay (staff session: partner scope)."""
    return (
        payment_profiles.cards(db.session, customer_id),
        payment_profiles.autopay_contracts(db.session, customer_id),
    )


@bp.route("/customers/<int:customer_id>/card-link", methods=["POST"])
@staff_required(Permission.MANAGE_BILLING)
def send_card_link(customer_id: int) -> Response | tuple[str, int]:
    customer = get_or_404(db.session, Customer, customer_id)
    form = CardLinkForm()
    if form.validate_on_submit():
        try:
            payment_profiles.send_card_link(
                db.session,
                partner=db.session.get_one(Partner, g.brand.id),
                customer=customer,
                email=form.email.data,
                actor=str(current_user.get_id()),
                link=lambda token: url_for("card_links.start", token=token, _external=True),
                # the customer's language is unknown: the mail is in the one staff are using
                locale=str(get_locale() or "en"),
            )
        except ServiceError as error:
            db.session.rollback()
            form.email.errors.append(error.message)
        else:
            flash(
                _(
                    "A link to add a card was sent to %(email)s. "
                    "It works once, for %(hours)d hours.",
                    email=form.email.data,
                    hours=payment_profiles.card_link_hours(),
                ),
                "success",
            )
            return redirect(url_for("staff.customer", customer_id=customer.id))
    g.card_link_form = form

    return _customer_page(customer), 422


bp.add_app_template_global(card_link_form, "card_link_form")
bp.add_app_template_global(payment_methods_of, "payment_methods_of")
