"""Forms of the subscription pages: quantity changes, purchases, the customer agreement."""

from __future__ import annotations

from typing import Any

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    EmailField,
    HiddenField,
    IntegerField,
    RadioField,
    StringField,
    TextAreaField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import (
    AnyOf,
    DataRequired,
    Email,
    InputRequired,
    Length,
    NumberRange,
    Optional,
)

from portal.features.catalogue.forms import labels as catalogue_labels
from portal.features.licences.rules import ChangeState, HoldReason

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


class AutoRenewForm(FlaskForm):  # type: ignore[misc]
    """Turn automatic renewal on or off."""

    auto_renew = HiddenField(
        validators=[InputRequired(), AnyOf(("on", "off"), message=_l("Choose on or off."))]
    )
    version = HiddenField(validators=[InputRequired()])

    def version_number(self) -> int:
        try:
            return int(self.version.data)
        except (TypeError, ValueError):
            return -1


class RenewalQuantityForm(FlaskForm):  # type: ignore[misc]
    """The number of seats of the next term."""

    renewal_quantity = IntegerField(
        _l("Seats from the renewal"),
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


class CreditHoldForm(FlaskForm):  # type: ignore[misc]
    on_hold = BooleanField(_l("On credit hold"))
    reason = StringField(
        _l("Reason"), validators=[DataRequired(_l("Give a reason.")), Length(max=300)]
    )


CHANGE_STATE_LABELS = {
    ChangeState.AWAITING: _l("Awaiting"),
    ChangeState.QUEUED: _l("Queued"),
    ChangeState.PROVISIONING: _l("Provisioning"),
    ChangeState.PROVISIONED: _l("Provisioned"),
    ChangeState.RETRYING: _l("Retrying"),
    ChangeState.FAILED: _l("Failed"),
    ChangeState.REJECTED: _l("Rejected"),
    ChangeState.NOT_APPLICABLE: _l("From the provider"),
}


CHANGE_STATE_BADGES = {
    ChangeState.AWAITING: "text-bg-warning",
    ChangeState.QUEUED: "text-bg-info",
    ChangeState.PROVISIONING: "text-bg-primary",
    ChangeState.PROVISIONED: "text-bg-success",
    ChangeState.RETRYING: "text-bg-warning",
    ChangeState.FAILED: "text-bg-danger",
    ChangeState.REJECTED: "text-bg-dark",
    ChangeState.NOT_APPLICABLE: "text-bg-secondary",
}


HOLD_REASON_LABELS = {
    HoldReason.CREDIT_HOLD: _l("the customer is on credit hold"),
    HoldReason.EARLIER_CHANGE: _l("an earlier change goes first"),
}


def labels() -> dict[str, Any]:
    """Every label mapping of the licence queue (the catalogue's included), for the templates."""
    return {
        **catalogue_labels(),
        "state_labels": CHANGE_STATE_LABELS,
        "state_badges": CHANGE_STATE_BADGES,
        "hold_reason_labels": HOLD_REASON_LABELS,
    }


class ResolveForm(FlaskForm):  # type: ignore[misc]
    outcome = RadioField(
        _l("At the provider, the change was"),
        choices=[
            SelectChoice("applied", _l("Applied at the provider")),
            SelectChoice("not_applied", _l("Not applied")),
        ],
        validators=[InputRequired(_l("Say whether the provider applied the change."))],
    )
    note = TextAreaField(
        _l("Note"),
        validators=[DataRequired(_l("Say what was done, for the record.")), Length(max=2000)],
    )
