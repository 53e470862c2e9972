"""Building a portal to test a plugin against: its config, a migrated database, a partner with
users, and a test client that behaves like a browser on that partner's host.

The fixtures in :mod:`portal.testing.plugin` wrap these functions; a test (or a script run in
a fresh interpreter) may call them directly.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from portal.plugins import is_public

PASSWORD = "plugin-test-password-2026"  # noqa: S105  (test users only)
DEFAULT_HOST = "portal.test"
CSRF_TOKEN = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')
# the derived PostgreSQL database the plugin fixtures use, beside the project's own test database
POSTGRES_SUFFIX = "_plugins"

# url -> migration locations it was migrated with, in this process
_prepared: dict[str, tuple[str, ...]] = {}


def app_config(database_url: str, plugins: Iterable[str] = (), **overrides: Any) -> dict[str, Any]:
    """``create_app`` settings for a test: the given plugins only, cheap password hashing."""
    return {
        "PORTAL_ENV": "testing",
        "TESTING": True,
        "PORTAL_DATABASE_URL": database_url,
        "PORTAL_SECRET_KEY": "portal-testing-secret-key-not-for-production",
        "PORTAL_PLUGINS": list(plugins),
        "PORTAL_MAIL_BACKEND": "console",
        "PORTAL_ARGON2_TIME_COST": 1,
        "PORTAL_ARGON2_MEMORY_KIB": 8192,
        "RATELIMIT_KEY_PREFIX": f"portal-testing-{os.urandom(6).hex()}",
        **overrides,
    }


def make_app(
    database_url: str, plugins: Iterable[str] = (), config: Mapping[str, Any] | None = None
) -> Flask:
    """A portal with ``plugins`` enabled, its database migrated (core and plugin branches).

    The database must be a throwaway one: when it was migrated with other plugins it is wiped,
    otherwise its tables are emptied.
    """
    from portal import create_app
    from portal.integrations.registry import integrations

    app = create_app(app_config(database_url, plugins, **dict(config or {})))
    app.test_client_class = PortalClient
    prepare_database(database_url, integrations(app).migration_locations)
    return app


def prepare_database(url: str, locations: Sequence[str]) -> None:
    """Bring ``url`` to the schema of the core plus ``locations``, with every table empty."""
    from portal.cli import migrate

    key = tuple(sorted(locations))
    if _prepared.get(url) == key:
        empty_tables(url)
        return
    _prepared.pop(url, None)
    reset_database(url)
    migrate(url, list(locations))
    _prepared[url] = key


def reset_database(url: str) -> None:
    """Drop everything in the database (PostgreSQL: the ``public`` schema)."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(sa.text("DROP SCHEMA public CASCADE"))
                conn.execute(sa.text("CREATE SCHEMA public"))
            else:
                metadata = sa.MetaData()
                metadata.reflect(conn)
                metadata.drop_all(conn)
    finally:
        engine.dispose()


def empty_tables(url: str) -> None:
    """Delete every row of every table but ``alembic_version``."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            metadata = sa.MetaData()
            metadata.reflect(conn)
            tables = [t for t in metadata.sorted_tables if t.name != "alembic_version"]
            if not tables:
                return
            if engine.dialect.name == "postgresql":
                names = ", ".join(f'"{t.name}"' for t in tables)
                conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
            else:
                for table in reversed(tables):
                    conn.execute(table.delete())
    finally:
        engine.dispose()


def postgres_test_url(url: str, suffix: str = POSTGRES_SUFFIX) -> str:
    """The database beside ``url`` named ``<name><suffix>``, created when missing."""
    target = sa.make_url(url)
    derived = target.set(database=f"{target.database}{suffix}")
    admin = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.scalar(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": derived.database}
            )
            if not exists:
                conn.execute(sa.text(f'CREATE DATABASE "{derived.database}"'))
    finally:
        admin.dispose()
    return derived.render_as_string(hide_password=False)


@dataclass(frozen=True)
class SeededPartner:
    """A partner on ``host`` with one customer and a user per customer role.

    ``users`` maps a role (``"administrator"``, ``"subscription_manager"``,
    ``"finance_manager"``) to that user's email; every user's password is :data:`PASSWORD`.
    """

    partner_id: int
    slug: str
    host: str
    customer_id: int
    users: dict[str, str] = field(default_factory=dict)
    password: str = PASSWORD


def seed_partner(app: Flask, slug: str = "example", host: str = DEFAULT_HOST) -> SeededPartner:
    """Create a partner answering on ``host``, a customer, and a user per customer role."""
    from portal.core.db import get_database
    from portal.core.roles import CustomerRole
    from portal.features.identity.models import Membership, User
    from portal.features.identity.passwords import hash_password
    from portal.features.tenancy.models import Customer, Partner, PartnerHost

    with app.app_context(), get_database(app).sessions() as session:
        password_hash = hash_password(PASSWORD)
        partner = Partner(
            slug=slug,
            name=f"{slug.title()} Cloud",
            primary_colour="#0b5cad",
            support_email=f"help@{slug}.example",
            hosts=[PartnerHost(host=host)],
        )
        session.add(partner)
        session.flush()
        customer = Customer(partner_id=partner.id, name=f"{slug.title()} customer")
        session.add(customer)
        session.flush()
        users: dict[str, str] = {}
        for role in CustomerRole:
            user = User(
                partner_id=partner.id,
                email=f"{role.value}@customer.{slug}.example",
                name=role.value.replace("_", " ").title(),
                password_hash=password_hash,
            )
            session.add(user)
            session.flush()
            session.add(Membership(customer_id=customer.id, user_id=user.id, role=role))
            users[role.value] = user.email
        session.commit()
        return SeededPartner(
            partner_id=partner.id, slug=slug, host=host, customer_id=customer.id, users=users
        )


def csrf_token(html: str | bytes) -> str:
    """The CSRF token of the first form in a page."""
    text = html.decode() if isinstance(html, bytes) else html
    match = CSRF_TOKEN.search(text)
    if match is None:
        raise AssertionError("no CSRF token in the page")
    return match.group(1)


class PortalClient(FlaskClient):
    """A test client on ``https://<host>`` that sends a same-origin Referer, like a browser
    (the portal's cookies are ``__Host-`` cookies and its CSRF check is SSL-strict)."""

    host = DEFAULT_HOST

    def open(
        self, *args: Any, buffered: bool = False, follow_redirects: bool = False, **kwargs: Any
    ) -> TestResponse:
        kwargs.setdefault("base_url", f"https://{self.host}")
        headers = dict(kwargs.pop("headers", None) or {})
        headers.setdefault("Referer", f"https://{self.host}/")
        kwargs["headers"] = headers
        return super().open(*args, buffered=buffered, follow_redirects=follow_redirects, **kwargs)

    def post_form(
        self, url: str, data: Mapping[str, str], page: str | None = None, **kwargs: Any
    ) -> TestResponse:
        """POST like a browser: read the CSRF token from ``page`` (default ``url``) first."""
        token = csrf_token(self.get(page or url).data)
        return self.post(url, data={"csrf_token": token, **data}, **kwargs)

    def sign_in(self, email: str, password: str = PASSWORD) -> TestResponse:
        """Sign in through the customer sign-in form."""
        response = self.post_form("/login", {"email": email, "password": password})
        if response.status_code != 302:
            raise AssertionError(f"signing in as {email} failed ({response.status_code})")
        return response


def client_for(app: Flask, host: str = DEFAULT_HOST) -> PortalClient:
    """A :class:`PortalClient` of ``app`` on ``host``."""
    app.test_client_class = PortalClient
    client = cast(PortalClient, app.test_client())
    client.host = host
    return client


def private_portal_imports(package: Path) -> list[str]:
    """The imports of the portal's private modules in a plugin package (``[]`` when none):
    anything outside :data:`portal.plugins.PUBLIC_SURFACE`.

    The package's ``migrations`` folder is not checked: Alembic scripts use the portal's column
    types, like the core's own.
    """
    private: list[str] = []
    for path in sorted(package.rglob("*.py")):
        if "migrations" in path.relative_to(package).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            modules: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            for module in modules:
                if module.split(".")[0] != "portal":
                    continue
                if is_public(module):
                    continue
                private.append(f"{path.relative_to(package)}: {module}")
    return private
