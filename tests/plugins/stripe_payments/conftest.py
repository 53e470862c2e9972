"""The Stripe gateway's real SDK client against the fake Stripe on 127.0.0.1.

Nothing is mocked: every test drives ``StripeGateway`` (``stripe.StripeClient`` with its
``api`` base address at the fake) over HTTP to :class:`stripe_payments.fake.FakeStripe`, and
webhooks are signed exactly as Stripe signs them.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from portal.core.config import ROOT

# importable like an installed distribution (make installs it editable; the portal's loader
# puts the folder on sys.path the same way when it is not installed)
if importlib.util.find_spec("stripe_payments") is None:
    sys.path.insert(0, str(ROOT / "plugins" / "stripe_payments"))

from stripe_payments import EXTENSION, StripeGateway, StripeSettings
from stripe_payments.fake import FakeStripe

SECRET_KEY = "sk_test_portal_fake_0123456789"
WEBHOOK_SECRET = "whsec_portal_fake_test_secret"


def settings_for(fake: FakeStripe, **overrides: str) -> dict[str, str]:
    return {
        "SECRET_KEY": SECRET_KEY,
        "WEBHOOK_SECRET": fake.webhook_secret,
        "API_BASE": fake.url,
        "TIMEOUT_SECONDS": "5",
        **overrides,
    }


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with FakeStripe(webhook_secret=WEBHOOK_SECRET) as server:
        yield server
    assert not server.errors, "the fake Stripe failed:\n" + "\n".join(server.errors)


@pytest.fixture
def gateway(fake: FakeStripe) -> StripeGateway:
    """The adapter, pointed at the fake."""
    return StripeGateway(StripeSettings.from_settings(settings_for(fake)))


# -- a portal with the plugin ------------------------------------------------------------------


@pytest.fixture
def portal_plugins() -> list[str]:
    return ["stripe"]


@pytest.fixture
def portal_config(fake: FakeStripe) -> dict[str, Any]:
    return {
        "PORTAL_PLUGIN_SETTINGS": {"stripe": settings_for(fake)},
        "PORTAL_PAYMENT_GATEWAY": "stripe",
        "PORTAL_BROKER_URL": "memory://",
    }


@pytest.fixture
def app_gateway(portal_app: Flask) -> StripeGateway:
    found = portal_app.extensions[EXTENSION]
    assert isinstance(found, StripeGateway)
    return found
