"""The onboarding forms (all translatable). They check what a browser can get wrong (a word
where a number goes, a choice not offered); the rules are the services'."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import IntegerField, SelectField, SelectMultipleField, StringField
from wtforms.validators import InputRequired


class NewCustomerForm(FlaskForm):  # type: ignore[misc]
    """The view sets the choices of ``provider_key`` (the loaded providers)."""

    # required and length are the service's rules, so every mistake is reported at once
    name = StringField(_l("Customer name"))
    tenant_id = StringField(_l("Microsoft tenant id"))
    domain = StringField(_l("Primary domain (optional)"))
    currency = StringField(_l("Currency"), default="USD")
    payment_terms_days = IntegerField(
        _l("Payment terms (days)"),
        default=30,
        validators=[InputRequired(_l("Enter the payment terms, a whole number of days."))],
    )
    # parsed by the service, which says what is wrong in the user's language
    credit_limit = StringField(_l("Credit limit (optional)"))
    provider_key = SelectField(_l("Provider"), choices=[], validate_choice=True)


class ImportForm(FlaskForm):  # type: ignore[misc]
    """The view sets the choices of ``refs`` (what can be imported) and ``contract``."""

    refs = SelectMultipleField(
        _l("Subscriptions"),
        choices=[],
        validators=[InputRequired(_l("Choose at least one subscription to import."))],
        validate_choice=False,
    )
    contract = SelectField(_l("Billing contract"), choices=[], coerce=int, validate_choice=True)
