"""The staff area's catalogue (products and prices) and licence change queue.

Views stay thin: the catalogue's rules are in :mod:`portal.services.catalog`, retrying and
resolving failed changes in :mod:`portal.services.provisioning`. Staff of a partner see only
that partner's rows: the request's session is partner-scoped (:mod:`portal.scoping`).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import joinedload
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Response
from wtforms.fields.choices import SelectChoice

from portal import db
from portal.domain.catalog import (
    BillingFrequency,
    ProductClass,
    ReductionBehaviour,
    SubscriptionType,
    Term,
)
from portal.domain.licences import ChangeState
from portal.domain.roles import Permission
from portal.models import Customer, LicenceChange, Partner, Product, StaffUser, Subscription
from portal.scoping import get_or_404
from portal.services import ServiceError, catalog, provisioning
from portal.web.access import staff_required
from portal.web.filters import money
from portal.web.forms import ConfirmForm
from portal.web.staff_licences_forms import (
    PriceForm,
    ProductForm,
    RemovePriceForm,
    ResolveForm,
    labels,
)

bp = Blueprint("staff_licences", __name__, url_prefix="/staff")
PAGE_SIZE = 25


def _partner() -> Partner:
    return db.session.get_one(Partner, g.brand.id)


def _staff() -> StaffUser:
    staff = current_user.account
    assert isinstance(staff, StaffUser)
    return staff


def _actor() -> str:
    """Who did it, as the staff area's audit events name people."""
    return str(current_user.get_id())


def _page_number() -> int:
    return max(request.args.get("page", 1, type=int) or 1, 1)


# -- catalogue ------------------------------------------------------------------------------------


@bp.route("/catalogue")
@staff_required(Permission.VIEW_CATALOGUE)
def catalogue() -> str:
    query = request.args.get("q", "").strip()[:100]
    found = catalog.catalogue_page(db.session, query, _page_number())
    return render_template("staff/catalogue.html", found=found, query=query, **labels())


def _product_form_choices(form: ProductForm, product: Product | None) -> None:
    keys = catalog.provider_keys()
    if product is not None and product.provider_key and product.provider_key not in keys:
        keys = [*keys, product.provider_key]  # its plugin is not loaded now: keep it choosable
    form.provider_key.choices = [
        SelectChoice("", _("The customer's provider (default)")),
        *(SelectChoice(key, key) for key in keys),
    ]
    form.bundle_id.choices = [
        SelectChoice("", _("None: sold on its own or is a bundle")),
        *(
            SelectChoice(
                str(parent.id),
                parent.name if parent.active else _("%(name)s (inactive)", name=parent.name),
            )
            for parent in catalog.bundle_parents(db.session, product)
        ),
    ]


def _fields(form: ProductForm) -> catalog.ProductFields:
    return catalog.ProductFields(
        name=form.name.data or "",
        description=form.description.data or "",
        product_class=ProductClass(form.product_class.data),
        subscription_type=SubscriptionType(form.subscription_type.data),
        provider_key=form.provider_key.data or None,
        provider_offer_id=form.provider_offer_id.data or "",
        term=Term(form.term.data),
        billing_frequency=BillingFrequency(form.billing_frequency.data),
        min_quantity=int(form.min_quantity.data),
        max_quantity=int(form.max_quantity.data),
        reduction=ReductionBehaviour(form.reduction.data),
        window_hours=form.window_hours.data,
        requires_mca=bool(form.requires_mca.data),
        bundle_id=form.bundle_id.data,
        active=bool(form.active.data),
    )


def _show_problems(form: Any, error: ServiceError) -> None:
    problems = (
        error.problems
        if isinstance(error, catalog.CatalogueError)
        else [(error.field, error.message)]
    )
    for field, message in problems:
        if field and field in form:
            form[field].errors = [*form[field].errors, message]
        else:
            form.form_errors.append(message)


def _fill_choices_from(form: ProductForm, product: Product) -> None:
    """Select fields show the product's values (no provider is the empty choice)."""
    form.provider_key.data = product.provider_key or ""
    for name in ("product_class", "subscription_type", "term", "billing_frequency", "reduction"):
        form[name].data = getattr(product, name).value


def _product_page(
    form: ProductForm,
    product: Product | None,
    price_form: PriceForm | None = None,
) -> str:
    return render_template(
        "staff/product_form.html",
        form=form,
        product=product,
        price_form=price_form or PriceForm(formdata=None),
        **labels(),
    )


@bp.route("/catalogue/new", methods=["GET", "POST"])
@staff_required(Permission.MANAGE_CATALOGUE)
def new_product() -> Response | tuple[str, int] | str:
    form = ProductForm()
    _product_form_choices(form, None)
    if form.validate_on_submit():
        try:
            product = catalog.create_product(db.session, _partner(), _fields(form), _actor())
        except ServiceError as error:
            db.session.rollback()
            _show_problems(form, error)
        else:
            flash(
                _("%(name)s is in the catalogue. Now give it a price.", name=product.name),
                "success",
            )
            return redirect(url_for("staff_licences.product", product_id=product.id))
    if request.method == "POST":
        return _product_page(form, None), 422
    return _product_page(form, None)


@bp.route("/catalogue/<int:product_id>", methods=["GET", "POST"])
@staff_required(Permission.MANAGE_CATALOGUE)
def product(product_id: int) -> Response | tuple[str, int] | str:
    product = get_or_404(db.session, Product, product_id)
    form = ProductForm(obj=product if request.method == "GET" else None)
    _product_form_choices(form, product)
    if request.method == "GET":
        _fill_choices_from(form, product)
    if form.validate_on_submit():
        try:
            changed = catalog.update_product(
                db.session, _partner(), product, _fields(form), _actor()
            )
        except ServiceError as error:
            db.session.rollback()
            _show_problems(form, error)
        else:
            flash(
                _("%(name)s is saved.", name=product.name)
                if changed
                else _("Nothing changed in %(name)s.", name=product.name),
                "success" if changed else "info",
            )
            return redirect(url_for("staff_licences.product", product_id=product.id))
    if request.method == "POST":
        return _product_page(form, product), 422
    return _product_page(form, product)


@bp.route("/catalogue/<int:product_id>/prices", methods=["POST"])
@staff_required(Permission.MANAGE_CATALOGUE)
def set_price(product_id: int) -> Response | tuple[str, int]:
    product = get_or_404(db.session, Product, product_id)
    price_form = PriceForm()
    if price_form.validate_on_submit():
        try:
            row = catalog.set_price(
                db.session,
                _partner(),
                product,
                price_form.currency.data,
                price_form.price.data,
                price_form.cost.data,
                _actor(),
            )
        except ServiceError as error:
            db.session.rollback()
            _show_problems(price_form, error)
        else:
            flash(
                _(
                    "%(name)s costs customers %(price)s in %(currency)s.",
                    name=product.name,
                    price=money(row.price_minor, row.currency),
                    currency=row.currency,
                ),
                "success",
            )
            return redirect(url_for("staff_licences.product", product_id=product.id))
    db.session.refresh(product)
    form = ProductForm(formdata=None, obj=product)
    _product_form_choices(form, product)
    _fill_choices_from(form, product)
    return _product_page(form, product, price_form), 422


@bp.route("/catalogue/<int:product_id>/prices/remove", methods=["POST"])
@staff_required(Permission.MANAGE_CATALOGUE)
def remove_price(product_id: int) -> Response:
    product = get_or_404(db.session, Product, product_id)
    form = RemovePriceForm()
    if form.validate_on_submit():
        try:
            catalog.remove_price(db.session, _partner(), product, form.currency.data, _actor())
        except ServiceError as error:
            db.session.rollback()
            flash(error.message, "danger")
        else:
            flash(
                _(
                    "The price in %(currency)s is removed from %(name)s.",
                    currency=form.currency.data.strip().upper(),
                    name=product.name,
                ),
                "success",
            )
    else:
        flash(_("This form has expired. Reload the page and try again."), "danger")
    return redirect(url_for("staff_licences.product", product_id=product.id))


# -- licence change queue -----------------------------------------------------------------------


def _queue_filters(values: MultiDict[str, str]) -> dict[str, Any]:
    """The queue's filters from a query string (or a form's hidden copy of it), cleaned."""
    state = values.get("state", "")
    page = values.get("page", "1")
    return {
        "state": state if state in {s.value for s in ChangeState} else "",
        "q": values.get("q", "").strip()[:100],
        "page": max(int(page), 1) if page.isdigit() else 1,
    }


def _queue_url(filters: dict[str, Any]) -> str:
    return url_for(
        "staff_licences.licence_changes",
        state=filters["state"] or None,
        q=filters["q"] or None,
        page=filters["page"] if filters["page"] > 1 else None,
    )


def _by_customer(query: str) -> list[ColumnElement[bool]]:
    """The condition of a customer name search, if there is one."""
    if not query:
        return []
    matching = select(Customer.id).where(func.lower(Customer.name).like(f"%{query.lower()}%"))
    return [LicenceChange.customer_id.in_(matching)]


def _queue_page(
    filters: dict[str, Any],
    resolve_form: ResolveForm | None = None,
    resolve_change_id: int | None = None,
) -> str:
    by_customer = _by_customer(filters["q"])
    counts: dict[ChangeState, int] = {
        state: number
        for state, number in db.session.execute(
            select(LicenceChange.state, func.count())
            .where(*by_customer)
            .group_by(LicenceChange.state)
        ).all()
    }
    statement = select(LicenceChange).where(*by_customer)
    if filters["state"]:
        statement = statement.where(LicenceChange.state == ChangeState(filters["state"]))
    total = db.session.scalar(select(func.count()).select_from(statement.subquery())) or 0
    pages = max((total + PAGE_SIZE - 1) // PAGE_SIZE, 1)
    page = min(filters["page"], pages)
    changes = list(
        db.session.scalars(
            statement.options(
                joinedload(LicenceChange.subscription).joinedload(Subscription.customer)
            )
            .order_by(LicenceChange.requested_at.desc(), LicenceChange.id.desc())
            .limit(PAGE_SIZE)
            .offset((page - 1) * PAGE_SIZE)
        )
    )
    return render_template(
        "staff/licence_changes.html",
        changes=changes,
        filters={**filters, "page": page},
        total=total,
        pages=pages,
        counts={state: counts.get(state, 0) for state in ChangeState},
        failed_count=counts.get(ChangeState.FAILED, 0),
        states=list(ChangeState),
        resolve_form=resolve_form,
        resolve_change_id=resolve_change_id,
        **labels(),
    )


@bp.route("/licence-changes")
@staff_required(Permission.VIEW_LICENCE_QUEUE)
def licence_changes() -> str:
    return _queue_page(_queue_filters(request.args))


@bp.route("/licence-changes/<int:change_id>/retry", methods=["POST"])
@staff_required(Permission.MANAGE_LICENCE_QUEUE)
def retry(change_id: int) -> Response:
    change = get_or_404(db.session, LicenceChange, change_id)
    filters = _queue_filters(request.form)
    if not ConfirmForm().validate_on_submit():
        flash(_("This form has expired. Reload the page and try again."), "danger")
        return redirect(_queue_url(filters))
    try:
        provisioning.retry(db.session, _partner(), change, _staff())
        db.session.commit()
    except ServiceError as error:
        db.session.rollback()
        flash(error.message, "danger")
    else:
        flash(
            _(
                "Change #%(id)d of %(customer)s is queued again; the provider gets the same "
                "request id, so it cannot apply twice.",
                id=change.id,
                customer=change.subscription.customer.name,
            ),
            "success",
        )
    return redirect(_queue_url(filters))


@bp.route("/licence-changes/<int:change_id>/resolve", methods=["POST"])
@staff_required(Permission.MANAGE_LICENCE_QUEUE)
def resolve(change_id: int) -> Response | tuple[str, int]:
    change = get_or_404(db.session, LicenceChange, change_id)
    filters = _queue_filters(request.form)
    form = ResolveForm()
    if form.validate_on_submit():
        applied = form.outcome.data == "applied"
        try:
            provisioning.resolve(
                db.session, _partner(), change, _staff(), applied=applied, note=form.note.data
            )
            db.session.commit()
        except ServiceError as error:
            db.session.rollback()
            if error.field is None:
                flash(error.message, "danger")
                return redirect(_queue_url(filters))
            _show_problems(form, error)
        else:
            customer = change.subscription.customer.name
            flash(
                _(
                    "Change #%(id)d of %(customer)s is resolved as applied: the subscription "
                    "has %(count)d seats.",
                    id=change.id,
                    customer=customer,
                    count=change.quantity_to,
                )
                if applied
                else _(
                    "Change #%(id)d of %(customer)s is resolved as not applied.",
                    id=change.id,
                    customer=customer,
                ),
                "success",
            )
            return redirect(_queue_url(filters))
    return _queue_page(filters, form, change.id), 422
