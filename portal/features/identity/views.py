"""Customer sign-in, sign-out, password reset, invitations and the language switch."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, request, session, url_for
from flask_babel import gettext as _
from werkzeug.wrappers import Response

from portal.core import db
from portal.core.errors import ServiceError
from portal.core.extensions import SUPPORTED_LOCALES
from portal.features.identity.forms import (
    AcceptInvitationForm,
    ForgotPasswordForm,
    LanguageForm,
    LoginForm,
    ResetPasswordForm,
)
from portal.features.identity.login import sign_in, sign_out
from portal.features.identity.models import User
from portal.features.identity.services import auth, people
from portal.features.tenancy.branding.brand import current_brand
from portal.features.tenancy.branding.themes import render_page
from portal.features.tenancy.models import Partner
from portal.web.access import CustomerPrincipal, public
from portal.web.forms import ConfirmForm, role_label
from portal.web.rate_limits import rate_limited
from portal.web.redirects import safe_next

bp = Blueprint("auth", __name__, template_folder="templates")


def current_partner() -> Partner:
    return db.session.get_one(Partner, current_brand().id)


@bp.route("/login", methods=["GET", "POST"])
@rate_limited("PORTAL_RATELIMIT_LOGIN_IP", methods=("POST",))
@rate_limited("PORTAL_RATELIMIT_LOGIN_ACCOUNT", per="account", methods=("POST",))
@public
def login() -> Response | str:
    form = LoginForm()
    if request.method == "GET":
        form.next.data = request.args.get("next", "")
    expired = getattr(session, "expired", False)
    if form.validate_on_submit():
        user = auth.authenticate(
            db.session, current_partner(), User, form.email.data, form.password.data
        )
        if user is not None:
            assert isinstance(user, User)
            sign_in(CustomerPrincipal(user))
            return redirect(safe_next(form.next.data, url_for("pages.dashboard")))
        form.form_errors.append(_("That email and password do not match an account."))
    return render_page("auth/login.html", form=form, expired=expired)


@bp.route("/logout", methods=["POST"])
@public
def logout() -> Response:
    form = ConfirmForm()
    if form.validate_on_submit():
        sign_out()
        flash(_("You have signed out."), "info")
    return redirect(url_for("auth.login"))


@bp.route("/forgot-password", methods=["GET", "POST"])
@rate_limited("PORTAL_RATELIMIT_RESET_IP", methods=("POST",))
@rate_limited("PORTAL_RATELIMIT_RESET_ACCOUNT", per="account", methods=("POST",))
@public
def forgot_password() -> Response | str:
    form = ForgotPasswordForm()
    if form.validate_on_submit():
        auth.request_reset(db.session, current_partner(), User, form.email.data)
        return render_page("auth/reset_sent.html", email=form.email.data)
    return render_page("auth/forgot_password.html", form=form)


@bp.route("/reset-password/<token>", methods=["GET", "POST"])
@rate_limited("PORTAL_RATELIMIT_RESET_IP")
@public
def reset_password(token: str) -> Response | str:
    if auth.valid_reset_token(db.session, User, token) is None:
        return render_page("auth/link_invalid.html"), 400  # type: ignore[return-value]
    form = ResetPasswordForm()
    if form.validate_on_submit():
        try:
            auth.reset_password(db.session, current_partner(), User, token, form.password.data)
        except ServiceError as error:
            form.password.errors.append(error.message)
        else:
            flash(_("Your password has been changed. Sign in with it now."), "success")
            return redirect(url_for("auth.login"))
    return render_page("auth/reset_password.html", form=form)


@bp.route("/invitations/<token>", methods=["GET", "POST"])
@rate_limited("PORTAL_RATELIMIT_INVITE")
@public
def accept_invitation(token: str) -> Response | str:
    invitation = people.find_invitation(db.session, token)
    if invitation is None:
        return render_page("auth/link_invalid.html"), 400  # type: ignore[return-value]
    known = people.existing_user(db.session, invitation.email) is not None
    form = AcceptInvitationForm()
    if form.validate_on_submit():
        try:
            user = people.accept_invitation(
                db.session, current_partner(), token, form.name.data or "", form.password.data
            )
        except ServiceError as error:
            field = getattr(form, error.field or "", None)
            (field.errors if field is not None else form.form_errors).append(error.message)
        else:
            sign_in(CustomerPrincipal(user))
            session["customer_id"] = invitation.customer_id
            flash(_("Welcome to %(name)s.", name=invitation.customer.name), "success")
            return redirect(url_for("pages.dashboard"))
    return render_page(
        "auth/accept_invitation.html",
        form=form,
        invitation=invitation,
        known=known,
        role=role_label(invitation.role),
    )


@bp.route("/language", methods=["POST"])
@public
def set_language() -> Response:
    form = LanguageForm()
    if form.validate_on_submit() and form.locale.data in SUPPORTED_LOCALES:
        session["locale"] = form.locale.data
    return redirect(safe_next(form.next.data, url_for("pages.dashboard")))
