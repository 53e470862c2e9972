"""Stripe payment gateway for CSP Portal (gateway key ``stripe``): hosted Checkout for paying
invoices (any amount up to the balance, 3-D Secure on Stripe's page), saved cards and
off-session charges for autopay, and signed webhooks at ``/p/stripe/webhook``.

Enable it with ``PORTAL_PLUGINS=stripe`` and choose it with ``PORTAL_PAYMENT_GATEWAY=stripe`` (or
per partner). Settings are ``PORTAL_STRIPE_*`` (see :mod:`stripe_payments.settings` and the
README): ``SECRET_KEY`` and ``WEBHOOK_SECRET`` are required; ``PUBLISHABLE_KEY``, ``API_BASE``
(tests point it at :class:`stripe_payments.fake.FakeStripe`), ``TIMEOUT_SECONDS``,
``MAX_NETWORK_RETRIES``.
"""

from __future__ import annotations

from flask import Blueprint, Flask

from portal.hookspecs import hookimpl
from portal.integrations.payments import PaymentGateway
from portal.plugins import plugin_settings
from stripe_payments.adapter import StripeGateway
from stripe_payments.settings import SETTINGS_NAME, StripeSettings

__version__ = "0.1.0"
__all__ = ["StripeGateway", "StripeSettings"]

EXTENSION = "stripe_payments.gateway"


@hookimpl
def portal_register_payment_gateways(app: Flask) -> list[PaymentGateway]:
    gateway = StripeGateway(StripeSettings.from_settings(plugin_settings(app, SETTINGS_NAME)))
    app.extensions[EXTENSION] = gateway
    return [gateway]


@hookimpl
def portal_blueprints(app: Flask) -> Blueprint:
    from stripe_payments.views import bp

    return bp
