"""Browser fixtures: the portal served over plain http on 127.0.0.1 with the demo data, on every
configured database backend, driven by Debian's Chromium through pytest-playwright."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from werkzeug.serving import make_server

from portal import create_app
from portal.core.db import get_database, utcnow
from portal.demo import create_demo_data
from portal.features.tenancy.branding.brand import brand_cache
from portal.outbox.models import OutboxItem, OutboxState
from tests.conftest import Mailbox, _empty_tables, portal_test_config

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def run_due_work(app: Flask, stop: threading.Event) -> None:
    """A worker's loop for a journey's background work: run every due pending item, again and
    again, until told to stop."""
    from portal.outbox.items import run_item

    while not stop.is_set():
        with app.app_context():
            with get_database().sessions() as s:
                ids = list(
                    s.scalars(
                        sa.select(OutboxItem.id).where(
                            OutboxItem.state == OutboxState.PENDING,
                            OutboxItem.available_at <= utcnow(),
                        )
                    )
                )
            for item_id in ids:
                run_item(app, item_id)
        stop.wait(0.2)


@dataclass(frozen=True)
class LiveServer:
    url: str
    app: Flask
    mailbox: Mailbox


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """Debian's Chromium, never a downloaded one (`playwright install` is not used here)."""
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def live_server(database_url: str, smtp_server: tuple[int, Mailbox]) -> Iterator[LiveServer]:
    """The portal on http://127.0.0.1:<free port>, once per database backend.

    Plain http, so the documented development relaxation applies: the session cookie is
    ``portal_session`` without Secure (``__Host-`` would need https).
    """
    port, mailbox = smtp_server
    app = create_app(
        portal_test_config(database_url, port, PORTAL_INSECURE_COOKIES=True, PORTAL_ENV="testing")
    )
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="portal-live-server", daemon=True)
    thread.start()
    try:
        yield LiveServer(f"http://127.0.0.1:{server.server_port}", app, mailbox)
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()
        get_database(app).dispose()


@pytest.fixture
def demo_portal(live_server: LiveServer) -> LiveServer:
    """The live server with fresh demo data and an empty mailbox, for each test.

    Seeded per test rather than once with the server: other test modules share the database
    of the session and empty its tables for their own apps.
    """
    _empty_tables(live_server.app)
    brand_cache(live_server.app).clear()
    with live_server.app.app_context():
        create_demo_data()
    live_server.mailbox.messages.clear()
    return live_server


@pytest.fixture(scope="session")
def base_url(live_server: LiveServer) -> str:
    """pytest-playwright opens relative URLs (``page.goto("/")``) against the live server."""
    return live_server.url


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict[str, Any]) -> dict[str, Any]:
    # a fixed browser language: the portal picks English from Accept-Language until the user
    # chooses otherwise
    return {**browser_context_args, "locale": "en-US"}


@pytest.fixture
def screenshots(pytestconfig: pytest.Config) -> Path:
    """Where the journey's screenshots go (pytest-playwright empties it at session start)."""
    folder = pytestconfig.rootpath / "test-results"
    folder.mkdir(exist_ok=True)
    return folder
