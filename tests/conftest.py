"""Fixtures: an app per test on SQLite and (when configured, always in CI) PostgreSQL, seeded
partners, signed-in clients, and a real SMTP server to read the mail the portal sends."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from flask import Flask

from portal import create_app
from portal.cli import migrate
from portal.core.db import Base, get_database
from tests.support import HttpsClient, Tenant, seed_partner

IN_CI = os.environ.get("CI", "").lower() == "true"
PG_URL = os.environ.get("PORTAL_TEST_DATABASE_URL", "")
REDIS_URL = os.environ.get("PORTAL_TEST_REDIS_URL", "")

if IN_CI and not PG_URL:
    raise pytest.UsageError("CI=true: PORTAL_TEST_DATABASE_URL must point at PostgreSQL")
if IN_CI and not REDIS_URL:
    raise pytest.UsageError("CI=true: PORTAL_TEST_REDIS_URL must point at Redis")

BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])


def _ensure_pg_database(url: str) -> None:
    target = sa.make_url(url)
    admin = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.scalar(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": target.database}
            )
            if not exists:
                conn.execute(sa.text(f'CREATE DATABASE "{target.database}"'))
    finally:
        admin.dispose()


def _reset_schema(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("DROP SCHEMA public CASCADE"))
            conn.execute(sa.text("CREATE SCHEMA public"))
        else:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(sa.text(f'DROP TABLE IF EXISTS "{table.name}"'))
            conn.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A database migrated to head, once per backend per test session."""
    if request.param == "postgresql":
        _ensure_pg_database(PG_URL)
        url = PG_URL
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'portal.sqlite3'}"
    _reset_schema(url)
    migrate(url)
    return url


def _empty_tables(app: Flask) -> None:
    engine = get_database(app).engine
    names = [t.name for t in Base.metadata.sorted_tables]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text(f"TRUNCATE {', '.join(names)} RESTART IDENTITY CASCADE"))
        else:
            for name in reversed(names):
                conn.execute(sa.text(f'DELETE FROM "{name}"'))  # noqa: S608  (our own table names)


@dataclass
class Mailbox:
    """Messages received by the local SMTP server."""

    messages: list[Message] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"

    def last_to(self, address: str) -> Message:
        for message in reversed(self.messages):
            if message["To"] == address:
                return message
        raise AssertionError(f"no mail to {address}; got {[m['To'] for m in self.messages]}")

    @staticmethod
    def body(message: Message) -> str:
        payload = message.get_payload(decode=True)
        assert isinstance(payload, bytes)
        return payload.decode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[tuple[int, Mailbox]]:
    mailbox = Mailbox()
    port = _free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield port, mailbox
    controller.stop()


@pytest.fixture
def mailbox(smtp_server: tuple[int, Mailbox]) -> Mailbox:
    smtp_server[1].messages.clear()
    return smtp_server[1]


def portal_test_config(database_url: str, smtp_port: int, **overrides: Any) -> dict[str, Any]:
    return {
        "PORTAL_ENV": "testing",
        "TESTING": True,
        "PORTAL_DATABASE_URL": database_url,
        "PORTAL_SECRET_KEY": "test-secret-key-not-for-production",
        "PORTAL_MAIL_BACKEND": "smtp",
        "PORTAL_MAIL_SERVER": "127.0.0.1",
        "PORTAL_MAIL_PORT": smtp_port,
        # the lowest argon2id cost ASVS allows would slow the suite; test_passwords checks
        # the production parameters themselves
        "PORTAL_ARGON2_TIME_COST": 1,
        "PORTAL_ARGON2_MEMORY_KIB": 8192,
        "RATELIMIT_KEY_PREFIX": f"test-{os.urandom(6).hex()}",
        **overrides,
    }


@pytest.fixture
def app_factory(database_url: str, smtp_server: tuple[int, Mailbox]) -> Iterator[Any]:
    apps: list[Flask] = []

    def make(**overrides: Any) -> Flask:
        app = create_app(portal_test_config(database_url, smtp_server[0], **overrides))
        app.test_client_class = HttpsClient
        if not apps:
            _empty_tables(app)
        apps.append(app)
        return app

    yield make
    for app in apps:
        get_database(app).dispose()


@pytest.fixture
def app(app_factory: Any) -> Flask:
    return app_factory()  # type: ignore[no-any-return]


@pytest.fixture
def tenant(app: Flask) -> Tenant:
    """Partner "alpha" on portal-a.test with customers a and b."""
    return seed_partner(app, "alpha", "portal-a.test")


@pytest.fixture
def other_tenant(app: Flask, tenant: Tenant) -> Tenant:
    """A second partner, "beta", on portal-b.test."""
    return seed_partner(app, "beta", "portal-b.test", colour="#8a1538")


@pytest.fixture
def client(app: Flask) -> HttpsClient:
    return app.test_client()  # type: ignore[return-value]


def pytest_configure(config: pytest.Config) -> None:
    Path("test-results").mkdir(exist_ok=True)
