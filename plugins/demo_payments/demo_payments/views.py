"""The demo gateway's own pages, under ``/p/demo_payments/``: the test card form, the card-saving
form, and their extra authentication steps. All are public (a customer arrives from the portal
with an unguessable ref, as on a real gateway's hosted page) and CSRF-protected."""

from __future__ import annotations

from typing import cast

from flask import Blueprint, abort, current_app, redirect, url_for
from flask_babel import gettext as _
from werkzeug.wrappers import Response

from demo_payments.forms import AuthenticateForm, CardForm
from demo_payments.gateway import DemoPaymentGateway, PaymentView, SetupView
from portal.features.tenancy.branding import render_page
from portal.integrations.payments import PaymentStatus
from portal.web.access import public

bp = Blueprint("demo_payments", __name__, template_folder="templates")
EXTENSION = "demo_payments.gateway"


def gateway() -> DemoPaymentGateway:
    return cast(DemoPaymentGateway, current_app.extensions[EXTENSION])


def _payment(gateway_ref: str) -> PaymentView:
    payment = gateway().find(gateway_ref)
    if payment is None:
        abort(404)
    return payment


def _next_step(payment: PaymentView) -> Response:
    if payment.status == PaymentStatus.REQUIRES_ACTION:
        return redirect(url_for(".authenticate", gateway_ref=payment.gateway_ref))
    if payment.final:
        return redirect(payment.back_url)
    return redirect(url_for(".pay", gateway_ref=payment.gateway_ref))


@bp.route("/pay/<gateway_ref>", methods=["GET", "POST"])
@public
def pay(gateway_ref: str) -> Response | str:
    payment = _payment(gateway_ref)
    if payment.status != PaymentStatus.PROCESSING:
        return _next_step(payment)
    form = CardForm()
    if form.validate_on_submit():
        moved = gateway().pay_with_card(gateway_ref, form.card_number.data)
        if moved is not None:
            return _next_step(moved)
        form.card_number.errors.append(
            _(
                "This is not one of the demo test cards, so nothing was charged. "
                "Use one of the numbers listed below."
            )
        )
    return render_page("demo_payments/pay.html", form=form, payment=payment)


@bp.route("/pay/<gateway_ref>/authenticate", methods=["GET", "POST"])
@public
def authenticate(gateway_ref: str) -> Response | str:
    payment = _payment(gateway_ref)
    if payment.status != PaymentStatus.REQUIRES_ACTION:
        return _next_step(payment)
    form = AuthenticateForm()
    if form.validate_on_submit() and (form.approve.data or form.fail.data):
        moved = gateway().authenticate(gateway_ref, approve=bool(form.approve.data))
        if moved is not None:
            return _next_step(moved)
    return render_page("demo_payments/authenticate.html", form=form, payment=payment)


def _setup(gateway_ref: str) -> SetupView:
    setup = gateway().find_setup(gateway_ref)
    if setup is None:
        abort(404)
    return setup


def _next_setup_step(setup: SetupView) -> Response:
    if setup.status == PaymentStatus.REQUIRES_ACTION:
        return redirect(url_for(".authenticate_setup", gateway_ref=setup.gateway_ref))
    if setup.final:
        return redirect(setup.back_url)
    return redirect(url_for(".setup", gateway_ref=setup.gateway_ref))


@bp.route("/setup/<gateway_ref>", methods=["GET", "POST"])
@public
def setup(gateway_ref: str) -> Response | str:
    found = _setup(gateway_ref)
    if found.status != PaymentStatus.PROCESSING:
        return _next_setup_step(found)
    form = CardForm()
    if form.validate_on_submit():
        moved = gateway().save_with_card(gateway_ref, form.card_number.data)
        if moved is not None:
            return _next_setup_step(moved)
        form.card_number.errors.append(
            _(
                "This is not one of the demo test cards, so nothing was saved. "
                "Use one of the numbers listed below."
            )
        )
    return render_page("demo_payments/setup.html", form=form, setup=found)


@bp.route("/setup/<gateway_ref>/authenticate", methods=["GET", "POST"])
@public
def authenticate_setup(gateway_ref: str) -> Response | str:
    found = _setup(gateway_ref)
    if found.status != PaymentStatus.REQUIRES_ACTION:
        return _next_setup_step(found)
    form = AuthenticateForm()
    if form.validate_on_submit() and (form.approve.data or form.fail.data):
        moved = gateway().authenticate_setup(gateway_ref, approve=bool(form.approve.data))
        if moved is not None:
            return _next_setup_step(moved)
    return render_page("demo_payments/authenticate_setup.html", form=form, setup=found)
