"""The model-based test's markers and world: a portal with the Partner Center and Stripe
plugins on their fakes, per backend (the root conftest's ``database_url``: SQLite, and
PostgreSQL when configured)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from partner_center_provider.fake import FakePartnerCenter
from stripe_payments.fake import FakeStripe

from portal import create_app
from portal.core.db import get_database
from tests.conftest import PG_URL
from tests.reliability.licence_support import STATIC_TOKEN

WEBHOOK_SECRET = "whsec_model_test_secret"
MARKERS = {
    "model": "the model-based test of the money loop (tests/model)",
    "model_licences": "the model-based test's licence rules only",
    "model_money": "the model-based test with every behaviour group",
}


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With PostgreSQL configured (CI), the model runs there only: its journeys take minutes,
    and PostgreSQL is where the locks the interleavings need are real. Without it, SQLite.
    ``PORTAL_MODEL_ALL_BACKENDS=1`` runs both."""
    if not PG_URL or os.environ.get("PORTAL_MODEL_ALL_BACKENDS") == "1":
        return
    here = Path(__file__).parent
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_sqlite = callspec is not None and callspec.params.get("database_url") == "sqlite"
        in_model = here in Path(str(item.path)).parents
        (drop if in_model and on_sqlite else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture
def partner_center() -> Iterator[FakePartnerCenter]:
    with FakePartnerCenter() as fake:
        yield fake
    assert not fake.errors, "the fake Partner Center failed:\n" + "\n".join(fake.errors)


@pytest.fixture
def stripe() -> Iterator[FakeStripe]:
    fake = FakeStripe(webhook_secret=WEBHOOK_SECRET).start()
    try:
        yield fake
    finally:
        fake.stop()
    assert not fake.errors, "the fake Stripe failed:\n" + "\n".join(fake.errors)


@pytest.fixture
def model_app(
    database_url: str, partner_center: FakePartnerCenter, stripe: FakeStripe
) -> Iterator[Flask]:
    """The portal on both fakes; a failed change gives up after three attempts (the journeys
    reach staff's part quickly)."""
    config: dict[str, Any] = {
        "PORTAL_ENV": "testing",
        "TESTING": True,
        "PORTAL_SECRET_KEY": "model-test-secret-not-for-production",
        "PORTAL_DATABASE_URL": database_url,
        "PORTAL_BROKER_URL": "memory://",
        "PORTAL_TASK_QUEUE": f"model-{uuid.uuid4().hex[:10]}",
        "PORTAL_PLUGINS": ["partner_center_provider", "stripe"],
        "PORTAL_PROVIDER": "partner_center",
        "PORTAL_PAYMENT_GATEWAY": "stripe",
        "PORTAL_PLUGIN_SETTINGS": {
            "partner_center": {
                "STATIC_TOKEN": STATIC_TOKEN,
                "BASE_URL": partner_center.url,
                "TIMEOUT_SECONDS": "2",
                "POLL_INTERVAL_SECONDS": "0.05",
                "POLL_LIMIT_SECONDS": "1",
            },
            "stripe": {
                "SECRET_KEY": "sk_test_model_0123456789",
                "WEBHOOK_SECRET": WEBHOOK_SECRET,
                "API_BASE": stripe.url,
                "TIMEOUT_SECONDS": "5",
            },
        },
        "PORTAL_RATELIMIT_STORAGE_URL": "memory://",
        "PORTAL_PROVIDER_CALL_LIMIT": "100000 per minute",
        "PORTAL_PROVISIONING_MAX_ATTEMPTS": 3,
        "PORTAL_MAIL_BACKEND": "console",
        "PORTAL_ARGON2_TIME_COST": 1,
        "PORTAL_ARGON2_MEMORY_KIB": 8192,
    }
    app = create_app(config)
    try:
        yield app
    finally:
        get_database(app).dispose()
