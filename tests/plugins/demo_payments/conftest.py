"""The demo payment gateway enabled, a partner to serve its card form, and a helper that opens
a payment."""

from __future__ import annotations

import importlib.util
import sys
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from portal.core.config import ROOT
from portal.integrations.payments import PaymentRequest, PaymentSession
from portal.integrations.registry import integrations
from portal.integrations.results import Succeeded

# importable like an installed distribution (make installs it editable; the portal's loader
# puts the folder on sys.path the same way when it is not installed)
if importlib.util.find_spec("demo_payments") is None:
    sys.path.insert(0, str(ROOT / "plugins" / "demo_payments"))

from demo_payments.gateway import DemoPaymentGateway

RETURN_URL = "https://portal.test/invoices/7?tab=pay"


@pytest.fixture
def portal_plugins() -> list[str]:
    return ["demo_payments"]


@pytest.fixture
def gateway(portal_app: Flask) -> DemoPaymentGateway:
    found = integrations(portal_app).payment_gateways.get("demo")
    assert isinstance(found, DemoPaymentGateway)
    return found


def payment_request(
    amount_minor: int = 12_34, currency: str = "USD", **fields: Any
) -> PaymentRequest:
    values: dict[str, Any] = {
        "idempotency_key": f"pay-{uuid.uuid4().hex}",
        "invoice_ref": "INV-7",
        "customer_ref": "customer-1",
        "amount_minor": amount_minor,
        "currency": currency,
        "description": "Invoice INV-7",
        "return_url": RETURN_URL,
    }
    values.update(fields)
    return PaymentRequest(**values)


@pytest.fixture
def make_request() -> Callable[..., PaymentRequest]:
    return payment_request


@pytest.fixture
def start(gateway: DemoPaymentGateway) -> Callable[..., PaymentSession]:
    def open_payment(amount_minor: int = 12_34, currency: str = "USD") -> PaymentSession:
        result = gateway.start_payment(payment_request(amount_minor, currency))
        assert isinstance(result, Succeeded), result
        return result.value

    return open_payment
