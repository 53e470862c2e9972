"""Fixtures: an app per test on SQLite and (when configured, always in CI) PostgreSQL, seeded
partners, signed-in clients, and a real SMTP server to read the mail the portal sends.

Under pytest-xdist (``make test`` runs ``pytest -n``) every worker process (``gw0``, ``gw1``, …)
has a PostgreSQL database and a Redis db of its own: this module rewrites
``PORTAL_TEST_DATABASE_URL`` and ``PORTAL_TEST_REDIS_URL`` for the worker before anything else
reads them, so the databases derived from the URL (``…_reliability``, ``…_payments``,
``…_plugins``), the portal's pytest plugin and the Celery workers and gunicorn the tests start
all use the worker's own. The browser tests, the reliability tests and the example plugin's
tests each run as one unit, on one worker (see :data:`XDIST_GROUPS`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

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
# the pytest-xdist worker this process is ("gw0", "gw1", …), "" when not distributing
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
REDIS_DATABASES = 16  # Redis's default number of databases (``databases`` in redis.conf)

if IN_CI and not PG_URL:
    raise pytest.UsageError("CI=true: PORTAL_TEST_DATABASE_URL must point at PostgreSQL")
if IN_CI and not REDIS_URL:
    raise pytest.UsageError("CI=true: PORTAL_TEST_REDIS_URL must point at Redis")


def worker_database_url(url: str, worker: str) -> str:
    """``url`` with the worker's id appended to the database's name (``portal_test_gw0``)."""
    if not (url and worker):
        return url
    target = sa.make_url(url)
    return target.set(database=f"{target.database}_{worker}").render_as_string(hide_password=False)


def worker_redis_url(url: str, worker: str) -> str:
    """``url`` on the Redis db ``(its db + the worker's number) mod 16``: distinct per worker."""
    if not (url and worker):
        return url
    parts = urlsplit(url)
    base = int(parts.path.strip("/") or 0)
    number = int(worker.removeprefix("gw"))
    return urlunsplit(parts._replace(path=f"/{(base + number) % REDIS_DATABASES}"))


if WORKER:
    if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > REDIS_DATABASES:
        raise pytest.UsageError(f"at most {REDIS_DATABASES} workers (-n): one Redis db each")
    # the environment, not only these constants: tests/reliability reads it, the portal's pytest
    # plugin reads it, and the processes the tests start inherit it
    if PG_URL:
        PG_URL = os.environ["PORTAL_TEST_DATABASE_URL"] = worker_database_url(PG_URL, WORKER)
    if REDIS_URL:
        REDIS_URL = os.environ["PORTAL_TEST_REDIS_URL"] = worker_redis_url(REDIS_URL, WORKER)

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


_BROKER: dict[str, str] = {}  # "url": the tests' broker, set by the local_broker fixture


@pytest.fixture(scope="session", autouse=True)
def local_broker(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The Celery broker of the test apps that name none: a SQLite file of this process's own.
    The portal's default, the checkout's ``instance/celery-broker.sqlite3``, would be shared by
    the workers of a parallel run (and read by a ``make run`` worker of the checkout)."""
    url = f"sqla+sqlite:///{tmp_path_factory.getbasetemp() / 'celery-broker.sqlite3'}"
    _BROKER["url"] = url
    return url


def portal_test_config(database_url: str, smtp_port: int, **overrides: Any) -> dict[str, Any]:
    broker = {"PORTAL_BROKER_URL": _BROKER["url"]} if "url" in _BROKER else {}
    return {
        **broker,
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
    # pytest-playwright's artifacts folder, which it empties when its session starts: a
    # subfolder per worker, so that one worker's start does not empty another's; the whole
    # folder is emptied once, by the pytest-xdist controller, before the workers start
    output = config.getoption("--output", None)
    if output and WORKER:
        config.option.output = str(Path(output) / WORKER)
    elif output and getattr(config.option, "dist", "no") != "no" and config.getoption("tx"):
        shutil.rmtree(output, ignore_errors=True)


# Under pytest-xdist the tests of a folder named here form one unit of work: they run one after
# another on one worker while the other workers share out the rest, test by test. The browser
# tests: one Chromium and one live server per backend. The reliability tests: they start Celery
# workers, gunicorn and redis-server processes, kill them and time what follows (lease expiry,
# Retry-After, call budgets per second), and share module-wide set-ups (a 500-change burst, a
# served portal) that would be made again on every worker that ran one of their tests. The
# example plugin's tests: they pip-install it into the venv the workers share, and uninstall it.
XDIST_GROUPS = {
    "tests/browser/": "browser",
    "tests/reliability/": "reliability",
    "tests/plugins/example_plugin/": "example-plugin",
}


# Tests that run alone under pytest-xdist: while one runs (its module's set-up included), no
# other worker runs a test. They bound wall-clock latency (a retry no more than 10 % after a
# 2 s Retry-After, a 3 s pause with more than 2 s left after 400 concurrent writes, calls
# "already on their way" within 1 s of a 429) that a second busy worker on the 2-core machine
# pushed past the bound: test_a_429_is_retried_within_ten_percent_of_its_retry_after failed so.
XDIST_ALONE = (
    "tests/reliability/test_fault_matrix.py::",
    "tests/reliability/test_throttle_budget.py::",
)


@contextlib.contextmanager
def xdist_turn(config: pytest.Config, alone: bool) -> Iterator[None]:
    """Hold this worker's turn to run a test: a shared one, or (``alone``) the only one.

    Two ``flock`` files in the run's temporary folder, which the workers share: every test
    holds ``tests.lock`` shared while it runs; a test that runs alone holds it exclusively, and
    first holds ``gate.lock`` exclusively so that no test starts while it waits for the running
    ones to finish (tests pass through the gate shared, briefly).
    """
    folder = Path(config.option.basetemp).parent  # the workers' basetemps are popen-gw0, …
    gate = os.open(folder / "gate.lock", os.O_RDWR | os.O_CREAT, 0o600)
    tests = os.open(folder / "tests.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if alone:
            fcntl.flock(gate, fcntl.LOCK_EX)
            fcntl.flock(tests, fcntl.LOCK_EX)
        else:
            fcntl.flock(gate, fcntl.LOCK_SH)
            fcntl.flock(tests, fcntl.LOCK_SH)
            fcntl.flock(gate, fcntl.LOCK_UN)
        yield
    finally:
        os.close(tests)  # closing releases the locks
        os.close(gate)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    """Under pytest-xdist, run the test (set-up, call, teardown) in its turn."""
    if not WORKER:
        return (yield)
    with xdist_turn(item.config, alone=item.nodeid.startswith(XDIST_ALONE)):
        return (yield)


def xdist_unit(nodeid: str) -> str:
    """The unit of work of a test under pytest-xdist: its group's name, or its own id."""
    for prefix, group in XDIST_GROUPS.items():
        if nodeid.startswith(prefix):
            return group
    return nodeid


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook, called in the controller process
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``-n``'s default distribution (``--dist load``), with :data:`XDIST_GROUPS` kept together.

    pytest-xdist's own ``--dist loadgroup`` (``xdist_group`` marks) silently stops grouping on
    pytest 9.2, which no longer lets it rename the tests (pytest-dev/pytest-xdist#1386); the
    scheduler below groups by the test's id, in this process, and needs no renaming.
    """
    if config.getvalue("dist") not in ("load", "loadgroup"):
        return None  # --dist each, loadfile, worksteal … as asked
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        """Load scope scheduling whose scopes are :func:`xdist_unit`: the biggest units (the
        groups) are handed out first, then one test at a time to whichever worker is free."""

        def _split_scope(self, nodeid: str) -> str:
            return xdist_unit(nodeid)

    return GroupScheduling(config, log)
