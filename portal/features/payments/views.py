"""Paying invoices and payment methods in the customer portal (Administrators and Finance
Managers), and the public page a staff-sent card link opens.

Views stay thin: :mod:`portal.features.payments.services.pay` pays and reads payments,
:mod:`portal.features.payments.services.cards` keeps cards. The session is scoped to the signed-in
customer (:mod:`portal.core.scoping`), so another customer's attempt, setup or card is not found.
Pages tell the truth about state: a payment is "Processing" until the gateway confirms it.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, g, redirect, request, url_for
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import select
from werkzeug.wrappers import Response

from portal.core import db
from portal.core.errors import ServiceError
from portal.core.roles import Permission
from portal.core.tokens import token_hash
from portal.features.billing.services import queries
from portal.features.payments.forms import PayForm, amount_text
from portal.features.payments.models import CardLink, CardSetup, CardSetupState, PaymentAttempt
from portal.features.payments.services import cards as payment_profiles
from portal.features.payments.services import gateway
from portal.features.payments.services import pay as payments
from portal.features.tenancy.branding.themes import render_page
from portal.features.tenancy.models import Customer, Partner
from portal.features.tenancy.services import partner_today
from portal.integrations.payments import SavedCardGateway
from portal.web.access import customer_required, public
from portal.web.forms import ConfirmForm
from portal.web.rate_limits import rate_limited

bp = Blueprint("payments", __name__, template_folder="templates")
links = Blueprint("card_links", __name__, template_folder="templates")


def _partner() -> Partner:
    return db.session.get_one(Partner, g.brand.id)


def _actor() -> str:
    return str(current_user.get_id())


def _role() -> str | None:
    membership = g.get("membership")
    return membership.role if membership is not None else None


# -- template helpers (the invoice page, the dashboard) -----------------------------------------


def pay_form_for(doc: queries.InvoiceDetail) -> PayForm:
    """The invoice page's pay form: the one just posted (with its errors), or the balance."""
    posted: PayForm | None = g.get("pay_form")
    if posted is not None:
        return posted
    form = PayForm(formdata=None)
    form.amount.data = amount_text(max(doc.balance_minor, 0), doc.invoice.currency)
    form.currency.data = doc.invoice.currency
    return form


def may_pay() -> bool:
    return gateway.may_pay(_role())


def gateway_keeps_cards() -> bool:
    return isinstance(gateway.configured_gateway(_partner()), SavedCardGateway)


def failed_autopay_for(invoice_id: int) -> PaymentAttempt | None:
    return payments.failed_autopay(db.session, invoice_id)


bp.add_app_template_global(pay_form_for, "pay_form_for")
bp.add_app_template_global(may_pay, "may_pay_invoices")
bp.add_app_template_global(gateway_keeps_cards, "gateway_keeps_cards")
bp.add_app_template_global(failed_autopay_for, "failed_autopay_for")
bp.add_app_template_global(payments.failure_message, "payment_failure_message")
bp.add_app_template_filter(payment_profiles.brand_label, "card_brand")


# -- paying ---------------------------------------------------------------------------------------


def _return_url(attempt_id: int) -> str:
    return url_for("payments.attempt", attempt_id=attempt_id, _external=True)


@bp.route("/invoices/<int:invoice_id>/pay", methods=["POST"])
@customer_required(Permission.VIEW_INVOICES)
def pay(invoice_id: int) -> Response | tuple[str, int]:
    today = partner_today(g.brand)
    if queries.invoice_detail(db.session, invoice_id, today=today) is None:
        abort(404)
    form = PayForm()
    if form.validate_on_submit():
        try:
            started = payments.pay_invoice(
                db.session,
                partner=_partner(),
                invoice_id=invoice_id,
                role=_role(),
                actor=_actor(),
                amount=form.amount_value,
                currency=form.currency.data or None,
                save_card=bool(form.save_card.data),
                return_url=_return_url,
                today=today,
            )
        except ServiceError as error:
            db.session.rollback()
            errors = form.amount.errors if error.field == "amount" else form.form_errors
            errors.append(error.message)
        else:
            if started.redirect_url:
                return redirect(started.redirect_url)
            return redirect(url_for(".attempt", attempt_id=started.attempt_id))
    g.pay_form = form
    doc = queries.invoice_detail(db.session, invoice_id, today=today)
    if doc is None:
        abort(404)
    return render_page("invoices/detail.html", doc=doc), 422


def _attempt_view(attempt_id: int) -> payments.AttemptView:
    view = payments.attempt_view(db.session, attempt_id, partner_today(g.brand))
    if view is None:
        abort(404)
    return view


@bp.route("/payments/<int:attempt_id>")
@customer_required(Permission.VIEW_INVOICES)
def attempt(attempt_id: int) -> str:
    """Where the gateway sends the payer back: the payment as the gateway says it stands."""
    view = _attempt_view(attempt_id)
    return render_page("payments/attempt.html", view=view, retry=_retry_form(view))


@bp.route("/payments/<int:attempt_id>/status")
@customer_required(Permission.VIEW_INVOICES)
def attempt_status(attempt_id: int) -> str:
    """The status part of the page, polled (htmx) while the payment is processing."""
    view = _attempt_view(attempt_id)
    return render_page("payments/_attempt_status.html", view=view, retry=_retry_form(view))


def _retry_form(view: payments.AttemptView) -> PayForm | None:
    if not view.failed or view.balance_minor <= 0:
        return None
    form = PayForm(formdata=None)
    amount = min(view.attempt.amount_minor, view.balance_minor)
    form.amount.data = amount_text(amount, view.attempt.currency)
    form.currency.data = view.attempt.currency
    return form


# -- payment methods ------------------------------------------------------------------------------


def _methods_page(**context: Any) -> str:
    customer_id = g.customer.id
    keeps_cards = gateway_keeps_cards()
    return render_page(
        "payments/methods.html",
        cards=payment_profiles.cards(db.session, customer_id),
        autopay=payment_profiles.autopay_contracts(db.session, customer_id),
        failed=payments.failed_charges(db.session, customer_id, partner_today(g.brand), 10),
        keeps_cards=keeps_cards,
        button=ConfirmForm(),
        **context,
    )


@bp.route("/payment-methods")
@customer_required(Permission.VIEW_INVOICES)
def methods() -> str:
    return _methods_page()


@bp.route("/payment-methods/add", methods=["POST"])
@customer_required(Permission.VIEW_INVOICES)
def add_card() -> Response | tuple[str, int]:
    if not ConfirmForm().validate_on_submit():
        abort(400)
    try:
        url = payment_profiles.start_card_setup(
            db.session,
            partner=_partner(),
            customer=g.customer,
            actor=_actor(),
            role=_role(),
            return_url=lambda setup_id: url_for(
                "payments.card_added", setup_id=setup_id, _external=True
            ),
        )
    except ServiceError as error:
        db.session.rollback()
        return _methods_page(problem=error.message), 422
    return redirect(url)


@bp.route("/payment-methods/setups/<int:setup_id>")
@customer_required(Permission.VIEW_INVOICES)
def card_added(setup_id: int) -> Response:
    """Where the gateway sends the customer back after the card form."""
    setup = db.session.scalars(
        select(CardSetup)
        .where(CardSetup.id == setup_id, CardSetup.card_link_id.is_(None))
        .execution_options(populate_existing=True)
    ).first()
    if setup is None:
        abort(404)
    try:
        result = payment_profiles.finish_card_setup(db.session, _partner(), setup, _actor())
    except ServiceError as error:
        flash(error.message, "danger")
        return redirect(url_for(".methods"))
    if result.state is CardSetupState.SUCCEEDED and result.profile is not None:
        card = result.profile
        flash(
            _(
                "%(brand)s ending in %(last4)s is saved.",
                brand=payment_profiles.brand_label(card.brand),
                last4=card.last4,
            ),
            "success",
        )
    elif result.state is CardSetupState.FAILED:
        flash(
            _("No card was saved: %(reason)s", reason=result.reason or _("it was declined.")),
            "danger",
        )
    else:
        flash(_("No card was saved yet: the card form was not finished."), "warning")
    return redirect(url_for(".methods"))


@bp.route("/payment-methods/<int:profile_id>/default", methods=["POST"])
@customer_required(Permission.VIEW_INVOICES)
def make_default(profile_id: int) -> Response | tuple[str, int]:
    if all(card.id != profile_id for card in payment_profiles.cards(db.session, g.customer.id)):
        abort(404)
    if not ConfirmForm().validate_on_submit():
        abort(400)
    try:
        card = payment_profiles.set_default(
            db.session, g.customer.id, profile_id, _role(), _actor()
        )
    except ServiceError as error:
        db.session.rollback()
        return _methods_page(problem=error.message), 422
    flash(
        _(
            "Automatic payments now use %(brand)s ending in %(last4)s.",
            brand=payment_profiles.brand_label(card.brand),
            last4=card.last4,
        ),
        "success",
    )
    return redirect(url_for(".methods"))


@bp.route("/payment-methods/<int:profile_id>/remove", methods=["GET", "POST"])
@customer_required(Permission.VIEW_INVOICES)
def remove_card(profile_id: int) -> Response | str | tuple[str, int]:
    cards = payment_profiles.cards(db.session, g.customer.id)
    card = next((c for c in cards if c.id == profile_id), None)
    if card is None:
        abort(404)
    form = ConfirmForm()
    if request.method == "POST" and form.validate_on_submit():
        try:
            successor = payment_profiles.remove_card(
                db.session, _partner(), g.customer.id, profile_id, _role(), _actor()
            )
        except ServiceError as error:
            db.session.rollback()
            return render_page(
                "payments/remove.html", card=card, others=cards, form=form, problem=error.message
            ), 422
        message = _(
            "%(brand)s ending in %(last4)s is removed.",
            brand=payment_profiles.brand_label(card.brand),
            last4=card.last4,
        )
        if successor is not None:
            message += " " + _(
                "Automatic payments now use %(brand)s ending in %(last4)s.",
                brand=payment_profiles.brand_label(successor.brand),
                last4=successor.last4,
            )
        flash(message, "success")
        return redirect(url_for(".methods"))
    others = [c for c in cards if c.id != profile_id]
    return render_page("payments/remove.html", card=card, others=others, form=form)


# -- the card link (no sign-in) -------------------------------------------------------------------


def _link_by_token(token: str, live: bool = True) -> CardLink | None:
    if live:
        return payment_profiles.find_card_link(db.session, g.brand.id, token)
    if not token or len(token) > 200:
        return None
    return db.session.scalars(
        select(CardLink)
        .where(CardLink.token_hash == token_hash(token), CardLink.partner_id == g.brand.id)
        .execution_options(unscoped_customer=True, populate_existing=True)
    ).first()


def _link_customer(card_link: CardLink) -> Customer:
    return payment_profiles.customer_of_link(db.session, card_link)


@links.route("/card-link/<token>", methods=["GET", "POST"])
@rate_limited("PORTAL_RATELIMIT_INVITE")
@public
def start(token: str) -> Response | str | tuple[str, int]:
    """The page a card link opens: who it is for, and the button to the gateway's card form."""
    card_link = _link_by_token(token)
    if card_link is None:
        return render_page("payments/card_link_invalid.html"), 404
    customer = _link_customer(card_link)
    form = ConfirmForm()
    problem = None
    if request.method == "POST" and form.validate_on_submit():
        try:
            url = payment_profiles.start_card_setup(
                db.session,
                partner=_partner(),
                customer=customer,
                actor=f"card-link:{card_link.id}",
                card_link=card_link,
                # the setup's id comes back with the customer: two tabs of one link each
                # finish their own setup
                return_url=lambda setup_id: url_for(
                    "card_links.finish", token=token, s=setup_id, _external=True
                ),
            )
        except ServiceError as error:
            db.session.rollback()
            problem = error.message
        else:
            return redirect(url)
    return render_page(
        "payments/card_link.html",
        card_link=card_link,
        link_customer=customer,
        form=form,
        problem=problem,
    )


@links.route("/card-link/<token>/done")
@rate_limited("PORTAL_RATELIMIT_INVITE")
@public
def finish(token: str) -> Response | str | tuple[str, int]:
    """Where the gateway sends the customer back: the card saved (the link used up), or why not."""
    card_link = _link_by_token(token, live=False)
    wanted = request.args.get("s", "")
    setup = (
        payment_profiles.link_setup(
            db.session, card_link, int(wanted) if wanted.isdigit() else None
        )
        if card_link
        else None
    )
    if card_link is None or setup is None:
        return render_page("payments/card_link_invalid.html"), 404
    try:
        result = payment_profiles.finish_card_setup(
            db.session, _partner(), setup, f"card-link:{card_link.id}"
        )
    except ServiceError as error:  # the gateway changed meanwhile: nothing can be saved
        db.session.rollback()
        result = payment_profiles.SetupResult(CardSetupState.FAILED, reason=error.message)
    live = payment_profiles.find_card_link(db.session, g.brand.id, token) is not None
    return render_page(
        "payments/card_link_done.html",
        result=result,
        link_customer=_link_customer(card_link),
        token=token,
        live=live,
    )
