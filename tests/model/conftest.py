"""The model-based test's markers and world: a portal on the fake Partner Center, per backend
(the root conftest's ``database_url``: SQLite, and PostgreSQL when configured)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from partner_center_provider.fake import FakePartnerCenter

from portal.core.db import get_database
from tests.reliability.licence_support import make_app

MARKERS = {
    "model": "the model-based test of the money loop (tests/model)",
    "model_licences": "the model-based test's licence rules only",
    "model_money": "the model-based test with every behaviour group",
}


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")


@pytest.fixture
def partner_center() -> Iterator[FakePartnerCenter]:
    with FakePartnerCenter() as fake:
        yield fake
    assert not fake.errors, "the fake Partner Center failed:\n" + "\n".join(fake.errors)


@pytest.fixture
def model_app(database_url: str, partner_center: FakePartnerCenter) -> Iterator[Flask]:
    """The portal with the Partner Center plugin on the fake; a failed change gives up after
    three attempts (the journeys reach staff's part quickly)."""
    app = make_app(database_url, partner_center, max_attempts=3, timeout_seconds=2.0)
    try:
        yield app
    finally:
        get_database(app).dispose()
