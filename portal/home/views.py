"""The customer portal's main pages: dashboard and the sections later features fill in."""

from __future__ import annotations

from flask import Blueprint, abort, g, redirect, session, url_for
from flask_babel import lazy_gettext as _l
from werkzeug.wrappers import Response

from portal.core import db
from portal.core.roles import CustomerRole, Permission, customer_may
from portal.features.identity.services import people
from portal.features.payments.services import gateway, pay
from portal.features.tenancy.branding.themes import render_page
from portal.features.tenancy.services import partner_today
from portal.integrations.registry import integrations
from portal.web.access import customer_required
from portal.web.forms import ConfirmForm, role_label

bp = Blueprint("pages", __name__, template_folder="templates")

ROLE_HELP = {
    CustomerRole.ADMINISTRATOR: _l("You can manage users, subscriptions, usage and invoices."),
    CustomerRole.SUBSCRIPTION_MANAGER: _l("You can manage subscriptions and see usage."),
    CustomerRole.FINANCE_MANAGER: _l("You can see invoices and pay them."),
}


@bp.route("/")
@customer_required(Permission.VIEW_DASHBOARD)
def dashboard() -> str:
    user_count, invitations = people.headcount(db.session, g.customer.id)
    if g.membership.role != CustomerRole.ADMINISTRATOR:
        invitations = 0
    owed = None
    if customer_may(g.membership.role, Permission.VIEW_INVOICES):
        may_pay = gateway.may_pay(g.membership.role)
        owed = pay.owed(db.session, g.customer.id, partner_today(g.brand), failed=may_pay)
    return render_page(
        "portal/dashboard.html",
        billing=owed.summary if owed else None,
        failed_charges=owed.failed if owed else [],
        panels=integrations().dashboard_panels(g.customer.id),
        user_count=user_count,
        pending_invitations=invitations,
        role_label=role_label,
        role_help=ROLE_HELP[CustomerRole(g.membership.role)],
    )


@bp.route("/usage")
@customer_required(Permission.VIEW_USAGE)
def usage() -> str:
    return render_page("portal/usage.html")


@bp.route("/accounts/<int:customer_id>/switch", methods=["POST"])
@customer_required(Permission.VIEW_DASHBOARD)
def switch_account(customer_id: int) -> Response:
    """Work on another account the user belongs to (only those: g.memberships is theirs)."""
    if not ConfirmForm().validate_on_submit():
        abort(400)
    if customer_id not in {m.customer_id for m in g.memberships}:
        abort(404)
    session["customer_id"] = customer_id
    return redirect(url_for("pages.dashboard"))
