"""``flask portal …`` commands."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import click
from alembic import command
from alembic.config import Config as AlembicConfig
from flask import Flask, current_app
from flask.cli import AppGroup

from portal.core.config import ROOT, public_view

portal_cli = AppGroup("portal", help="CSP Portal administration.")


def alembic_config(url: str, plugin_locations: list[str] | None = None) -> AlembicConfig:
    """Alembic set to the portal's migrations plus the branches of the loaded plugins."""
    cfg = AlembicConfig(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    locations = [str(ROOT / "migrations" / "versions"), *(plugin_locations or [])]
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", os.pathsep.join(locations))
    cfg.attributes["database_url"] = url
    return cfg


def migrate(url: str, plugin_locations: list[str] | None = None) -> None:
    """``alembic upgrade heads``: the core and every loaded plugin's branch."""
    command.upgrade(alembic_config(url, plugin_locations), "heads")


@portal_cli.command("migrate")
def migrate_command() -> None:
    """Bring the database schema up to date, plugins' tables included."""
    from portal.integrations.registry import integrations

    migrate(current_app.config["PORTAL_DATABASE_URL"], integrations().migration_locations)
    click.echo("database is up to date")


@portal_cli.command("demo")
def demo_command() -> None:
    """Create the demo partner, customers, users and staff (idempotent)."""
    from portal.demo import DEMO_PASSWORD, create_demo_data

    created = create_demo_data()
    click.echo("demo data ready" if created else "demo data already present")
    click.echo(f"every demo login uses the password: {DEMO_PASSWORD}")


@portal_cli.command("demo-changes")
@click.option("--count", default=8, show_default=True, help="How many changes to request.")
def demo_changes_command(count: int) -> None:
    """Add seats to the demo subscriptions, to watch the licence change log move."""
    from portal.core.errors import ServiceError
    from portal.core.extensions import rendering_in
    from portal.demo import request_demo_changes

    try:
        with rendering_in("en"):
            queued, refusals = request_demo_changes(count)
    except ServiceError as why:
        raise click.ClickException(why.message) from why
    for refusal in refusals:
        click.echo(refusal)
    click.echo(f"requested {queued} demo licence changes ({len(refusals)} refused by the rules)")


@portal_cli.command("purge-sessions")
def purge_sessions_command() -> None:
    """Delete expired sign-in sessions."""
    from portal.features.identity.session_store import purge_expired

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


@portal_cli.command("plugins")
def plugins_command() -> None:
    """List the loaded plugins: version, where from, hooks, adapters and settings."""
    from portal.integrations.registry import Registry, integrations
    from portal.plugins import plugin_infos

    infos = plugin_infos()
    if not infos:
        click.echo("no plugins loaded (name them in PORTAL_PLUGINS)")
    loaded = integrations()
    registries: list[Registry[Any]] = [
        loaded.providers,
        loaded.payment_gateways,
        loaded.accounting_systems,
        loaded.notifiers,
    ]
    for info in infos.values():
        click.echo(f"{info.name} {info.version}  [{info.source}]")
        click.echo(f"  hooks: {', '.join(info.hooks) or '—'}")
        for registry in registries:
            keys = [k for k, owner in registry.owners.items() if owner == info.name]
            if keys:
                click.echo(f"  {registry.kind}: {', '.join(sorted(keys))}")
        for key, value in sorted(info.settings.items()):
            click.echo(f"  PORTAL_{info.name.upper()}_{key}={value}")


billing_cli = AppGroup("billing", help="Billing runs and invoices.")
portal_cli.add_command(billing_cli)


@billing_cli.command("run")
@click.option(
    "--date",
    "on",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="Bill the contracts whose period starts on this day, YYYY-MM-DD (each partner's "
    "time zone). Default: today.",
)
@click.option("--partner", "partner_slug", default=None, help="Only this partner (its slug).")
def billing_run_command(on: Any, partner_slug: str | None) -> None:
    """Make the invoices of every contract whose billing period starts on a day.

    Running a day again creates nothing new: what was invoiced is counted as already invoiced.
    """
    from sqlalchemy import select

    from portal.core.db import get_database, utcnow
    from portal.features.billing.services.run import run_billing_for_partner
    from portal.features.tenancy.models import Partner
    from portal.features.tenancy.services import local_today

    with get_database().sessions() as session:
        statement = select(Partner).order_by(Partner.id)
        if partner_slug:
            statement = statement.where(Partner.slug == partner_slug)
        partners = list(session.scalars(statement))
    if not partners:
        raise click.ClickException(
            f"no partner with the slug {partner_slug!r}" if partner_slug else "no partners yet"
        )
    failed = False
    for partner in partners:
        today = local_today(partner, utcnow())
        day = on.date() if on is not None else today
        if day > today:
            # its changes are not all known yet: billed now, the later ones would never be
            click.echo(
                f"{partner.name}: {day.isoformat()} is after today ({today.isoformat()}); a "
                "billing run can be for today or an earlier day",
                err=True,
            )
            failed = True
            continue
        try:
            run = run_billing_for_partner(partner.id, day, "cli")
        except Exception as error:  # recorded on the run too; say it and go on with the next
            click.echo(f"{partner.name}, {day.isoformat()}: the run failed: {error}", err=True)
            failed = True
            continue
        click.echo(
            f"{partner.name}, {day.isoformat()}: {run.invoices_created} invoices created, "
            f"{run.lines_created} lines, {run.credit_notes_created} credit notes; "
            f"{run.contracts_skipped} contracts already invoiced"
        )
        if run.error:
            click.echo(run.error, err=True)
            failed = True
    if failed:
        raise click.ClickException("not everything could be invoiced (see above)")


payments_cli = AppGroup("payments", help="Card payments.")
portal_cli.add_command(payments_cli)


@payments_cli.command("reconcile")
@click.option(
    "--days",
    type=click.IntRange(1, 90),
    default=None,
    help="Look at the payments of the last DAYS days (default: 30).",
)
@click.option(
    "--gateway", "gateway_keys", multiple=True, help="Only this gateway (its key); repeatable."
)
def payments_reconcile_command(days: int | None, gateway_keys: tuple[str, ...]) -> None:
    """Record the payments the gateways confirmed that no webhook recorded (the daily job).

    Running it again records nothing new.
    """
    from portal.core.db import utcnow
    from portal.features.payments.services.events import reconcile
    from portal.integrations.registry import PluginError

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    since = utcnow() - timedelta(days=days) if days else None
    try:
        report = reconcile(app, gateway_keys=gateway_keys or None, since=since)
    except PluginError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"payments reconciliation {report.line()}")
    for note in report.unmatched:
        click.echo(f"unmatched: {note}", err=True)
    if report.failed_gateways:
        raise click.ClickException("a gateway could not be asked (see above)")


def init_app(app: Flask) -> None:
    app.cli.add_command(portal_cli)
