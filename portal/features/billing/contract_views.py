"""Staff pages of a customer's billing contracts: the list, a new one, editing one, the
default, deactivating, moving subscriptions onto one. Finance staff and administrators change
them; every staff role that sees billing reads them."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, g, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from werkzeug.wrappers import Response

from portal.core import db
from portal.core.errors import ServiceError
from portal.core.roles import Permission
from portal.core.scoping import get_or_404
from portal.features.billing.forms import FREQUENCY_LABELS, ContractForm, MoveForm
from portal.features.billing.models import BillingContract
from portal.features.billing.services import contracts, moves
from portal.features.licences.models import Subscription
from portal.features.tenancy.models import Customer
from portal.features.tenancy.services import partner_today
from portal.web.access import staff_required
from portal.web.forms import ConfirmForm, show_refusal

bp = Blueprint("staff_contracts", __name__, url_prefix="/staff", template_folder="templates")


def _actor() -> str:
    return str(current_user.get_id())


def _subscriptions(customer_id: int) -> list[Subscription]:
    """The customer's subscriptions that billing carries (bundle parents), oldest first."""
    return list(
        db.session.scalars(
            select(Subscription)
            .where(Subscription.customer_id == customer_id, Subscription.parent_id.is_(None))
            .order_by(Subscription.id)
        )
    )


def _list_page(customer: Customer, form: ContractForm | None = None) -> str:
    form = form or ContractForm(
        formdata=None,
        currency=customer.default_currency,
        frequency="monthly",
        anchor_on=partner_today(g.brand),
        payment_terms_days=customer.payment_terms_days,
    )
    return render_template(
        "staff/contracts.html",
        customer=customer,
        contracts=contracts.contracts_of(db.session, customer.id),
        subscriptions=_subscriptions(customer.id),
        form=form,
        frequency_labels=FREQUENCY_LABELS,
    )


@bp.route("/customers/<int:customer_id>/contracts")
@staff_required(Permission.VIEW_BILLING)
def customer_contracts(customer_id: int) -> str:
    return _list_page(get_or_404(db.session, Customer, customer_id))


@bp.route("/customers/<int:customer_id>/contracts", methods=["POST"])
@staff_required(Permission.MANAGE_BILLING)
def new_contract(customer_id: int) -> Response | tuple[str, int]:
    customer = get_or_404(db.session, Customer, customer_id)
    form = ContractForm()
    if form.validate():
        try:
            contract = contracts.create_contract(
                db.session,
                customer,
                name=form.name.data or "",
                currency=form.currency.data or "",
                frequency=form.frequency.data,
                anchor_on=form.anchor_on.data,
                by=_actor(),
                payment_terms_days=form.payment_terms_days.data,
                discount=form.rate("discount"),
                prepaid_discount=form.rate("prepaid_discount"),
                tax_rate=form.rate("tax_rate"),
                autocharge=bool(form.autocharge.data),
                make_default=bool(form.make_default.data),
            )
        except ServiceError as error:
            db.session.rollback()
            show_refusal(form, error)
        else:
            db.session.commit()
            flash(_("Contract %(name)s created.", name=contract.name), "success")
            return redirect(url_for("staff_contracts.contract", contract_id=contract.id))
    return _list_page(customer, form), 422


def _contract_page(
    contract: BillingContract, form: ContractForm | None = None, move_form: MoveForm | None = None
) -> str:
    customer = db.session.get_one(Customer, contract.customer_id)
    on_it = [s for s in _subscriptions(customer.id) if s.billing_contract_id == contract.id]
    others = [
        s
        for s in _subscriptions(customer.id)
        if s.billing_contract_id != contract.id and s.currency == contract.currency
    ]
    form = form or ContractForm(
        formdata=None,
        obj=contract,
        discount=_percent_text(contract.discount),
        prepaid_discount=_percent_text(contract.prepaid_discount),
        tax_rate=_percent_text(contract.tax_rate),
    )
    move_form = move_form or MoveForm(formdata=None)
    move_form.subscriptions.choices = [(s.id, s.product.name) for s in others]
    names = {c.id: c.name for c in contracts.contracts_of(db.session, customer.id)}
    return render_template(
        "staff/contract.html",
        customer=customer,
        contract=contract,
        on_it=on_it,
        others=others,
        contract_names=names,
        form=form,
        move_form=move_form,
        confirm_form=ConfirmForm(formdata=None),
        frequency_labels=FREQUENCY_LABELS,
    )


def _percent_text(rate: Any) -> str:
    """A fraction as the percentage staff type (0.2 → "20", 0.08875 → "8.875")."""
    text = format((rate * 100).normalize(), "f")
    return text


@bp.route("/contracts/<int:contract_id>")
@staff_required(Permission.VIEW_BILLING)
def contract(contract_id: int) -> str:
    return _contract_page(get_or_404(db.session, BillingContract, contract_id))


@bp.route("/contracts/<int:contract_id>", methods=["POST"])
@staff_required(Permission.MANAGE_BILLING)
def update_contract(contract_id: int) -> Response | tuple[str, int]:
    contract = get_or_404(db.session, BillingContract, contract_id)
    form = ContractForm()
    if form.validate():
        terms = contracts.ContractTermsInput(
            name=form.name.data or "",
            frequency=form.frequency.data,
            anchor_on=form.anchor_on.data,
            payment_terms_days=form.payment_terms_days.data,
            discount=form.rate("discount"),
            prepaid_discount=form.rate("prepaid_discount"),
            tax_rate=form.rate("tax_rate"),
            autocharge=bool(form.autocharge.data),
        )
        try:
            contracts.update_contract(db.session, contract, terms, _actor())
        except ServiceError as error:
            db.session.rollback()
            show_refusal(form, error)
        else:
            db.session.commit()
            flash(_("Contract %(name)s saved.", name=contract.name), "success")
            return redirect(url_for("staff_contracts.contract", contract_id=contract.id))
    contract = get_or_404(db.session, BillingContract, contract_id)
    return _contract_page(contract, form=form), 422


@bp.route("/contracts/<int:contract_id>/default", methods=["POST"])
@staff_required(Permission.MANAGE_BILLING)
def make_default(contract_id: int) -> Response | tuple[str, int]:
    return _act(
        contract_id,
        contracts.make_default,
        _("%(name)s is the default contract now: purchases in %(currency)s land on it."),
    )


@bp.route("/contracts/<int:contract_id>/deactivate", methods=["POST"])
@staff_required(Permission.MANAGE_BILLING)
def deactivate(contract_id: int) -> Response | tuple[str, int]:
    return _act(
        contract_id,
        contracts.deactivate_contract,
        _("%(name)s is inactive: it makes no more invoices."),
    )


def _act(contract_id: int, action: Any, done: str) -> Response | tuple[str, int]:
    contract = get_or_404(db.session, BillingContract, contract_id)
    confirm = ConfirmForm()
    if not confirm.validate():
        flash(_("The form expired. Try again."), "danger")
        return redirect(url_for("staff_contracts.contract", contract_id=contract.id))
    try:
        action(db.session, contract, _actor())
        db.session.flush()
    except (ServiceError, IntegrityError) as error:
        db.session.rollback()
        contract = get_or_404(db.session, BillingContract, contract_id)
        flash(
            error.message
            if isinstance(error, ServiceError)
            else _("Someone changed this customer's contracts at the same time. Try again."),
            "danger",
        )
        return _contract_page(contract), 422
    db.session.commit()
    flash(done % {"name": contract.name, "currency": contract.currency}, "success")
    return redirect(url_for("staff_contracts.contract", contract_id=contract.id))


@bp.route("/contracts/<int:contract_id>/subscriptions", methods=["POST"])
@staff_required(Permission.MANAGE_BILLING)
def move_here(contract_id: int) -> Response | tuple[str, int]:
    contract = get_or_404(db.session, BillingContract, contract_id)
    form = MoveForm()
    form.subscriptions.choices = [
        (s.id, s.product.name) for s in _subscriptions(contract.customer_id)
    ]
    if form.validate():
        try:
            moves.assign_subscriptions(db.session, contract, form.subscriptions.data, _actor())
        except ServiceError as error:
            db.session.rollback()
            show_refusal(form, error)
        else:
            db.session.commit()
            flash(_("The subscriptions are on %(name)s now.", name=contract.name), "success")
            return redirect(url_for("staff_contracts.contract", contract_id=contract.id))
    contract = get_or_404(db.session, BillingContract, contract_id)
    return _contract_page(contract, move_form=form), 422
