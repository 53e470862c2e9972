"""Forms of the payment pages: paying an invoice (all or part of it) and sending a card link.
Labels and messages are translatable; CSRF comes with FlaskForm."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from babel.numbers import NumberFormatError, format_decimal, parse_decimal
from flask_babel import get_locale
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, HiddenField, StringField
from wtforms.validators import DataRequired, Email, Length, ValidationError

from portal.core.money import exponent, to_major

AMOUNT_LIMIT = 40
# digits with the decimal and grouping signs of the languages the portal speaks
DIGITS = re.compile(r"-?[0-9][0-9.,]*")


def _locale() -> str:
    return str(get_locale() or "en")


def amount_text(amount_minor: int, currency: str) -> str:
    """An amount as the reader types it: their decimal sign, the currency's decimals, no
    grouping (1234.50 in English, 1234,50 in Spanish)."""
    places = exponent(currency)
    pattern = "0" + ("." + "0" * places if places else "")
    return str(format_decimal(to_major(amount_minor, currency), pattern, locale=_locale()))


def parse_amount(text: str) -> Decimal:
    """What the reader typed, read in their language (``1.234,56`` in Spanish); ambiguous or
    malformed input raises ValueError rather than being guessed at."""
    cleaned = (text or "").strip().replace("\u00a0", "").replace(" ", "")
    if not cleaned or len(cleaned) > AMOUNT_LIMIT:
        raise ValueError("no amount")
    if not DIGITS.fullmatch(cleaned):  # no exponents, infinities or currency signs
        raise ValueError("not a plain number")
    try:
        value = parse_decimal(cleaned, locale=_locale(), strict=True)
    except NumberFormatError as error:
        raise ValueError(str(error)) from None
    if not isinstance(value, Decimal) or not value.is_finite():
        raise ValueError("not a number")
    return value


class PayForm(FlaskForm):  # type: ignore[misc]
    """Pay an invoice: the balance is filled in; a smaller amount is a partial payment."""

    amount = StringField(
        _l("Amount to pay"),
        validators=[DataRequired(_l("Enter the amount to pay.")), Length(max=AMOUNT_LIMIT)],
    )
    currency = HiddenField()
    save_card = BooleanField(_l("Save this card for automatic payments"))

    def validate_amount(self, field: Any) -> None:
        try:
            parse_amount(field.data or "")
        except ValueError:
            raise ValidationError(
                _l("Enter the amount as a number, for example %(example)s.", example=_example())
            ) from None

    @property
    def amount_value(self) -> Decimal:
        return parse_amount(self.amount.data or "")


def _example() -> str:
    return str(format_decimal(Decimal("120.50"), "0.00", locale=_locale()))


class CardLinkForm(FlaskForm):  # type: ignore[misc]
    """Staff: email a customer a single-use link to add a card."""

    email = EmailField(
        _l("Send the link to"),
        validators=[
            DataRequired(_l("Enter the email address to send the link to.")),
            Email(_l("Enter a valid email address.")),
            Length(max=254),
        ],
    )
