"""Forms: fields, labels and validation messages (all translatable). CSRF comes with FlaskForm."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms.fields.choices import SelectChoice

from portal.core.errors import ServiceError
from portal.core.extensions import _request_translations
from portal.core.roles import CustomerRole


def N_(message: str) -> str:
    """Mark ``message`` for the catalogue (N_ is a default pybabel keyword); translate it later."""
    return message


ROLE_LABELS: dict[CustomerRole, str] = {
    CustomerRole.ADMINISTRATOR: N_("Administrator"),
    CustomerRole.SUBSCRIPTION_MANAGER: N_("Subscription Manager"),
    CustomerRole.FINANCE_MANAGER: N_("Finance Manager"),
}


def role_choices() -> list[SelectChoice]:
    return [SelectChoice(role.value, role_label(role)) for role in CustomerRole]


def role_label(role: CustomerRole | str) -> str:
    """The role's name in the request's language.

    Looked up in the catalogue cached for the request: a page may show a label per row, and a
    lazy string would cost a full Flask-Babel lookup (context, domain, locale) for each.
    """
    return str(_request_translations().ugettext(ROLE_LABELS[CustomerRole(role)]))


class ConfirmForm(FlaskForm):  # type: ignore[misc]
    """A button that changes something: carries only the CSRF token."""


def show_refusal(form: FlaskForm, error: ServiceError) -> None:
    """A service's refusal, shown at the field it names when the form has that field, else
    above the form (the error summary lists both)."""
    if error.field and error.field in form:
        form[error.field].errors = [*form[error.field].errors, error.message]
    else:
        form.form_errors.append(error.message)
