"""The account page: company details, users and roles, invitations, and the user's sessions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, abort, current_app, flash, g, redirect, session, url_for
from flask_babel import gettext as _
from flask_babel import ngettext
from flask_login import current_user
from sqlalchemy import (
    CompoundSelect,
    Integer,
    Row,
    bindparam,
    literal,
    null,
    select,
    type_coerce,
    union_all,
)
from werkzeug.wrappers import Response

from portal.core import db
from portal.core.db import UTCDateTime, utcnow
from portal.core.errors import ServiceError
from portal.core.extensions import _request_translations
from portal.core.roles import CustomerRole, Permission
from portal.core.scoping import get_or_404
from portal.features.identity.forms import InviteForm, RoleForm
from portal.features.identity.models import Invitation, Membership, User
from portal.features.identity.services import people
from portal.features.identity.session_store import end_sessions_of, hash_session_id, sessions_of
from portal.features.tenancy.branding.themes import render_page
from portal.features.tenancy.models import Partner
from portal.web.access import customer_required
from portal.web.forms import ConfirmForm, role_label
from portal.web.rate_limits import rate_limited

bp = Blueprint("account", __name__, url_prefix="/account", template_folder="templates")


def _partner() -> Partner:
    return db.session.get_one(Partner, g.brand.id)


def _actor() -> str:
    return str(current_user.get_id())


MEMBER, INVITATION = 0, 1  # the rows' kind in the account page's one query


def _people_query() -> CompoundSelect[Any]:
    """The account's members (by membership id), then its pending invitations (newest first).

    One round trip of plain columns instead of two queries of entities: the page only shows
    them. Built once with bound parameters; the customer filter is explicit and the tenant
    scope still adds its own criteria to both halves when it runs. "Pending" is the rule of
    :func:`portal.features.identity.services.people.pending_invitations`: not accepted, not
    revoked, not expired.
    """
    customer_id = bindparam("customer_id", type_=Integer)
    no_time = type_coerce(null(), UTCDateTime())
    members = (
        select(
            literal(MEMBER).label("kind"),
            Membership.id,
            Membership.user_id,
            User.name,
            User.email,
            Membership.role,
            no_time.label("expires_at"),
            Membership.id.label("member_order"),
            no_time.label("created_at"),
        )
        .join(User, Membership.user_id == User.id)
        .where(Membership.customer_id == customer_id)
    )
    invitations = select(
        literal(INVITATION),
        Invitation.id,
        null(),
        null(),
        Invitation.email,
        Invitation.role,
        Invitation.expires_at,
        null(),
        Invitation.created_at,
    ).where(
        Invitation.customer_id == customer_id,
        Invitation.accepted_at.is_(None),
        Invitation.revoked_at.is_(None),
        Invitation.expires_at > bindparam("now", type_=UTCDateTime()),
    )
    both: CompoundSelect[Any] = union_all(members, invitations)
    order = both.selected_columns
    return both.order_by(order.kind, order.member_order, order.created_at.desc())


PEOPLE = _people_query()
URL_ID_MARKER = 987_654_321  # stands for the id while _urls_by_id builds a URL once


@dataclass(frozen=True, slots=True)
class MemberRow:
    """One row of the users table, with its links and the labels that name the person."""

    id: int
    user_id: int
    name: str
    email: str
    role: CustomerRole
    role_url: str
    remove_url: str
    role_field_label: str  # "Role of <name>", for screen readers
    remove_button_label: str  # "Remove <name>", for screen readers


def _urls_by_id(endpoint: str, key: str) -> Callable[[int], str]:
    """``url_for(endpoint, <key>=id)`` for any id, at the cost of one ``url_for``."""
    values: dict[str, Any] = {key: URL_ID_MARKER}
    head, marker, tail = url_for(endpoint, **values).rpartition(str(URL_ID_MARKER))
    if not marker:
        raise ValueError(f"{endpoint} does not put {key} in its path")
    return lambda object_id: f"{head}{object_id}{tail}"


def _people(customer_id: int) -> tuple[list[MemberRow], list[Row[Any]]]:
    """The members, ready to show, and the pending invitations (id, email, role, expires_at).

    A member's links and screen-reader labels are built here from formats looked up once per
    page: in the template, a call of ``_()`` or ``url_for`` per row cost more than the rest of
    the row.
    """
    translations = _request_translations()  # ugettext: a default pybabel keyword, extracted
    role_of = translations.ugettext("Role of %(name)s")
    remove = translations.ugettext("Remove %(name)s")
    role_url = _urls_by_id("account.change_role", "membership_id")
    remove_url = _urls_by_id("account.remove_user", "membership_id")
    members: list[MemberRow] = []
    invitations: list[Row[Any]] = []
    for row in db.session.execute(PEOPLE, {"customer_id": customer_id, "now": utcnow()}):
        if row.kind == INVITATION:
            invitations.append(row)
            continue
        named = {"name": row.name}
        members.append(
            MemberRow(
                id=row.id,
                user_id=row.user_id,
                name=row.name,
                email=row.email,
                role=row.role,
                role_url=role_url(row.id),
                remove_url=remove_url(row.id),
                role_field_label=role_of % named,
                remove_button_label=remove % named,
            )
        )
    return members, invitations


def _render(invite_form: InviteForm | None = None) -> str:
    members, invitations = _people(g.customer.id)
    invite_form = invite_form or InviteForm(formdata=None)
    return render_page(
        "account/account.html",
        members=members,
        invitations=invitations,
        invite_form=invite_form,
        role_options=[(choice.value, choice.label) for choice in invite_form.role.choices],
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
