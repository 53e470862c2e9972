"""The staff forms of billing contracts (all translatable). They check what a browser can get
wrong (a date that is not one, a word where a number goes); the rules are the services'."""

from __future__ import annotations

from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    DateField,
    IntegerField,
    SelectField,
    SelectMultipleField,
    StringField,
)
from wtforms.validators import InputRequired, StopValidation

from portal.features.billing.rules.invoicing import ContractFrequency

FREQUENCY_LABELS = {
    ContractFrequency.MONTHLY: _l("Monthly"),
    ContractFrequency.QUARTERLY: _l("Quarterly"),
    ContractFrequency.ANNUAL: _l("Annually"),
}
FIRST_DAYS = (date(2000, 1, 1), date(2099, 12, 31))
RATE_MESSAGE = _l("Rates are percentages from 0 to 100, with at most four decimals.")


def _percent(_form: Any, field: Any) -> None:
    """An empty rate is 0 %; anything else must be a plain number (``20``, ``8.875``)."""
    text = (field.data or "").strip()
    if not text:
        field.data = "0"
        return
    try:
        rate = Decimal(text)
        fits = rate.is_finite() and 0 <= rate <= 100
    except InvalidOperation:
        fits = False
    if not fits:
        raise StopValidation(str(RATE_MESSAGE))


class ContractForm(FlaskForm):  # type: ignore[misc]
    # required and length are the service's rules, so every mistake is reported at once
    name = StringField(_l("Contract name"))
    currency = StringField(_l("Currency"))
    frequency = SelectField(
        _l("Invoicing"),
        choices=lambda: [(key.value, str(label)) for key, label in FREQUENCY_LABELS.items()],
        validators=[InputRequired(_l("Choose how often the contract invoices."))],
    )
    anchor_on = DateField(
        _l("First day"),
        format="%Y-%m-%d",
        validators=[InputRequired(_l("Enter the contract's first day, like 2026-05-01."))],
    )

    def validate_anchor_on(self, field: Any) -> None:
        if field.data is not None and not FIRST_DAYS[0] <= field.data <= FIRST_DAYS[1]:
            raise StopValidation(str(_l("Give a first day between 2000 and 2099.")))

    payment_terms_days = IntegerField(
        _l("Payment terms (days)"),
        validators=[InputRequired(_l("Enter the payment terms, a whole number of days."))],
    )
    discount = StringField(_l("Discount (%)"), validators=[_percent])
    prepaid_discount = StringField(
        _l("Upfront discount of annual prepaid terms (%)"), validators=[_percent]
    )
    tax_rate = StringField(_l("Tax rate (%)"), validators=[_percent])
    autocharge = BooleanField(_l("Charge the customer's saved card when an invoice is issued"))
    make_default = BooleanField(_l("Default contract: purchases in its currency land on it"))

    def rate(self, name: str) -> Decimal:
        """The rate typed as a percentage, as the fraction services take (20 → 0.2)."""
        return Decimal(str(self[name].data or "0").strip()) / 100


class MoveForm(FlaskForm):  # type: ignore[misc]
    """The view sets the choices: the customer's subscriptions not on this contract."""

    subscriptions = SelectMultipleField(
        _l("Subscriptions"),
        coerce=int,
        choices=[],
        validators=[InputRequired(_l("Choose at least one subscription to move."))],
    )


class CustomerHoldRulesForm(FlaskForm):  # type: ignore[misc]
    """A customer's own automatic-hold rules; parsed by the service (blank: the partner's)."""

    credit_limit = StringField(_l("Credit limit (overdue balance)"))
    grace_days = StringField(_l("Grace period (days overdue)"))
