"""The staff area's catalogue: products and their prices, on their own blueprint.

Views stay thin: the catalogue's rules are in :mod:`portal.features.catalogue.services`. Staff of
a partner see only that partner's rows: the request's session is partner-scoped
(:mod:`portal.core.scoping`).
"""

from __future__ import annotations

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user
from werkzeug.wrappers import Response
from wtforms.fields.choices import SelectChoice

from portal.core import db
from portal.core.errors import ServiceError
from portal.core.formatting import money
from portal.core.roles import Permission
from portal.core.scoping import get_or_404
from portal.features.catalogue import services as catalog
from portal.features.catalogue.forms import (
    PriceForm,
    ProductForm,
    RemovePriceForm,
    labels,
    show_problems,
)
from portal.features.catalogue.models import Product
from portal.features.catalogue.rules import (
    BillingFrequency,
    ProductClass,
    ReductionBehaviour,
    SubscriptionType,
    Term,
)
from portal.features.tenancy.models import Partner
from portal.web.access import staff_required

bp = Blueprint("staff_catalogue", __name__, url_prefix="/staff", template_folder="templates")


def _partner() -> Partner:
    return db.session.get_one(Partner, g.brand.id)


def _actor() -> str:
    """Who did it, as the staff area's audit events name people."""
    return str(current_user.get_id())


def _page_number() -> int:
    return max(request.args.get("page", 1, type=int) or 1, 1)


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
            show_problems(form, error)
        else:
            flash(
                _("%(name)s is in the catalogue. Now give it a price.", name=product.name),
                "success",
            )
            return redirect(url_for("staff_catalogue.product", product_id=product.id))
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
            show_problems(form, error)
        else:
            flash(
                _("%(name)s is saved.", name=product.name)
                if changed
                else _("Nothing changed in %(name)s.", name=product.name),
                "success" if changed else "info",
            )
            return redirect(url_for("staff_catalogue.product", product_id=product.id))
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
            show_problems(price_form, error)
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
            return redirect(url_for("staff_catalogue.product", product_id=product.id))
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
    return redirect(url_for("staff_catalogue.product", product_id=product.id))
