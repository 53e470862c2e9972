"""The partner's catalogue: products and their prices per currency, kept by staff.

Every rule is checked here whatever the browser sent (DESIGN §4, Catalogue): quantities are
whole numbers with ``1 <= min <= max``, the billing frequency fits the term, a reduction
window is given (in hours) only when reductions are allowed within one, a bundle is one level
deep. Prices are entered in major units ("12.50") and stored as integer minor units of an ISO
4217 currency: parsed with :class:`~decimal.Decimal` only, refused rather than rounded when
they carry more decimals than the currency has. Every change is audited, in the same
transaction; these functions commit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from datetime import date
from decimal import Decimal
from functools import lru_cache
from typing import Any

from babel.core import get_global
from babel.numbers import get_territory_currencies
from flask_babel import ngettext
from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased, selectinload

from portal.core.errors import ServiceError, _
from portal.core.money import exponent, to_major
from portal.features.catalogue.models import Product, ProductPrice
from portal.features.catalogue.rules import (
    DEFAULT_WINDOW_HOURS,
    BillingFrequency,
    ProductClass,
    ReductionBehaviour,
    SubscriptionType,
    Term,
    frequency_fits_term,
)
from portal.features.identity import audit
from portal.features.licences.models import Subscription, SubscriptionStatus
from portal.features.tenancy.models import Partner
from portal.integrations.registry import integrations

PAGE_SIZE = 25
# what the columns (32-bit integers on PostgreSQL) and a sane catalogue hold
MAX_QUANTITY = 1_000_000
MAX_WINDOW_HOURS = 8_784  # a leap year
MAX_MINOR = 2_147_483_647
AMOUNT = re.compile(r"\d{1,15}(\.\d{1,12})?")
# subscriptions in these states are billed in their currency: its price must stay
BILLED = (SubscriptionStatus.PENDING, SubscriptionStatus.ACTIVE, SubscriptionStatus.SUSPENDED)


class CatalogueError(ServiceError):
    """One or more refused fields; ``problems`` lists (field or None, message) in form order."""

    def __init__(self, problems: list[tuple[str | None, str]]) -> None:
        super().__init__(problems[0][1], problems[0][0])
        self.problems = problems


@dataclass(frozen=True)
class ProductFields:
    """Everything staff set on a product. ``window_hours`` is None when not given."""

    name: str
    description: str
    product_class: ProductClass
    subscription_type: SubscriptionType
    provider_key: str | None
    provider_offer_id: str
    term: Term
    billing_frequency: BillingFrequency
    min_quantity: int
    max_quantity: int
    reduction: ReductionBehaviour
    window_hours: int | None
    requires_mca: bool
    bundle_id: int | None
    active: bool


# -- reading --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CataloguePage:
    """One page of top-level products (each with its components), and how many there are."""

    products: list[Product]
    total: int
    page: int
    pages: int


def catalogue_page(db_session: Session, query: str = "", page: int = 1) -> CataloguePage:
    """Top-level products by name; a bundle matches when one of its components does."""
    statement = select(Product).where(Product.bundle_id.is_(None))
    if query:
        pattern = f"%{query.lower()}%"
        component = aliased(Product)
        statement = statement.where(
            or_(
                func.lower(Product.name).like(pattern),
                func.lower(Product.provider_offer_id).like(pattern),
                Product.id.in_(
                    select(component.bundle_id).where(
                        or_(
                            func.lower(component.name).like(pattern),
                            func.lower(component.provider_offer_id).like(pattern),
                        )
                    )
                ),
            )
        )
    total = db_session.scalar(select(func.count()).select_from(statement.subquery())) or 0
    pages = max((total + PAGE_SIZE - 1) // PAGE_SIZE, 1)
    page = min(max(page, 1), pages)
    products = list(
        db_session.scalars(
            statement.options(
                selectinload(Product.prices),
                selectinload(Product.components).selectinload(Product.prices),
            )
            .order_by(func.lower(Product.name), Product.id)
            .limit(PAGE_SIZE)
            .offset((page - 1) * PAGE_SIZE)
        )
    )
    return CataloguePage(products, total, page, pages)


def bundle_parents(db_session: Session, product: Product | None = None) -> list[Product]:
    """Products that can hold ``product`` as a component: top-level ones other than itself."""
    statement = select(Product).where(Product.bundle_id.is_(None))
    if product is not None:
        statement = statement.where(Product.id != product.id)
    return list(db_session.scalars(statement.order_by(func.lower(Product.name), Product.id)))


def provider_keys() -> list[str]:
    """The providers a product can name (None means the customer's or partner's own)."""
    return integrations().providers.keys()


@lru_cache(maxsize=1)
def _tender_currencies(today: date) -> frozenset[str]:
    territories = get_global("territory_currencies").keys()
    return frozenset(
        code
        for territory in territories
        for code in get_territory_currencies(territory, today, tender=True)
    )


def tender_currencies() -> frozenset[str]:
    """ISO 4217 codes that are legal tender somewhere today (Babel's CLDR data)."""
    return _tender_currencies(date.today())


# -- products -------------------------------------------------------------------------------------


def create_product(
    db_session: Session, partner: Partner, data: ProductFields, actor: str
) -> Product:
    data = _clean(data)
    _check(db_session, data, None)
    product = Product(partner_id=partner.id)
    _apply(product, data)
    db_session.add(product)
    db_session.flush()
    audit.record(
        db_session,
        partner_id=partner.id,
        actor=actor,
        action="catalogue.product_created",
        product=product.id,
        **_shown_values(data),
    )
    db_session.commit()
    return product


def update_product(
    db_session: Session, partner: Partner, product: Product, data: ProductFields, actor: str
) -> bool:
    """Save ``data`` over ``product``; False (and nothing recorded) when nothing changed."""
    data = _clean(data, product)
    _check(db_session, data, product)
    changes: dict[str, Any] = {
        name: f"{_shown(getattr(product, name))} → {_shown(value)}"
        for name, value in _values(data).items()
        if getattr(product, name) != value
    }
    if not changes:
        return False
    _apply(product, data)
    audit.record(
        db_session,
        partner_id=partner.id,
        actor=actor,
        action="catalogue.product_updated",
        product=product.id,
        **changes,
    )
    db_session.commit()
    return True


def _clean(data: ProductFields, product: Product | None = None) -> ProductFields:
    """Trim text; keep the window hours as they were when no window applies."""
    window = data.window_hours
    if data.reduction is not ReductionBehaviour.WITHIN_WINDOW:
        window = product.window_hours if product is not None else DEFAULT_WINDOW_HOURS
    return ProductFields(
        **{
            **_values(data),
            "name": data.name.strip(),
            "description": data.description.strip(),
            "provider_offer_id": data.provider_offer_id.strip(),
            "provider_key": (data.provider_key or "").strip() or None,
            "window_hours": window,
        }
    )


def _check(db_session: Session, data: ProductFields, product: Product | None) -> None:
    problems: list[tuple[str | None, str]] = []

    def refuse(field: str, message: str) -> None:
        problems.append((field, message))

    if not data.name:
        refuse("name", _("Enter the product's name."))
    elif len(data.name) > 200:
        refuse("name", _("Keep the name to 200 characters or fewer."))
    unchanged_key = product is not None and product.provider_key == data.provider_key
    if (
        data.provider_key is not None
        and data.provider_key not in provider_keys()
        and not unchanged_key
    ):
        refuse("provider_key", _("Choose one of the providers that are loaded."))
    if not data.provider_offer_id:
        refuse("provider_offer_id", _("Enter the provider's offer id."))
    elif len(data.provider_offer_id) > 200:
        refuse("provider_offer_id", _("Keep the offer id to 200 characters or fewer."))
    if not frequency_fits_term(data.term, data.billing_frequency):
        refuse("billing_frequency", _term_frequencies_message(data.term))
    if not 1 <= data.min_quantity <= MAX_QUANTITY:
        refuse(
            "min_quantity",
            _("The minimum quantity must be between 1 and %(max)d.", max=MAX_QUANTITY),
        )
    if not 1 <= data.max_quantity <= MAX_QUANTITY:
        refuse(
            "max_quantity",
            _("The maximum quantity must be between 1 and %(max)d.", max=MAX_QUANTITY),
        )
    elif data.max_quantity < data.min_quantity:
        refuse(
            "max_quantity",
            _("The maximum quantity cannot be below the minimum (%(min)d).", min=data.min_quantity),
        )
    if data.reduction is ReductionBehaviour.WITHIN_WINDOW:
        if data.window_hours is None:
            refuse("window_hours", _("Enter how many hours the reduction window lasts."))
        elif not 1 <= data.window_hours <= MAX_WINDOW_HOURS:
            refuse(
                "window_hours",
                _("The window must last between 1 and %(max)d hours.", max=MAX_WINDOW_HOURS),
            )
    if data.bundle_id is not None:
        problem = _bundle_problem(db_session, data.bundle_id, product)
        if problem:
            refuse("bundle_id", problem)
    if problems:
        raise CatalogueError(problems)


def _term_frequencies_message(term: Term) -> str:
    if term is Term.P1M:
        return _("A one-month term (P1M) is billed monthly.")
    if term is Term.P1Y:
        return _("A one-year term (P1Y) is billed monthly or annually.")
    return _("A three-year term (P3Y) is billed monthly, annually or every three years.")


def _bundle_problem(db_session: Session, bundle_id: int, product: Product | None) -> str | None:
    parent = db_session.scalars(select(Product).where(Product.id == bundle_id)).first()
    if parent is None or (product is not None and parent.id == product.id):
        return _("Choose a bundle from the list.")
    if parent.bundle_id is not None:
        return _(
            "%(name)s is itself part of a bundle; choose a top-level product.", name=parent.name
        )
    if product is not None and product.components:
        return _(
            "This product has components of its own; a bundle cannot be part of another bundle."
        )
    return None


def _values(data: ProductFields) -> dict[str, Any]:
    return {field.name: getattr(data, field.name) for field in fields(data)}


def _apply(product: Product, data: ProductFields) -> None:
    for name, value in _values(data).items():
        setattr(product, name, value)


def _shown_values(data: ProductFields) -> dict[str, Any]:
    return {name: _shown(value) for name, value in _values(data).items()}


def _shown(value: object) -> str | int | bool | None:
    """A value as the audit log keeps it: enums by their value."""
    if value is None or isinstance(value, bool | int):
        return value
    return str(value)


# -- prices ---------------------------------------------------------------------------------------


def parse_amount(text: str, currency: str, field: str) -> int:
    """``"12.50"`` in USD is 1250: major units to integer minor units, exactly.

    Only digits and one decimal point (no signs, exponents or separators): what a person types
    for a price. More decimals than the currency has are refused, never rounded; trailing
    zeros are fine ("1500.00" yen is 1500).
    """
    text = text.strip()
    if not AMOUNT.fullmatch(text):
        raise CatalogueError([(field, _("Enter an amount like 12.50, with no currency sign."))])
    places = exponent(currency)
    minor = Decimal(text).scaleb(places)
    if minor != minor.to_integral_value():
        raise CatalogueError(
            [
                (
                    field,
                    _("%(currency)s amounts have no decimals.", currency=currency)
                    if places == 0
                    else _(
                        "%(currency)s amounts have at most %(places)d decimals.",
                        currency=currency,
                        places=places,
                    ),
                )
            ]
        )
    if minor > MAX_MINOR:
        raise CatalogueError([(field, _("That amount is too large."))])
    return int(minor)


def _currency(product: Product, text: str) -> str:
    code = text.strip().upper()
    if not re.fullmatch(r"[A-Z]{3}", code):
        raise CatalogueError([("currency", _("Enter a three-letter ISO 4217 code, like USD."))])
    if code not in tender_currencies() and product.price_in(code) is None:
        raise CatalogueError(
            [("currency", _("%(code)s is not a currency in use today.", code=code))]
        )
    return code


def set_price(
    db_session: Session,
    partner: Partner,
    product: Product,
    currency: str,
    price: str,
    cost: str,
    actor: str,
) -> ProductPrice:
    """Add the product's price in ``currency``, or change it if it has one."""
    code = _currency(product, currency)
    problems: list[tuple[str | None, str]] = []
    amounts: dict[str, int] = {}
    for field, text in (("price", price), ("cost", cost)):
        try:
            amounts[field] = parse_amount(text, code, field)
        except CatalogueError as error:
            problems += error.problems
    if problems:
        raise CatalogueError(problems)
    row = product.price_in(code)
    previous = None if row is None else (row.price_minor, row.cost_minor)
    if row is None:
        row = ProductPrice(partner_id=partner.id, currency=code)
        product.prices.append(row)
    elif previous == (amounts["price"], amounts["cost"]):
        return row
    row.price_minor = amounts["price"]
    row.cost_minor = amounts["cost"]
    audit.record(
        db_session,
        partner_id=partner.id,
        actor=actor,
        action="catalogue.price_set",
        product=product.id,
        currency=code,
        price=str(to_major(row.price_minor, code)),
        cost=str(to_major(row.cost_minor, code)),
        previous_price=None if previous is None else str(to_major(previous[0], code)),
        previous_cost=None if previous is None else str(to_major(previous[1], code)),
    )
    _commit(db_session, code)
    return row


def remove_price(
    db_session: Session, partner: Partner, product: Product, currency: str, actor: str
) -> None:
    """Remove the product's price in ``currency``; refused while subscriptions bill in it."""
    code = currency.strip().upper()
    row = product.price_in(code)
    if row is None:
        raise ServiceError(_("This product has no price in %(currency)s.", currency=code))
    billed = (
        db_session.scalar(
            select(func.count()).where(
                Subscription.product_id == product.id,
                Subscription.currency == code,
                Subscription.status.in_(BILLED),
            )
        )
        or 0
    )
    if billed:
        raise ServiceError(
            str(
                ngettext(
                    "%(num)d subscription is billed in %(currency)s with this price; change the "
                    "price instead of removing it.",
                    "%(num)d subscriptions are billed in %(currency)s with this price; change "
                    "the price instead of removing it.",
                    billed,
                    currency=code,
                )
            )
        )
    product.prices.remove(row)
    audit.record(
        db_session,
        partner_id=partner.id,
        actor=actor,
        action="catalogue.price_removed",
        product=product.id,
        currency=code,
        price=str(to_major(row.price_minor, code)),
        cost=str(to_major(row.cost_minor, code)),
    )
    db_session.commit()


def _commit(db_session: Session, currency: str) -> None:
    try:
        db_session.commit()
    except IntegrityError:
        # two people added a price in the same currency at once: the other one won
        db_session.rollback()
        raise CatalogueError(
            [
                (
                    "currency",
                    _(
                        "Someone else has just set a price in %(currency)s. Reload the page and "
                        "check it.",
                        currency=currency,
                    ),
                )
            ]
        ) from None
