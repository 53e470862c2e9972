"""Sign-in, password, invitation, role and language forms."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import EmailField, HiddenField, PasswordField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Email, InputRequired, Length

from portal.web.forms import role_choices

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


class LanguageForm(FlaskForm):  # type: ignore[misc]
    locale = SelectField(
        _l("Language"), choices=[SelectChoice("en", "English"), SelectChoice("es", "Español")]
    )
    next = HiddenField()
