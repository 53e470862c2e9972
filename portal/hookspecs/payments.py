"""Payment gateways: Stripe, the demo gateway."""

from __future__ import annotations

from typing import TYPE_CHECKING

from portal.hookspecs import hookspec

if TYPE_CHECKING:
    from flask import Flask

    from portal.integrations.events import PaymentRecorded
    from portal.integrations.payments import PaymentGateway


@hookspec
def portal_register_payment_gateways(app: Flask) -> list[PaymentGateway] | None:
    """Payment gateways this plugin offers.

    :param app: the Flask app being built (for the plugin's settings).
    :returns: objects implementing :class:`portal.integrations.payments.PaymentGateway`, each
        with a unique ``key``; those that also implement
        :class:`portal.integrations.payments.SavedCardGateway` offer saved cards and autopay.
    Calling rule: all results are collected; a duplicate key fails at start-up.
    """


@hookspec
def portal_on_payment_recorded(event: PaymentRecorded) -> None:
    """A payment was recorded against an invoice (once per payment).

    :param event: the payment and the invoice it pays.
    :returns: nothing.
    Calling rule: every implementation is called; one that raises is logged and skipped.
    """
