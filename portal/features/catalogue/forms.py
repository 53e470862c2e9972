"""Forms and labels of the staff catalogue (all translatable).

The forms check what a browser can get wrong (a missing field, a word where a number goes, a
choice not offered); the catalogue's rules live in :mod:`portal.features.catalogue.services`.
"""

from __future__ import annotations

from typing import Any

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    IntegerField,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, InputRequired, Length, Optional

from portal.core.errors import ServiceError
from portal.features.catalogue import services as catalog
from portal.features.catalogue.rules import (
    DEFAULT_WINDOW_HOURS,
    BillingFrequency,
    ProductClass,
    ReductionBehaviour,
    SubscriptionType,
    Term,
)

PRODUCT_CLASS_LABELS = {
    ProductClass.RESALE: _l("Resale"),
    ProductClass.IP: _l("Own IP"),
    ProductClass.SERVICES: _l("Services"),
}


SUBSCRIPTION_TYPE_LABELS = {
    SubscriptionType.LICENCE: _l("Licence (seats, billed in advance)"),
    SubscriptionType.USAGE: _l("Usage (billed in arrears)"),
    SubscriptionType.SERVICE: _l("Service"),
}


TERM_LABELS = {
    Term.P1M: _l("1 month (P1M)"),
    Term.P1Y: _l("1 year (P1Y)"),
    Term.P3Y: _l("3 years (P3Y)"),
}


FREQUENCY_LABELS = {
    BillingFrequency.MONTHLY: _l("Monthly"),
    BillingFrequency.ANNUAL: _l("Annually"),
    BillingFrequency.TRIENNIAL: _l("Every three years"),
}


REDUCTION_LABELS = {
    ReductionBehaviour.ALLOWED: _l("Allowed at any time"),
    ReductionBehaviour.DISALLOWED: _l("Not during the term"),
    ReductionBehaviour.WITHIN_WINDOW: _l("Within a window after purchase or addition"),
}


def _choices(labels: dict[Any, Any]) -> list[SelectChoice]:
    return [SelectChoice(key.value, str(label)) for key, label in labels.items()]


def _optional_int(value: object) -> int | None:
    return None if value in (None, "") else int(str(value))


class ProductForm(FlaskForm):  # type: ignore[misc]
    """The view sets the choices of ``provider_key`` (loaded providers) and ``bundle_id``."""

    # required and length are the service's rules, so every mistake is reported at once
    name = StringField(_l("Name"))
    description = TextAreaField(_l("Description"), validators=[Length(max=5000)])
    product_class = SelectField(
        _l("Product class"),
        choices=lambda: _choices(PRODUCT_CLASS_LABELS),
        validators=[InputRequired(_l("Choose a product class."))],
    )
    subscription_type = SelectField(
        _l("Subscription type"),
        choices=lambda: _choices(SUBSCRIPTION_TYPE_LABELS),
        validators=[InputRequired(_l("Choose a subscription type."))],
    )
    provider_key = SelectField(_l("Provider"), choices=[], validate_choice=True)
    provider_offer_id = StringField(_l("Provider offer id"))
    term = SelectField(
        _l("Term"),
        choices=lambda: _choices(TERM_LABELS),
        validators=[InputRequired(_l("Choose a term."))],
    )
    billing_frequency = SelectField(
        _l("Billing frequency"),
        choices=lambda: _choices(FREQUENCY_LABELS),
        validators=[InputRequired(_l("Choose a billing frequency."))],
    )
    min_quantity = IntegerField(
        _l("Minimum quantity"),
        default=1,
        validators=[InputRequired(_l("Enter the minimum quantity, a whole number."))],
    )
    max_quantity = IntegerField(
        _l("Maximum quantity"),
        default=300,
        validators=[InputRequired(_l("Enter the maximum quantity, a whole number."))],
    )
    reduction = SelectField(
        _l("Seat reductions"),
        choices=lambda: _choices(REDUCTION_LABELS),
        validators=[InputRequired(_l("Choose how seats can be reduced."))],
    )
    window_hours = IntegerField(
        _l("Reduction window (hours)"), default=DEFAULT_WINDOW_HOURS, validators=[Optional()]
    )
    requires_mca = BooleanField(_l("Needs the Microsoft Customer Agreement"), default=True)
    bundle_id = SelectField(
        _l("Part of bundle"), choices=[], coerce=_optional_int, validate_choice=True
    )
    active = BooleanField(_l("Active (customers can buy it)"), default=True)


class PriceForm(FlaskForm):  # type: ignore[misc]
    currency = StringField(
        _l("Currency"),
        validators=[
            DataRequired(_l("Enter a three-letter ISO 4217 code, like USD.")),
            Length(max=3),
        ],
    )
    price = StringField(
        _l("Price per seat and period"), validators=[DataRequired(_l("Enter the price."))]
    )
    cost = StringField(
        _l("Cost per seat and period"), validators=[DataRequired(_l("Enter the cost."))]
    )


class RemovePriceForm(FlaskForm):  # type: ignore[misc]
    currency = StringField(validators=[DataRequired()])


def labels() -> dict[str, Any]:
    """Every label mapping of the catalogue, for the templates."""
    return {
        "product_class_labels": PRODUCT_CLASS_LABELS,
        "subscription_type_labels": SUBSCRIPTION_TYPE_LABELS,
        "term_labels": TERM_LABELS,
        "frequency_labels": FREQUENCY_LABELS,
        "reduction_labels": REDUCTION_LABELS,
    }


def show_problems(form: Any, error: ServiceError) -> None:
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
