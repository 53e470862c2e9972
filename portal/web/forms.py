"""Forms: fields, labels and validation messages (all translatable). CSRF comes with FlaskForm."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, HiddenField, PasswordField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Email, InputRequired, Length

from portal.domain.roles import CustomerRole
from portal.extensions import _request_translations


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


EMAIL_MESSAGE = _l("Enter a valid email address.")


class LoginForm(FlaskForm):  # type: ignore[misc]
    email = EmailField(
        _l("Email"),
        validators=[
            DataRequired(_l("Enter your email address.")),
            Email(EMAIL_MESSAGE),
            Length(max=254),
        ],
    )
    password = PasswordField(
        _l("Password"), validators=[DataRequired(_l("Enter your password.")), Length(max=1024)]
    )
    next = HiddenField()


class ForgotPasswordForm(FlaskForm):  # type: ignore[misc]
    email = EmailField(
        _l("Email"),
        validators=[
            DataRequired(_l("Enter your email address.")),
            Email(EMAIL_MESSAGE),
            Length(max=254),
        ],
    )


class ResetPasswordForm(FlaskForm):  # type: ignore[misc]
    password = PasswordField(
        _l("New password"), validators=[DataRequired(_l("Choose a password.")), Length(max=1024)]
    )


class AcceptInvitationForm(FlaskForm):  # type: ignore[misc]
    name = StringField(_l("Your name"), validators=[Length(max=200)])
    password = PasswordField(
        _l("Password"), validators=[DataRequired(_l("Enter a password.")), Length(max=1024)]
    )


class InviteForm(FlaskForm):  # type: ignore[misc]
    email = EmailField(
        _l("Email"),
        validators=[
            DataRequired(_l("Enter an email address.")),
            Email(EMAIL_MESSAGE),
            Length(max=254),
        ],
    )
    role = SelectField(
        _l("Role"), choices=role_choices, validators=[InputRequired(_l("Choose a role."))]
    )


class RoleForm(FlaskForm):  # type: ignore[misc]
    role = SelectField(
        _l("Role"), choices=role_choices, validators=[InputRequired(_l("Choose a role."))]
    )


class ConfirmForm(FlaskForm):  # type: ignore[misc]
    """A button that changes something: carries only the CSRF token."""


class LanguageForm(FlaskForm):  # type: ignore[misc]
    locale = SelectField(
        _l("Language"), choices=[SelectChoice("en", "English"), SelectChoice("es", "Español")]
    )
    next = HiddenField()


class CreditHoldForm(FlaskForm):  # type: ignore[misc]
    on_hold = BooleanField(_l("On credit hold"))
    reason = StringField(
        _l("Reason"), validators=[DataRequired(_l("Give a reason.")), Length(max=300)]
    )
