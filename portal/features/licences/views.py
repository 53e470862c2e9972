"""Subscriptions in the customer portal: list, detail with the change log, quantity changes
with a price preview, buying from the catalogue, and the Microsoft Customer Agreement.

Views stay thin: the rules live in :mod:`portal.features.licences.services.subscriptions` and
:mod:`portal.features.licences.services.agreements`, which refuse whatever the browser sent if it
breaks one.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, g, redirect, request, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from portal.core import db
from portal.core.db import utcnow
from portal.core.errors import ServiceError, _
from portal.core.roles import Permission, customer_may
from portal.core.scoping import get_or_404
from portal.features.catalogue.models import Product
from portal.features.identity.models import User
from portal.features.licences.forms import (
    AgreementForm,
    AutoRenewForm,
    PurchaseForm,
    QuantityForm,
    RenewalQuantityForm,
)
from portal.features.licences.models import AttestationState, Subscription
from portal.features.licences.rules import HOLDING_STATES, ChangeState
from portal.features.licences.services import agreements, renewals
from portal.features.licences.services import subscriptions as licences
from portal.features.tenancy.branding.themes import render_page
from portal.features.tenancy.models import Partner
from portal.features.tenancy.services import local_today
from portal.web.access import customer_required

bp = Blueprint("subscriptions", __name__, template_folder="templates")

Page = str | tuple[str, int]


def _partner() -> Partner:
    return db.session.get_one(Partner, g.brand.id)


def _user() -> User:
    account: User = current_user.account
    return account


def _may_change() -> bool:
    return customer_may(g.membership.role, Permission.CHANGE_LICENCES)


# -- list and detail ------------------------------------------------------------------------


@bp.route("/subscriptions")
@customer_required(Permission.VIEW_SUBSCRIPTIONS)
def index() -> str:
    subscriptions = licences.subscriptions_of(db.session, g.customer)
    pending = licences.pending_changes(db.session, [s.id for s in subscriptions])
    now = utcnow()
    windows = {s.id: licences.window_seats(db.session, s, now) for s in subscriptions}
    return render_page(
        "subscriptions/index.html",
        subscriptions=subscriptions,
        pending=pending,
        windows=windows,
        may_change=_may_change(),
        agreement_needed=_agreement_needed(),
    )


@bp.route("/subscriptions/<int:subscription_id>")
@customer_required(Permission.VIEW_SUBSCRIPTIONS)
def detail(subscription_id: int) -> Page:
    subscription = _subscription(subscription_id)
    return _detail_page(subscription, QuantityForm(formdata=None, version=subscription.version))


@bp.route("/subscriptions/<int:subscription_id>/changes")
@customer_required(Permission.VIEW_SUBSCRIPTIONS)
def changes(subscription_id: int) -> str:
    """The change log alone: the detail page reloads it while a change is on its way."""
    subscription = _subscription(subscription_id)
    return render_page("subscriptions/_changes.html", **_change_log(subscription))


def _subscription(subscription_id: int) -> Subscription:
    subscription = get_or_404(db.session, Subscription, subscription_id)
    if subscription.parent_id is not None:  # a bundle's part is shown with its bundle
        return _subscription(subscription.parent_id)
    return subscription


def _change_log(subscription: Subscription) -> dict[str, Any]:
    log = licences.change_log(db.session, subscription)
    return {
        "subscription": subscription,
        "changes": log,
        "in_flight": any(change.state in HOLDING_STATES for change in log),
    }


def _detail_page(
    subscription: Subscription,
    form: QuantityForm,
    error: str | None = None,
    status: int = 200,
    renewal_form: RenewalQuantityForm | None = None,
) -> Page:
    page = render_page(
        "subscriptions/detail.html",
        form=form,
        error=error,
        renewal_form=renewal_form or RenewalQuantityForm(formdata=None),
        instructions=renewals.instructions_of(db.session, subscription),
        target=licences.target_quantity(db.session, subscription),
        window=licences.window_seats(db.session, subscription, utcnow()),
        may_change=_may_change(),
        agreement_needed=_agreement_needed() and subscription.product.requires_mca,
        **_change_log(subscription),
    )
    return page if status == 200 else (page, status)


def _agreement_needed() -> bool:
    return not agreements.is_confirmed(db.session, g.customer)


# -- quantity changes -----------------------------------------------------------------------------


@bp.route("/subscriptions/<int:subscription_id>/preview", methods=["POST"])
@customer_required(Permission.CHANGE_LICENCES)
def preview(subscription_id: int) -> Page:
    """Step one: what the new quantity would cost or credit, or why it is not allowed."""
    subscription = _subscription(subscription_id)
    form = QuantityForm()
    if not form.validate_on_submit():
        return _detail_page(subscription, form, status=422)
    try:  # the same gate as the confirmation: no price for a change that would be refused
        licences.ensure_changeable(db.session, g.customer, subscription)
    except ServiceError as refused:
        return _detail_page(subscription, form, error=refused.message, status=422)
    result = licences.preview_quantity(db.session, _partner(), subscription, form.quantity.data)
    if not result.allowed:
        message = licences.refusal_message(result.decision, subscription)
        form.quantity.errors = [message]
        return _detail_page(subscription, form, status=422)
    return render_page(
        "subscriptions/confirm.html",
        subscription=subscription,
        form=form,
        preview=result,
        effect=licences.describe_effect(result),
        local_today=local_today(_partner(), utcnow()),
        stale=form.version_number() != subscription.version,
    )


@bp.route("/subscriptions/<int:subscription_id>/change", methods=["POST"])
@customer_required(Permission.CHANGE_LICENCES)
def change(subscription_id: int) -> Response | Page:
    """Step two: record the confirmed change; it is provisioned in the background."""
    subscription = _subscription(subscription_id)
    form = QuantityForm()
    if not form.validate_on_submit():
        return _detail_page(subscription, form, status=422)
    try:
        recorded = licences.request_quantity(
            db.session,
            _partner(),
            g.customer,
            subscription,
            form.quantity.data,
            form.version_number(),
            _user(),
        )
    except licences.StaleSubscription as stale:
        fresh = QuantityForm(formdata=None, version=subscription.version)
        return _detail_page(subscription, fresh, error=stale.message, status=409)
    except ServiceError as refused:
        db.session.rollback()
        return _detail_page(subscription, form, error=refused.message, status=422)
    db.session.commit()
    flash(_state_message(recorded.state, recorded.hold_reason), "success")
    return redirect(url_for(".detail", subscription_id=subscription.id))


def _state_message(state: ChangeState, hold_reason: str | None) -> str:
    if state is ChangeState.AWAITING and hold_reason == "credit_hold":
        return _(
            "Your change is recorded and waiting: your account is on credit hold, so nothing is "
            "sent to Microsoft until %(brand)s lifts the hold.",
            brand=g.brand.name,
        )
    if state is ChangeState.AWAITING:
        return _("Your change is recorded; it is sent once the change before it is done.")
    return _("Your change is recorded and is being sent to Microsoft.")


# -- renewal -------------------------------------------------------------------------------------


@bp.route("/subscriptions/<int:subscription_id>/auto-renew", methods=["POST"])
@customer_required(Permission.CHANGE_LICENCES)
def auto_renew(subscription_id: int) -> Response | Page:
    """Turn automatic renewal on or off; sent to the provider in the background."""
    subscription = _subscription(subscription_id)
    form = AutoRenewForm()
    if not form.validate_on_submit():
        message = _("Choose whether the subscription renews automatically.")
        return _renewal_refused(subscription, message, 422)
    turn_on = form.auto_renew.data == "on"
    try:
        renewals.set_auto_renew(
            db.session,
            _partner(),
            g.customer,
            subscription,
            turn_on,
            form.version_number(),
            _user(),
        )
    except licences.StaleSubscription as stale:
        return _renewal_refused(subscription, stale.message, 409)
    except ServiceError as refused:
        db.session.rollback()
        return _renewal_refused(subscription, refused.message, 422)
    db.session.commit()
    flash(
        _("Turning automatic renewal on: this is being sent to Microsoft.")
        if turn_on
        else _("Turning automatic renewal off: this is being sent to Microsoft."),
        "success",
    )
    return redirect(url_for(".detail", subscription_id=subscription.id))


@bp.route("/subscriptions/<int:subscription_id>/renewal-quantity", methods=["POST"])
@customer_required(Permission.CHANGE_LICENCES)
def renewal_quantity(subscription_id: int) -> Response | Page:
    """Schedule the number of seats of the next term; sent to the provider in the background."""
    subscription = _subscription(subscription_id)
    form = RenewalQuantityForm()
    if not form.validate_on_submit():
        return _renewal_refused(subscription, None, 422, form)
    try:
        renewals.schedule_renewal_quantity(
            db.session,
            _partner(),
            g.customer,
            subscription,
            form.renewal_quantity.data,
            form.version_number(),
            _user(),
        )
    except licences.StaleSubscription as stale:
        return _renewal_refused(subscription, stale.message, 409)
    except ServiceError as refused:
        db.session.rollback()
        if refused.field == "quantity":
            form.renewal_quantity.errors = [refused.message]
            return _renewal_refused(subscription, None, 422, form)
        return _renewal_refused(subscription, refused.message, 422, form)
    db.session.commit()
    flash(
        _(
            "%(num)d seats from the renewal: this is being sent to Microsoft.",
            num=form.renewal_quantity.data,
        ),
        "success",
    )
    return redirect(url_for(".detail", subscription_id=subscription.id))


def _renewal_refused(
    subscription: Subscription,
    error: str | None,
    status: int,
    form: RenewalQuantityForm | None = None,
) -> Page:
    quantity_form = QuantityForm(formdata=None, version=subscription.version)
    return _detail_page(subscription, quantity_form, error, status, renewal_form=form)


# -- buying ---------------------------------------------------------------------------------------


@bp.route("/subscriptions/buy")
@customer_required(Permission.CHANGE_LICENCES)
def catalogue() -> str:
    return render_page(
        "subscriptions/catalogue.html",
        products=licences.purchasable_products(db.session, g.customer),
        currency=g.customer.default_currency,
        agreement_needed=_agreement_needed(),
    )


@bp.route("/subscriptions/buy/<int:product_id>", methods=["GET", "POST"])
@customer_required(Permission.CHANGE_LICENCES)
def buy(product_id: int) -> Response | Page:
    product = get_or_404(db.session, Product, product_id)
    price = product.price_in(g.customer.default_currency)
    if not product.active or product.bundle_id is not None or price is None:
        return _buy_page(product, PurchaseForm(), _("This product is not for sale."), 404)
    form = PurchaseForm()
    if request.method == "GET" or not form.validate_on_submit():
        status = 422 if request.method == "POST" else 200
        return _buy_page(product, form, None, status)
    if form.confirmed.data != "yes":
        return _buy_page(product, form, None, 200, confirming=True)
    try:
        bought = licences.purchase(
            db.session, _partner(), g.customer, product, form.quantity.data, _user()
        )
    except ServiceError as refused:
        db.session.rollback()
        return _buy_page(product, form, refused.message, 422)
    db.session.commit()
    flash(_state_message(ChangeState.QUEUED, None), "success")
    return redirect(url_for(".detail", subscription_id=bought.id))


def _buy_page(
    product: Product,
    form: PurchaseForm,
    error: str | None,
    status: int,
    confirming: bool = False,
) -> Page:
    price = product.price_in(g.customer.default_currency)
    page = render_page(
        "subscriptions/buy.html",
        product=product,
        form=form,
        error=error,
        price=price,
        confirming=confirming,
        total_minor=(price.price_minor * form.quantity.data) if price and confirming else None,
        agreement_needed=product.requires_mca and _agreement_needed(),
    )
    return page if status == 200 else (page, status)


# -- the Microsoft Customer Agreement ------------------------------------------------------------


@bp.route("/agreement", methods=["GET", "POST"])
@customer_required(Permission.ACCEPT_AGREEMENT)
def agreement() -> Response | Page:
    latest = agreements.current_acceptance(db.session, g.customer)
    confirmed = latest is not None and latest.state is AttestationState.CONFIRMED
    form = AgreementForm(
        formdata=None if request.method == "GET" else request.form,
        first_name="",
        email=_user().email,
    )
    if request.method == "GET" or confirmed:
        return _agreement_page(form, latest)
    if not form.validate_on_submit():
        return _agreement_page(form, latest, status=422)
    try:
        template = agreements.agreement_template(_partner(), g.customer)
        agreements.accept(
            db.session,
            _partner(),
            g.customer,
            _user(),
            first_name=form.first_name.data,
            last_name=form.last_name.data,
            email=form.email.data,
            phone=form.phone.data,
            template=template,
        )
    except ServiceError as refused:
        db.session.rollback()
        return _agreement_page(form, latest, error=refused.message, status=422)
    db.session.commit()
    flash(_("Thank you. Your acceptance is recorded and is being confirmed with Microsoft."))
    return redirect(url_for(".agreement"))


def _agreement_page(
    form: AgreementForm, latest: Any, error: str | None = None, status: int = 200
) -> Page:
    try:
        template = agreements.agreement_template(_partner(), g.customer)
    except ServiceError as unavailable:
        template, error = None, error or unavailable.message
    page = render_page(
        "subscriptions/agreement.html", form=form, latest=latest, template=template, error=error
    )
    return page if status == 200 else (page, status)
