"""The set-up promises: migrations match the models, the demo command, configuration."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask import Flask
from sqlalchemy import func, select

from portal import create_app
from portal.core import config as portal_config
from portal.core.db import Base, get_database
from portal.demo import DEMO_PASSWORD
from portal.features.identity.models import Membership, StaffUser, User
from portal.features.tenancy.models import Customer, Partner
from tests.support import HttpsClient, sign_in


def _core_objects_only(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    # plugins' tables (``<plugin>_*``) belong to their own metadata and migration branches
    return not (
        type_ == "table" and reflected and compare_to is None and name not in Base.metadata.tables
    )


def test_migrations_match_the_models(app: Flask) -> None:
    with get_database(app).engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "include_object": _core_objects_only}
        )
        differences = compare_metadata(context, Base.metadata)
    assert differences == []


def test_demo_command_creates_the_documented_logins_once(app: Flask) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(args=["portal", "demo"])
    assert result.exit_code == 0 and "demo data ready" in result.output
    again = runner.invoke(args=["portal", "demo"])
    assert "demo data already present" in again.output
    with app.app_context(), get_database(app).sessions() as s:
        assert s.scalar(select(func.count()).select_from(Partner)) == 1
        assert s.scalar(select(func.count()).select_from(Customer)) == 3
        roles = {(m.customer_id, m.role) for m in s.scalars(select(Membership))}
        assert len(roles) == 9
        assert s.scalar(select(func.count()).select_from(StaffUser)) == 4
        assert s.scalar(select(func.count()).select_from(User)) == 9
    client: HttpsClient = app.test_client()  # type: ignore[assignment]
    client.host = "localhost"
    assert sign_in(client, "admin@fabrikam.example", DEMO_PASSWORD).status_code == 302
    assert "Contoso Cloud" in client.get("/").get_data(as_text=True)
    assert (
        sign_in(client, "admin@contoso-cloud.example", DEMO_PASSWORD, staff=True).status_code == 302
    )
    tailspin = HttpsClient(app, client.response_wrapper)
    tailspin.host = "localhost"
    sign_in(tailspin, "finance@tailspin.example", DEMO_PASSWORD)
    assert "Your account is on credit hold." in tailspin.get("/").get_data(as_text=True)


def test_production_refuses_to_start_without_a_secret_key() -> None:
    with pytest.raises(RuntimeError, match="PORTAL_SECRET_KEY is not set"):
        create_app(
            {
                "PORTAL_ENV": "production",
                "PORTAL_SECRET_KEY": None,
                "PORTAL_DATABASE_URL": "sqlite://",
            }
        )


def test_environment_variables_configure_the_portal() -> None:
    settings = portal_config.load(
        {
            "PORTAL_SESSION_IDLE_MINUTES": "15",
            "PORTAL_INSECURE_COOKIES": "true",
            "PORTAL_MAIL_BACKEND": "smtp",
        }
    )
    assert settings["PORTAL_SESSION_IDLE_MINUTES"] == 15
    assert settings["PORTAL_INSECURE_COOKIES"] is True
    assert settings["PORTAL_MAIL_BACKEND"] == "smtp"
    assert settings["PORTAL_SESSION_ABSOLUTE_HOURS"] == 12


def test_secrets_are_masked_in_the_config_listing(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["portal", "config"])
    assert "PORTAL_SECRET_KEY=••••••" in result.output
    assert app.config["SECRET_KEY"] not in result.output
    assert "PORTAL_SESSION_IDLE_MINUTES=30" in result.output


def test_plain_http_development_drops_the_host_prefix(app_factory) -> None:  # type: ignore[no-untyped-def]
    app = app_factory(PORTAL_INSECURE_COOKIES=True)
    assert app.config["SESSION_COOKIE_NAME"] == "portal_session"
    assert app.config["SESSION_COOKIE_SECURE"] is False
    assert app.config["SESSION_COOKIE_HTTPONLY"] is True


def test_readme_documents_every_setting() -> None:
    readme = (portal_config.ROOT / "README.md").read_text()
    undocumented = [name for name in portal_config.SETTINGS if f"`PORTAL_{name}`" not in readme]
    assert undocumented == []
