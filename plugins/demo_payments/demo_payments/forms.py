"""The test card form and the extra authentication page (CSRF comes with FlaskForm)."""

from __future__ import annotations

import re
from typing import Any

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import StringField, SubmitField
from wtforms.validators import DataRequired, Length, ValidationError

from demo_payments.gateway import card_digits


class CardForm(FlaskForm):  # type: ignore[misc]
    card_number = StringField(
        _l("Card number"),
        validators=[DataRequired(_l("Enter a card number.")), Length(max=40)],
    )

    def validate_card_number(self, field: Any) -> None:
        if not re.fullmatch(r"\d{12,19}", card_digits(field.data or "")):
            raise ValidationError(
                _l("Enter the card number as 12 to 19 digits, for example 4242 4242 4242 4242.")
            )


class AuthenticateForm(FlaskForm):  # type: ignore[misc]
    approve = SubmitField(_l("Approve"))
    fail = SubmitField(_l("Fail"))
