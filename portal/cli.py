"""``flask portal …`` commands."""

from __future__ import annotations

from datetime import timedelta

import click
from alembic import command
from alembic.config import Config as AlembicConfig
from flask import Flask, current_app
from flask.cli import AppGroup

from portal.config import ROOT, public_view

portal_cli = AppGroup("portal", help="CSP Portal administration.")


def alembic_config(url: str) -> AlembicConfig:
    cfg = AlembicConfig(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.attributes["database_url"] = url
    return cfg


def migrate(url: str) -> None:
    command.upgrade(alembic_config(url), "head")


@portal_cli.command("migrate")
def migrate_command() -> None:
    """Bring the database schema up to date (alembic upgrade head)."""
    migrate(current_app.config["PORTAL_DATABASE_URL"])
    click.echo("database is up to date")


@portal_cli.command("demo")
def demo_command() -> None:
    """Create the demo partner, customers, users and staff (idempotent)."""
    from portal.services.demo import DEMO_PASSWORD, create_demo_data

    created = create_demo_data()
    click.echo("demo data ready" if created else "demo data already present")
    click.echo(f"every demo login uses the password: {DEMO_PASSWORD}")


@portal_cli.command("purge-sessions")
def purge_sessions_command() -> None:
    """Delete expired sign-in sessions."""
    from portal.web.session_store import purge_expired

    app = current_app
    count = purge_expired(
        app,
        timedelta(minutes=app.config["PORTAL_SESSION_IDLE_MINUTES"]),
        timedelta(hours=app.config["PORTAL_SESSION_ABSOLUTE_HOURS"]),
    )
    click.echo(f"{count} expired sessions deleted")


@portal_cli.command("config")
def config_command() -> None:
    """Show the effective PORTAL_* settings (secrets masked)."""
    for key, value in sorted(public_view(current_app.config).items()):
        click.echo(f"{key}={value}")


def init_app(app: Flask) -> None:
    app.cli.add_command(portal_cli)
