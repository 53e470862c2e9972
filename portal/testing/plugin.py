"""The pytest plugin of CSP Portal (entry point ``pytest11: portal_testing``).

Fixtures for plugin authors, all named ``portal_*`` so they never clash with a project's own:

- ``portal_plugins``: the plugins to enable; override it (default ``[]``).
- ``portal_config``: extra ``create_app`` settings; override it (default ``{}``), e.g.
  ``{"PORTAL_PLUGIN_SETTINGS": {"acme": {"API_URL": fake.url}}}``.
- ``portal_database_url``: a fresh SQLite file per test; also PostgreSQL (a database named
  ``<name>_plugins`` beside it) when ``PORTAL_TEST_DATABASE_URL`` is set.
- ``portal_app``: the portal with ``portal_plugins`` enabled, its database migrated with the core
  and the enabled plugins' Alembic branches.
- ``portal_partner``: a partner on ``portal.test`` with a customer and a user per role.
- ``portal_client``: a browser-like test client on the partner's host (``sign_in``,
  ``post_form``).
- ``portal_fake_server``: starts local HTTP fakes on 127.0.0.1 (stopped at teardown).

Contract suites per adapter kind are in :mod:`portal.testing.contracts`; in-memory test doubles
in :mod:`portal.testing.fakes`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from portal.testing.fake_server import FakeServer, Handler
from portal.testing.support import (
    PortalClient,
    SeededPartner,
    client_for,
    make_app,
    postgres_test_url,
    seed_partner,
)

# the suites' asserts explain themselves in a failure (they are not in a test module)
pytest.register_assert_rewrite("portal.testing.contracts", "portal.testing.fakes")

POSTGRES_ENV = "PORTAL_TEST_DATABASE_URL"
BACKENDS = ["sqlite"] + (["postgresql"] if os.environ.get(POSTGRES_ENV) else [])


@pytest.fixture
def portal_plugins() -> list[str]:
    """The plugins ``portal_app`` enables, by name. Override it in your tests."""
    return []


@pytest.fixture
def portal_config() -> dict[str, Any]:
    """Extra settings for ``create_app`` (they win over the test defaults). Override it."""
    return {}


@pytest.fixture(params=BACKENDS)
def portal_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A throwaway database: a new SQLite file, or the PostgreSQL test database's sibling."""
    if request.param == "postgresql":
        return postgres_test_url(os.environ[POSTGRES_ENV])
    return f"sqlite:///{tmp_path / 'portal.sqlite3'}"


@pytest.fixture
def portal_app(
    portal_plugins: list[str], portal_config: dict[str, Any], portal_database_url: str
) -> Iterator[Flask]:
    """The portal with ``portal_plugins`` enabled, on a migrated, empty database."""
    from portal.core.db import get_database

    app = make_app(portal_database_url, portal_plugins, portal_config)
    yield app
    get_database(app).dispose()


@pytest.fixture
def portal_partner(portal_app: Flask) -> SeededPartner:
    """A partner on ``portal.test``: one customer, a user per customer role."""
    return seed_partner(portal_app)


@pytest.fixture
def portal_client(portal_app: Flask, portal_partner: SeededPartner) -> PortalClient:
    """A test client on ``https://portal.test`` (the partner's host), not signed in."""
    return client_for(portal_app, portal_partner.host)


@pytest.fixture
def portal_fake_server() -> Iterator[Callable[[Handler], FakeServer]]:
    """Start a fake HTTP server: ``fake = portal_fake_server(handler)``; ``fake.url``,
    ``fake.requests``. Every server stops at teardown; a handler that raised fails the test."""
    servers: list[FakeServer] = []

    def start(handler: Handler) -> FakeServer:
        server = FakeServer(handler).start()
        servers.append(server)
        return server

    yield start
    errors = [error for server in servers for error in server.errors]
    for server in servers:
        server.stop()
    if errors:
        pytest.fail("a fake server's handler raised:\n" + "\n".join(errors))
