"""Fixtures for the reliability tests: real ``celery worker`` processes, PostgreSQL and Redis.

The tests need PostgreSQL (``PORTAL_TEST_DATABASE_URL``) and Redis (``PORTAL_TEST_REDIS_URL``)
and are skipped without them; with ``CI=true`` the root conftest refuses to run without them,
so in CI they always run. They use a database of their own (the test database's name plus
``_reliability``) and a broker queue of their own per test, removed afterwards, so they can run
beside the rest of the suite. Every wait is bounded and every process started here is killed in
a ``finally``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from flask import Flask

from portal import create_app
from portal.cli import migrate
from portal.core.db import get_database
from portal.outbox.models import OutboxItem, OutboxState
from tests.conftest import _ensure_pg_database, _reset_schema

ROOT = Path(__file__).resolve().parents[2]
CELERY = ROOT / ".venv" / "bin" / "celery"
PLUGIN_PATHS = str(ROOT / "tests" / "plugins")
PG_URL = os.environ.get("PORTAL_TEST_DATABASE_URL", "")
REDIS_URL = os.environ.get("PORTAL_TEST_REDIS_URL", "")
LEASE_SECONDS = 3  # short, so abandoned work is taken over within the test
WORKER_START_TIMEOUT = 60.0


def require_services() -> None:
    if not (PG_URL and REDIS_URL):
        pytest.skip("reliability tests need PORTAL_TEST_DATABASE_URL and PORTAL_TEST_REDIS_URL")


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: Callable[[], str], every: float = 0.2
) -> None:
    """Poll ``predicate`` until true; fail after ``timeout`` seconds saying what was awaited."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s: {what()}")
        time.sleep(every)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- database --------------------------------------------------------------------------------


def _fresh_database(url: str) -> None:
    _ensure_pg_database(url)
    _reset_schema(url)


@pytest.fixture(scope="session")
def reliability_db() -> str:
    """A PostgreSQL database of these tests' own, migrated, with the testkit's effect table."""
    require_services()
    base = sa.make_url(PG_URL)
    url = base.set(database=f"{base.database}_reliability").render_as_string(hide_password=False)
    _fresh_database(url)
    migrate(url)
    sys.path.insert(0, str(Path(PLUGIN_PATHS) / "outbox_testkit"))
    from outbox_testkit import create_tables

    engine = sa.create_engine(url)
    create_tables(engine)
    engine.dispose()
    return url


def _empty(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE outbox_item, outbox_testkit_effect RESTART IDENTITY"))
    engine.dispose()


# -- the fake external service ---------------------------------------------------------------


@dataclass
class FakeExternal:
    """An "external" HTTP service counting calls and distinct idempotency keys."""

    url: str
    calls: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, key: str) -> None:
        with self.lock:
            self.calls.append(key)

    def keys(self) -> list[str]:
        with self.lock:
            return list(self.calls)


@pytest.fixture
def external() -> Iterator[FakeExternal]:
    port = free_port()
    fake = FakeExternal(url=f"http://127.0.0.1:{port}/effect")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            key = self.headers.get("Idempotency-Key")
            if not key:
                self.send_response(400)
                self.end_headers()
                return
            fake.record(key)
            body = json.dumps({"applied": key}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


# -- broker ----------------------------------------------------------------------------------


def _forget_queue(url: str, queue: str) -> None:
    """Remove a test queue's keys, and unacked messages of killed workers bound for it."""
    client = redis.Redis.from_url(url)
    try:
        client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
        for tag, raw in client.hgetall("unacked").items():
            try:
                routing_key = json.loads(raw)[-1]
            except (ValueError, IndexError):
                continue
            if routing_key == queue:
                client.hdel("unacked", tag)
                client.zrem("unacked_index", tag)
    finally:
        client.close()


@pytest.fixture
def queue() -> Iterator[str]:
    """A broker queue of this test's own on the shared test Redis."""
    require_services()
    name = f"portal-reliability-{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        _forget_queue(REDIS_URL, name)


@dataclass
class PrivateRedis:
    """A redis-server of the test's own, without persistence, that the test stops and starts."""

    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.process is None, "already running"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        try:
            wait_until(answers, 15, lambda: f"redis-server on port {self.port} did not start")
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.kill()
        try:
            self.process.wait(timeout=10)
        finally:
            self.process = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    require_services()
    server = PrivateRedis(port=free_port(), log=tmp_path / "redis.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- apps and workers ------------------------------------------------------------------------


def settings(database_url: str, broker_url: str, queue: str) -> dict[str, str]:
    """The ``PORTAL_*`` settings shared by the test process and its workers."""
    return {
        "PORTAL_ENV": "testing",
        "PORTAL_SECRET_KEY": "reliability-test-secret-not-for-production",
        "PORTAL_DATABASE_URL": database_url,
        "PORTAL_BROKER_URL": broker_url,
        "PORTAL_TASK_QUEUE": queue,
        "PORTAL_PLUGINS": "outbox_testkit",
        "PORTAL_PLUGIN_PATHS": PLUGIN_PATHS,
        "PORTAL_OUTBOX_LEASE_SECONDS": str(LEASE_SECONDS),
        "PORTAL_OUTBOX_SWEEP_SECONDS": "1",
    }


@dataclass
class Worker:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def ready(self) -> bool:
        return self.log.exists() and " ready." in self.log.read_text(errors="replace")

    def tail(self, lines: int = 25) -> str:
        if not self.log.exists():
            return "(no log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL the worker's whole process group: its pool children die with it."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


@dataclass
class Workers:
    """``celery worker`` processes started by one test; all killed when the test ends."""

    env: dict[str, str]
    queue: str
    log_dir: Path
    started: list[Worker] = field(default_factory=list)

    def start(
        self, name: str, pool: str = "prefork", wait: bool = True, beat: bool = False
    ) -> Worker:
        log = self.log_dir / f"{name}-{len(self.started)}.log"
        command = [
            str(CELERY),
            "-A",
            "portal.worker",
            "worker",
            "--pool",
            pool,
            "-c",
            "1",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
            "-Q",
            self.queue,
            "-n",
            f"{name}-{uuid.uuid4().hex[:6]}@%h",
            "--loglevel",
            "INFO",
        ]
        if beat:  # the schedule file of the test's own, not the checkout's instance/
            command += ["--beat", "--schedule", str(self.log_dir / f"beat-{uuid.uuid4().hex}")]
        with log.open("wb") as out:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, killed as one
            )
        worker = Worker(name, process, log)
        self.started.append(worker)
        if wait:
            self.wait_ready(worker)
        return worker

    def wait_ready(self, worker: Worker) -> None:
        def ready() -> bool:
            if worker.ready():  # it may already have died of its first task: tests kill it
                return True
            if not worker.alive():
                pytest.fail(f"worker {worker.name} exited at start:\n{worker.tail()}")
            return False

        wait_until(
            ready,
            WORKER_START_TIMEOUT,
            lambda: f"worker {worker.name} not ready:\n{worker.tail()}",
        )

    def logs(self) -> str:
        return "\n".join(f"--- {w.name} ({w.log.name})\n{w.tail()}" for w in self.started)

    def kill_all(self) -> None:
        for worker in self.started:
            worker.kill()


@pytest.fixture
def cluster(
    reliability_db: str, tmp_path: Path
) -> Iterator[Callable[[str, str], tuple[Flask, Workers]]]:
    """Build the test process's app and a worker set on a broker; workers die at teardown."""
    made: list[tuple[Flask, Workers]] = []

    def make(broker_url: str, queue: str) -> tuple[Flask, Workers]:
        _empty(reliability_db)
        shared = settings(reliability_db, broker_url, queue)
        app = create_app({**shared, "PORTAL_OUTBOX_LEASE_SECONDS": LEASE_SECONDS})
        workers = Workers({**os.environ, **shared}, queue, tmp_path)
        made.append((app, workers))
        return app, workers

    yield make
    for app, workers in made:
        workers.kill_all()
        get_database(app).dispose()


# -- reading the outcome ---------------------------------------------------------------------


def state_counts(app: Flask) -> dict[str, int]:
    with get_database(app).sessions() as session:
        rows = session.execute(
            sa.select(OutboxItem.state, sa.func.count()).group_by(OutboxItem.state)
        ).all()
    return {str(state): int(count) for state, count in rows}


def all_done(app: Flask, expected: int) -> bool:
    return state_counts(app).get(OutboxState.DONE, 0) == expected


def effect_counts(app: Flask) -> dict[int, int]:
    """Committed effect rows per item id."""
    with get_database(app).engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT item_id, count(*) FROM outbox_testkit_effect GROUP BY item_id")
        ).all()
    return {int(item_id): int(count) for item_id, count in rows}
