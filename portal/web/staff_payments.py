"""Staff: a customer's payment methods on the customer page, and the single-use card link
staff email to a customer so that they can add a card without signing in (finance staff and
administrators: ``MANAGE_BILLING``)."""

from __future__ import annotations

from flask import Blueprint, flash, g, redirect, url_for
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_login import current_user
from werkzeug.wrappers import Response

from portal import db
from portal.domain.roles import Permission
from portal.models import Customer, Partner
from portal.models.billing import BillingContract
from portal.models.payment_profiles import PaymentProfile
from portal.scoping import get_or_404
from portal.services import ServiceError, payment_profiles
from portal.web.access import staff_required
from portal.web.payment_forms import CardLinkForm

bp = Blueprint("staff_payments", __name__, url_prefix="/staff")


def card_link_form() -> CardLinkForm:
    """The customer page's form: the one just posted (with its errors), or an empty one."""
    posted: CardLinkForm | None = g.get("card_link_form")
    return posted if posted is not None else CardLinkForm(formdata=None)


def payment_methods_of(customer_id: int) -> tuple[list[PaymentProfile], list[BillingContract]]:
    """A customer's saved cards and its contracts on autopay (staff session: partner scope)."""
    return (
        payment_profiles.cards(db.session, customer_id),
        payment_profiles.autopay_contracts(db.session, customer_id),
    )


bp.add_app_template_global(card_link_form, "card_link_form")
bp.add_app_template_global(payment_methods_of, "payment_methods_of")


@bp.route("/customers/<int:customer_id>/card-link", methods=["POST"])
@staff_required(Permission.MANAGE_BILLING)
def send_card_link(customer_id: int) -> Response | tuple[str, int]:
    customer = get_or_404(db.session, Customer, customer_id)
    form = CardLinkForm()
    if form.validate_on_submit():
        try:
            payment_profiles.send_card_link(
                db.session,
                partner=db.session.get_one(Partner, g.brand.id),
                customer=customer,
                email=form.email.data,
                actor=str(current_user.get_id()),
                link=lambda token: url_for("card_links.start", token=token, _external=True),
                # the customer's language is unknown: the mail is in the one staff are using
                locale=str(get_locale() or "en"),
            )
        except ServiceError as error:
            db.session.rollback()
            form.email.errors.append(error.message)
        else:
            flash(
                _(
                    "A link to add a card was sent to %(email)s. "
                    "It works once, for %(hours)d hours.",
                    email=form.email.data,
                    hours=payment_profiles.card_link_hours(),
                ),
                "success",
            )
            return redirect(url_for("staff.customer", customer_id=customer.id))
    g.card_link_form = form
    from portal.web.staff import _customer_page  # the staff customer page, with this form

    return _customer_page(customer), 422
