"""Forms of the subscription pages: quantity changes, purchases, the customer agreement."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, HiddenField, IntegerField, StringField
from wtforms.validators import DataRequired, Email, InputRequired, Length, NumberRange, Optional

SEATS_MESSAGE = _l("Enter a whole number of seats, 1 or more.")


class QuantityForm(FlaskForm):  # type: ignore[misc]
    """The new total number of seats, and the version of the subscription the page showed."""

    quantity = IntegerField(
        _l("New number of seats"),
        validators=[InputRequired(SEATS_MESSAGE), NumberRange(min=1, message=SEATS_MESSAGE)],
    )
    version = HiddenField(validators=[InputRequired()])

    def version_number(self) -> int:
        try:
            return int(self.version.data)
        except (TypeError, ValueError):
            return -1


class PurchaseForm(FlaskForm):  # type: ignore[misc]
    quantity = IntegerField(
        _l("Number of seats"),
        validators=[InputRequired(SEATS_MESSAGE), NumberRange(min=1, message=SEATS_MESSAGE)],
    )
    confirmed = HiddenField()


class AgreementForm(FlaskForm):  # type: ignore[misc]
    first_name = StringField(
        _l("First name"), validators=[DataRequired(_l("Enter the first name.")), Length(max=100)]
    )
    last_name = StringField(
        _l("Last name"), validators=[DataRequired(_l("Enter the last name.")), Length(max=100)]
    )
    email = EmailField(
        _l("Email"),
        validators=[
            DataRequired(_l("Enter a valid email address.")),
            Email(_l("Enter a valid email address.")),
            Length(max=254),
        ],
    )
    phone = StringField(_l("Phone (optional)"), validators=[Optional(), Length(max=40)])
    accept = BooleanField(
        _l("I have read the Microsoft Customer Agreement and accept it on behalf of the customer."),
        validators=[DataRequired(_l("Tick the box to accept the agreement."))],
    )
