"""Staff sign-in, sign-out and password reset, on their own blueprint (``staff_auth``).

Staff accounts are separate from customer users: a staff member signs in at ``/staff/login``.
"""

from __future__ import annotations

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from flask_babel import gettext as _
from werkzeug.wrappers import Response

from portal.core import db
from portal.core.errors import ServiceError
from portal.features.identity.forms import (
    ForgotPasswordForm,
    LoginForm,
    ResetPasswordForm,
)
from portal.features.identity.login import sign_in, sign_out
from portal.features.identity.models import StaffUser
from portal.features.identity.services import auth
from portal.features.tenancy.models import Partner
from portal.web.access import StaffPrincipal, public
from portal.web.forms import ConfirmForm
from portal.web.rate_limits import rate_limited
from portal.web.redirects import safe_next

bp = Blueprint("staff_auth", __name__, url_prefix="/staff", template_folder="templates")


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
    return redirect(url_for("staff_auth.login"))


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
            return redirect(url_for("staff_auth.login"))
    return render_template("staff/reset_password.html", form=form)
