"""The account page: company details, users and roles, invitations, and the user's sessions."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, g, redirect, session, url_for
from flask_babel import gettext as _
from flask_babel import ngettext
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.orm import joinedload
from werkzeug.wrappers import Response

from portal import db
from portal.branding import render_page
from portal.domain.roles import CustomerRole, Permission
from portal.extensions import rate_limited
from portal.models import Invitation, Membership, Partner
from portal.scoping import get_or_404
from portal.services import ServiceError, people
from portal.web.access import customer_required
from portal.web.forms import ConfirmForm, InviteForm, RoleForm, role_choices, role_label
from portal.web.session_store import end_sessions_of, hash_session_id, sessions_of

bp = Blueprint("account", __name__, url_prefix="/account")


def _partner() -> Partner:
    return db.session.get_one(Partner, g.brand.id)


def _actor() -> str:
    return str(current_user.get_id())


# built once; the tenant scope adds the customer's criteria when it runs
MEMBERS = select(Membership).options(joinedload(Membership.user)).order_by(Membership.id)


def _members() -> list[Membership]:
    return list(db.session.scalars(MEMBERS))


def _render(invite_form: InviteForm | None = None) -> str:
    return render_page(
        "account/account.html",
        members=_members(),
        invitations=people.pending_invitations(db.session, g.customer.id),
        invite_form=invite_form or InviteForm(formdata=None),
        role_choices=role_choices(),
        role_label=role_label,
    )


@bp.route("/")
@customer_required(Permission.MANAGE_USERS)
def overview() -> str:
    return _render()


@bp.route("/invitations", methods=["POST"])
@rate_limited("PORTAL_RATELIMIT_INVITE")
@customer_required(Permission.MANAGE_USERS)
def invite() -> Response | tuple[str, int]:
    form = InviteForm()
    if form.validate_on_submit():
        try:
            people.invite(
                db.session,
                _partner(),
                g.customer,
                form.email.data,
                CustomerRole(form.role.data),
                _actor(),
                current_user.account.name,
            )
        except ServiceError as error:
            form.email.errors.append(error.message)
        else:
            flash(_("Invitation sent to %(email)s.", email=form.email.data), "success")
            return redirect(url_for("account.overview"))
    return _render(form), 422


@bp.route("/invitations/<int:invitation_id>/revoke", methods=["POST"])
@customer_required(Permission.MANAGE_USERS)
def revoke_invitation(invitation_id: int) -> Response:
    invitation = get_or_404(db.session, Invitation, invitation_id)
    if ConfirmForm().validate_on_submit():
        people.revoke_invitation(db.session, _partner(), invitation, _actor())
        flash(_("Invitation to %(email)s withdrawn.", email=invitation.email), "info")
    return redirect(url_for("account.overview"))


@bp.route("/users/<int:membership_id>/role", methods=["POST"])
@customer_required(Permission.MANAGE_USERS)
def change_role(membership_id: int) -> Response:
    membership = get_or_404(db.session, Membership, membership_id)
    form = RoleForm()
    if not form.validate_on_submit():
        flash(_("Choose a role."), "danger")
        return redirect(url_for("account.overview"))
    try:
        people.change_role(
            db.session, _partner(), membership, CustomerRole(form.role.data), _actor()
        )
    except ServiceError as error:
        flash(error.message, "danger")
    else:
        flash(
            _(
                "%(name)s is now %(role)s.",
                name=membership.user.name,
                role=role_label(membership.role),
            ),
            "success",
        )
    return redirect(url_for("account.overview"))


@bp.route("/users/<int:membership_id>/remove", methods=["POST"])
@customer_required(Permission.MANAGE_USERS)
def remove_user(membership_id: int) -> Response:
    membership = get_or_404(db.session, Membership, membership_id)
    if not ConfirmForm().validate_on_submit():
        abort(400)
    name = membership.user.name
    try:
        people.remove_member(db.session, _partner(), membership, _actor())
    except ServiceError as error:
        flash(error.message, "danger")
    else:
        flash(_("%(name)s no longer has access to this account.", name=name), "success")
    return redirect(url_for("account.overview"))


@bp.route("/security")
@customer_required(Permission.VIEW_DASHBOARD)
def security() -> str:
    current_hash = hash_session_id(getattr(session, "sid", "") or "")
    return render_page(
        "account/security.html",
        sessions=sessions_of(current_app, _actor()),
        current_hash=current_hash,
        confirm_form=ConfirmForm(),
    )


@bp.route("/security/sign-out-others", methods=["POST"])
@customer_required(Permission.VIEW_DASHBOARD)
def sign_out_others() -> Response:
    if ConfirmForm().validate_on_submit():
        ended = end_sessions_of(
            current_app,
            _actor(),
            keep_sid=getattr(session, "sid", None),
        )
        flash(
            ngettext(
                "Signed out of %(num)d other session.",
                "Signed out of %(num)d other sessions.",
                ended,
            ),
            "success",
        )
    return redirect(url_for("account.security"))
