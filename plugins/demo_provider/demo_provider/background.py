"""Background work of the demo provider: quantity changes sent through the outbox.

Until the licence change log exists, ``flask demo-provider exercise`` queues a handful of
quantity changes for the demo customers so a fresh ``make run`` shows background work
completing, retrying after a technical failure and being rejected, on the staff page
*Plugins and background work*.
"""

from __future__ import annotations

import uuid

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.db import get_database
from portal.integrations.providers import QuantityChange
from portal.integrations.registry import integrations
from portal.integrations.results import BusinessRejection, Succeeded, TechnicalFailure
from portal.models import Customer
from portal.models.outbox import OutboxItem
from portal.tasks.handlers import Done, GiveUp, Outcome, RetryLater
from portal.tasks.outbox import enqueue

KIND = "demo_provider.set_quantity"
PROVIDER_KEY = "demo"


def set_quantity(item: OutboxItem, session: Session) -> Outcome:
    """Send one absolute target quantity; the outbox item's id is the stable request id."""
    payload = item.payload
    change = QuantityChange(
        request_id=f"outbox-{item.id}",
        customer_tenant_id=str(payload["customer_tenant_id"]),
        subscription_ref=str(payload["subscription_ref"]),
        target_quantity=int(str(payload["target_quantity"])),
    )
    result = integrations().providers.get(PROVIDER_KEY).set_quantity(change)
    if isinstance(result, Succeeded):
        return Done({"quantity": result.value.quantity})
    if isinstance(result, TechnicalFailure):
        return RetryLater(result.message, result.retry_after)
    assert isinstance(result, BusinessRejection)
    return GiveUp(f"{result.reason} ({result.code})" if result.code else result.reason)


demo_cli = AppGroup("demo-provider", help="The demo licence provider.")


@demo_cli.command("exercise")
@click.option("--count", default=12, show_default=True, help="How many changes to queue.")
def exercise_command(count: int) -> None:
    """Queue quantity changes for the demo customers, to watch the background work."""
    app = current_app
    with get_database(app).sessions() as session:
        customers = list(
            session.scalars(select(Customer).where(Customer.ms_tenant_id.is_not(None)))
        )
        if not customers:
            raise click.ClickException("no customers with a Microsoft tenant: run `portal demo`")
        for number in range(count):
            customer = customers[number % len(customers)]
            enqueue(
                session,
                KIND,
                {
                    "customer_tenant_id": customer.ms_tenant_id,
                    "subscription_ref": f"demo-m365-{customer.id}",
                    "target_quantity": 5 + number,
                    "nonce": uuid.uuid4().hex,
                },
                partner_id=customer.partner_id,
                customer_id=customer.id,
                app=app,
            )
        session.commit()
    click.echo(f"queued {count} demo quantity changes; watch them on /staff/system")


def add_commands(app: Flask) -> None:
    app.cli.add_command(demo_cli)
