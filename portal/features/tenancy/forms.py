"""Forms of the staff settings page (all translatable).

The forms only carry what was sent; every rule (colours and their contrast, links, time zone,
currency, host names, the logo's type and size) is checked by
:mod:`portal.features.tenancy.settings`, so every mistake of a form is reported at once.
"""

from __future__ import annotations

from typing import Any

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from wtforms import EmailField, HiddenField, StringField, TextAreaField

from portal.core.errors import ServiceError
from portal.features.tenancy.settings import SettingsError


class BrandForm(FlaskForm):  # type: ignore[misc]
    name = StringField(_l("Brand name"))
    primary_colour = StringField(_l("Primary colour"))
    secondary_colour = StringField(_l("Header colour"))
    support_email = EmailField(_l("Support email"))
    support_phone = StringField(_l("Support phone"))
    terms_url = StringField(_l("Terms of service address"))
    privacy_url = StringField(_l("Privacy policy address"))
    timezone = StringField(_l("Time zone"))
    default_currency = StringField(_l("Default currency"))


class InvoiceDetailsForm(FlaskForm):  # type: ignore[misc]
    legal_name = StringField(_l("Legal name"))
    address = TextAreaField(_l("Address"))
    tax_id = StringField(_l("Tax id"))
    footer = TextAreaField(_l("Footer text"))


class LogoForm(FlaskForm):  # type: ignore[misc]
    logo = FileField(_l("Logo"))


class HostForm(FlaskForm):  # type: ignore[misc]
    host = StringField(_l("Host name"))


class RemoveHostForm(FlaskForm):  # type: ignore[misc]
    host_id = HiddenField()


def show_problems(form: Any, error: ServiceError) -> None:
    """The service's refusals beside their fields (or at the top of the form)."""
    problems = (
        error.problems if isinstance(error, SettingsError) else [(error.field, error.message)]
    )
    for field, message in problems:
        if field and field in form:
            form[field].errors = [*form[field].errors, message]
        else:
            form.form_errors.append(message)
