"""Demo payment gateway for CSP Portal: a test card form instead of a real payment page,
signed webhooks, and no credentials.

Enable it with ``PORTAL_PLUGINS=demo_payments`` and choose it with
``PORTAL_PAYMENT_GATEWAY=demo``. Setting (environment): ``PORTAL_DEMO_PAYMENTS_WEBHOOK_SECRET``
(a fixed development value by default).
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Flask

from demo_payments.gateway import DemoPaymentGateway, DemoPaymentSettings, signature_header
from portal.core.db import get_database
from portal.hookspecs import hookimpl
from portal.integrations.payments import PaymentGateway
from portal.plugins import plugin_settings

__version__ = "0.1.0"
__all__ = ["DemoPaymentGateway", "DemoPaymentSettings", "signature_header"]

NAME = "demo_payments"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


@hookimpl
def portal_register_payment_gateways(app: Flask) -> list[PaymentGateway]:
    from demo_payments.views import EXTENSION

    settings = DemoPaymentSettings.from_settings(plugin_settings(app, NAME))
    gateway = DemoPaymentGateway(get_database(app).engine, settings)
    app.extensions[EXTENSION] = gateway
    return [gateway]


@hookimpl
def portal_blueprints(app: Flask) -> Blueprint:
    from demo_payments.views import bp

    return bp


@hookimpl
def portal_migration_locations() -> str:
    return str(MIGRATIONS)
