"""Block A of the reliability notes (payments): a portal with the Stripe plugin on a PostgreSQL
database of its own, the fake Stripe, and the same portal served by gunicorn with several
workers (separate processes racing on the same rows, as in production).

Every process started here is stopped in a ``finally``; every wait is bounded.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from flask import Flask
from sqlalchemy import select

from portal import create_app
from portal.cli import migrate
from portal.core.config import ROOT
from portal.core.db import get_database
from portal.features.payments.models import PaymentWebhookEvent
from portal.features.payments.services.events import RECEIPT_KIND
from portal.outbox.models import OutboxItem
from portal.testing.support import SeededPartner, seed_partner
from tests.reliability.conftest import PG_URL, _fresh_database, free_port, require_services

if str(ROOT / "plugins" / "stripe_payments") not in sys.path:
    sys.path.insert(0, str(ROOT / "plugins" / "stripe_payments"))

from stripe_payments import EXTENSION, StripeGateway
from stripe_payments.fake import FakeStripe

GUNICORN = ROOT / ".venv" / "bin" / "gunicorn"
SECRET_KEY = "sk_test_reliability_0123456789"
WEBHOOK_SECRET = "whsec_reliability_test_secret"
WEBHOOK = "/p/stripe/webhook"
WORKERS = 3
START_TIMEOUT_S = 60.0


@dataclass
class World:
    """The portal (in this process), the fake Stripe, and the seeded partner."""

    app: Flask
    fake: FakeStripe
    partner: SeededPartner
    url: str

    @property
    def gateway(self) -> StripeGateway:
        found = self.app.extensions[EXTENSION]
        assert isinstance(found, StripeGateway)
        return found

    def engine(self) -> sa.Engine:
        return get_database(self.app).engine

    def receipts(self, invoice_ids: list[int] | None = None) -> int:
        """Receipt mails queued (one outbox item per recorded payment)."""
        with get_database(self.app).sessions() as s:
            items = s.scalars(select(OutboxItem).where(OutboxItem.kind == RECEIPT_KIND)).all()
            if invoice_ids is None:
                return len(items)
            from portal.features.billing.models import InvoicePayment

            ids = set(
                s.scalars(
                    select(InvoicePayment.id).where(InvoicePayment.invoice_id.in_(invoice_ids))
                )
            )
            return sum(1 for item in items if item.payload.get("payment_id") in ids)

    def events(self) -> int:
        with get_database(self.app).sessions() as s:
            return len(s.scalars(select(PaymentWebhookEvent.id)).all())

    def row_counts(self) -> dict[str, int]:
        with self.engine().connect() as conn:
            names = sa.inspect(conn).get_table_names()
            return {
                name: int(conn.scalar(sa.text(f'SELECT count(*) FROM "{name}"')) or 0)  # noqa: S608
                for name in names
            }


def settings(fake: FakeStripe) -> dict[str, str]:
    return {
        "SECRET_KEY": SECRET_KEY,
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
        "API_BASE": fake.url,
        "TIMEOUT_SECONDS": "10",
    }


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    require_services()
    base = sa.make_url(PG_URL)
    # not "_payments": the integration tests' payment database, which they migrate once per
    # session (with the demo gateway's branch) and would find reset here when they run after
    name = f"{base.database}_reliability_payments"
    url = base.set(database=name).render_as_string(hide_password=False)
    _fresh_database(url)
    migrate(url)
    fake = FakeStripe(webhook_secret=WEBHOOK_SECRET).start()
    app = create_app(
        {
            "PORTAL_ENV": "testing",
            "TESTING": True,
            "PORTAL_DATABASE_URL": url,
            "PORTAL_SECRET_KEY": "payments-reliability-secret-key",
            "PORTAL_PLUGINS": ["stripe"],
            "PORTAL_PLUGIN_SETTINGS": {"stripe": settings(fake)},
            "PORTAL_PAYMENT_GATEWAY": "stripe",
            "PORTAL_BROKER_URL": "memory://",
            "PORTAL_MAIL_BACKEND": "console",
            "PORTAL_ARGON2_TIME_COST": 1,
            "PORTAL_ARGON2_MEMORY_KIB": 8192,
        }
    )
    try:
        with app.app_context():
            partner = seed_partner(app, "payments", "pay.portal.test")
        yield World(app, fake, partner, url)
    finally:
        fake.stop()
        get_database(app).dispose()
    assert not fake.errors, "the fake Stripe failed:\n" + "\n".join(fake.errors)


def serve_env(world: World, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_")}
    env.update(
        PORTAL_DATABASE_URL=world.url,
        PORTAL_SECRET_KEY=secrets.token_urlsafe(32),
        PORTAL_ENV="production",
        PORTAL_INSECURE_COOKIES="1",
        PORTAL_PLUGINS="stripe",
        PORTAL_PAYMENT_GATEWAY="stripe",
        PORTAL_BROKER_URL="memory://",
        PORTAL_MAIL_BACKEND="console",
        **{f"PORTAL_STRIPE_{k}": v for k, v in settings(world.fake).items()},
    )
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def served(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The portal under ``gunicorn -w 3`` (sync workers): its base URL."""
    yield from gunicorn(serve_env(world), tmp_path_factory.mktemp("gunicorn"))


def gunicorn(env: dict[str, str], logs: Path, workers: int = WORKERS) -> Iterator[str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = logs / "gunicorn.log"
    command = [str(GUNICORN), "-w", str(workers), "-k", "sync", "-b", f"127.0.0.1:{port}"]
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [*command, "app:app"], cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"gunicorn exited:\n{log_path.read_text()[-3000:]}")
            try:
                # no signature: 400 once a worker runs the app
                if requests.post(base + WEBHOOK, data=b"{}", timeout=2).status_code == 400:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"gunicorn did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield base
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def event_of(fake: FakeStripe, type_: str, object_id: str) -> dict[str, Any]:
    return next(e for e in fake.events_of(type_) if e["data"]["object"]["id"] == object_id)
