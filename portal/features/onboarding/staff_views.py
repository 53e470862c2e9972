"""Staff pages of onboarding: a new customer, and importing its subscriptions from the
provider. Staff pages always render with the app's own templates."""

from __future__ import annotations

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import ngettext
from flask_login import current_user
from werkzeug.wrappers import Response

from portal.core import db
from portal.core.errors import ServiceError
from portal.core.roles import Permission, staff_may
from portal.core.scoping import get_or_404
from portal.features.billing.models import BillingContract
from portal.features.billing.services.contracts import contracts_of
from portal.features.licences.services import imports
from portal.features.onboarding import services
from portal.features.onboarding.forms import ImportForm, NewCustomerForm
from portal.features.tenancy.models import Customer, Partner
from portal.web.access import staff_required
from portal.web.forms import show_refusal

bp = Blueprint("staff_onboarding", __name__, url_prefix="/staff", template_folder="templates")


def _partner() -> Partner:
    return db.session.get_one(Partner, g.brand.id)


def _provider_choices() -> list[tuple[str, str]]:
    return [("", _("The partner's provider")), *services.provider_choices()]


@bp.route("/customers/new", methods=["GET", "POST"])
@staff_required(Permission.MANAGE_CUSTOMERS)
def new_customer() -> Response | str | tuple[str, int]:
    form = NewCustomerForm()
    found: list[services.Found] | None = None
    find_problem = None
    query = request.args.get("find", "").strip()[:253]
    if not form.is_submitted():
        # a new customer pays in the partner's currency; a customer found at the provider
        # ("Use" below) fills in its name, tenant id and domain
        form = NewCustomerForm(
            formdata=None,
            currency=_partner().default_currency,
            name=request.args.get("name", "")[:200],
            tenant_id=request.args.get("tenant_id", "")[:40],
            domain=request.args.get("domain", "")[:253],
        )
        if "find" in request.args:
            try:
                found = services.find_at_provider(db.session, _partner(), query)
            except ServiceError as error:
                find_problem = error.message
    form.provider_key.choices = _provider_choices()
    if form.is_submitted():
        if form.validate():
            details = services.NewCustomer(
                name=form.name.data or "",
                tenant_id=form.tenant_id.data or "",
                domain=form.domain.data or "",
                currency=form.currency.data or "",
                payment_terms_days=form.payment_terms_days.data,
                credit_limit=form.credit_limit.data or "",
                provider_key=form.provider_key.data or "",
            )
            try:
                customer = services.onboard_customer(
                    db.session, _partner(), details, str(current_user.get_id())
                )
            except ServiceError as error:
                db.session.rollback()
                show_refusal(form, error)
            else:
                db.session.commit()
                flash(
                    _(
                        "%(name)s is a customer now, with a default contract in %(currency)s. "
                        "Import its subscriptions or invite its first Administrator.",
                        name=customer.name,
                        currency=customer.default_currency,
                    ),
                    "success",
                )
                return redirect(url_for("staff.customer", customer_id=customer.id))
        return render_template("staff/onboarding/new_customer.html", form=form), 422
    return render_template(
        "staff/onboarding/new_customer.html",
        form=form,
        query=query,
        found=found,
        find_problem=find_problem,
    )


def _import_page(customer: Customer, form: ImportForm | None = None) -> tuple[str, int]:
    problem = None
    listed: list[imports.Listed] = []
    try:
        listed = imports.listed_at_provider(db.session, _partner(), customer)
    except ServiceError as error:
        problem = error.message
    contracts = [
        c
        for c in contracts_of(db.session, customer.id)
        if c.active and c.currency == customer.default_currency
    ]
    form = form or ImportForm(formdata=None)
    _set_choices(form, listed, contracts)
    if form.contract.data is None and contracts:
        form.contract.data = next((c.id for c in contracts if c.is_default), contracts[0].id)
    refused = form.is_submitted() and bool(form.errors or form.form_errors)
    return (
        render_template(
            "staff/onboarding/import.html",
            customer=customer,
            listed=listed,
            problem=problem,
            form=form,
            match_reason=imports.match_reason,
            Match=imports.Match,
            contracts=contracts,
        ),
        422 if refused else 200,
    )


def _set_choices(
    form: ImportForm, listed: list[imports.Listed], contracts: list[BillingContract]
) -> None:
    form.refs.choices = [
        (row.subscription.subscription_ref, row.subscription.subscription_ref)
        for row in listed
        if row.match is imports.Match.NEW
    ]
    form.contract.choices = [(c.id, c.name) for c in contracts] or [(0, "")]


@bp.route("/customers/<int:customer_id>/import")
@staff_required(Permission.MANAGE_CUSTOMERS)
def import_page(customer_id: int) -> tuple[str, int]:
    return _import_page(get_or_404(db.session, Customer, customer_id))


@bp.route("/customers/<int:customer_id>/import", methods=["POST"])
@staff_required(Permission.MANAGE_CUSTOMERS)
def import_subscriptions(customer_id: int) -> Response | tuple[str, int]:
    customer = get_or_404(db.session, Customer, customer_id)
    form = ImportForm()
    form.contract.choices = [(c.id, c.name) for c in contracts_of(db.session, customer.id)] or [
        (0, "")
    ]
    if not form.validate():
        return _import_page(customer, form)
    # the contract is a billing decision: staff who may not manage billing import onto the
    # customer's default contract
    may_bill = staff_may(current_user.account.role, Permission.MANAGE_BILLING)
    chosen = form.contract.data if may_bill else 0
    contract = db.session.get(BillingContract, chosen) if chosen else None
    try:
        made = services.import_subscriptions(
            db.session,
            _partner(),
            customer,
            form.refs.data or [],
            str(current_user.get_id()),
            contract,
        )
    except ServiceError as error:
        db.session.rollback()
        show_refusal(form, error)
        return _import_page(customer, form)
    db.session.commit()
    flash(
        ngettext(
            "%(num)d subscription imported. It is invoiced from its contract's next period on.",
            "%(num)d subscriptions imported. They are invoiced from their contract's next "
            "period on.",
            len(made),
        )
        if made
        else _("Those subscriptions were imported already: nothing changed."),
        "success",
    )
    return redirect(url_for("staff_onboarding.import_page", customer_id=customer.id))
