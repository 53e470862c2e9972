"""Outbox benchmark: no-op outbox items against bare Celery no-op tasks, same broker and pool.

Run from the repository root: ``.venv/bin/python bench/outbox.py``. It creates a throw-away
PostgreSQL database (``portal_bench_outbox``), migrates it, and on Redis (db 12, or
``BENCH_REDIS_URL``) measures, in alternating rounds, the throughput of a worker of 2 prefork
processes (late acks, prefetch 1, the portal's settings) on:

- baseline: ITEMS bare ``bench.noop`` Celery tasks (``bench/outbox_baseline.py``);
- outbox: ITEMS ``core.noop`` outbox items, enqueued through :func:`portal.outbox.items.enqueue`
  in transactions of BATCH items (as many web requests would), each dispatched after commit.

What is timed is the worker pool: the queue is filled while no worker runs, then a worker starts
and the clock runs from its first finished task to its last (a baseline task is finished when
acknowledged, an outbox item when its row is ``done``). The producers' costs (enqueue and commit
vs a bare send) are reported on stderr; they are paid by the web tier, not the pool. The result
is the median of BENCH_ROUNDS rounds (3), because a shared 2-core machine is noisy.
BENCH_ITEMS (10000) and BENCH_CONCURRENCY (2) change the size of a round and of the pool.

One line goes to stdout, then the verdict against the target; progress goes to stderr. The exit
code is 0 whether or not the target is met (this is a measurement) and non-zero when the run
itself breaks (a worker that does not start, work that does not finish in time, an item run
twice).
"""

from __future__ import annotations

import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BIN = ROOT / ".venv" / "bin"
DATABASE = "portal_bench_outbox"
SERVER_URL = os.environ.get("BENCH_PG_SERVER", "postgresql+psycopg://postgres@127.0.0.1:5432")
DATABASE_URL = f"{SERVER_URL}/{DATABASE}"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
OUTBOX_QUEUE = "bench-outbox"
BASELINE_QUEUE = "bench-baseline"

ITEMS = int(os.environ.get("BENCH_ITEMS", "10000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
BATCH = 100
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "2"))
TARGET_RATIO = 0.5
START_TIMEOUT_S = 60.0
RUN_TIMEOUT_S = 600.0
POLL_S = 0.05
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """The run broke: its numbers would mean nothing."""


@dataclass(frozen=True)
class Drain:
    """One timed drain of a full queue by a worker."""

    items_per_s: float
    worker_cpu_ms: float  # CPU of the worker's processes per item
    postgres_cpu_ms: float  # CPU of every PostgreSQL process per item


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def wait_for(done: Callable[[], bool], timeout: float, what: str, every: float = POLL_S) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


# --- CPU accounting -------------------------------------------------------------------------


def _cpu_seconds(select: Callable[[str, int], bool]) -> float:
    """CPU time (user + system, and of reaped children) of the processes ``select`` picks."""
    ticks = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with suppress(OSError, IndexError, ValueError):
            raw = Path(entry.path, "stat").read_text()
            name = raw[raw.index("(") + 1 : raw.rindex(")")]
            fields = raw[raw.rindex(")") + 2 :].split()
            if select(name, int(fields[2])):  # fields[2] is the process group
                ticks += sum(int(value) for value in fields[11:15])
    return ticks / CLOCK_TICKS


def worker_cpu(group: int) -> float:
    return _cpu_seconds(lambda _name, pgrp: pgrp == group)


def postgres_cpu() -> float:
    return _cpu_seconds(lambda name, _pgrp: name.startswith("postgres"))


# --- database and broker --------------------------------------------------------------------


def admin_sql(statement: str) -> None:
    engine = create_engine(f"{SERVER_URL}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(statement))
    finally:
        engine.dispose()


@contextmanager
def database() -> Iterator[None]:
    admin_sql(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    admin_sql(f'CREATE DATABASE "{DATABASE}"')
    try:
        from portal.cli import migrate

        migrate(DATABASE_URL)
        yield
    finally:
        admin_sql(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')


def forget_queues(broker: redis.Redis) -> None:
    """Delete this benchmark's keys (the db number is its own; nothing else is touched)."""
    for queue in (OUTBOX_QUEUE, BASELINE_QUEUE):
        broker.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
    broker.delete("unacked", "unacked_index", "unacked_mutex")
    broker.delete("_kombu.binding.celery.pidbox", "_kombu.binding_deadlines")  # remote control


def unfinished(broker: redis.Redis, queue: str) -> int:
    """Messages waiting, plus delivered but not yet acknowledged (acks come after the run)."""
    return int(broker.llen(queue)) + int(broker.hlen("unacked"))


# --- workers --------------------------------------------------------------------------------


def worker_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PORTAL_")}
    env.update(
        PORTAL_ENV="production",
        PORTAL_SECRET_KEY=secrets.token_urlsafe(48),
        PORTAL_DATABASE_URL=DATABASE_URL,
        PORTAL_BROKER_URL=REDIS_URL,
        PORTAL_TASK_QUEUE=OUTBOX_QUEUE,
        BENCH_BROKER_URL=REDIS_URL,
        BENCH_QUEUE=BASELINE_QUEUE,
    )
    return env


@contextmanager
def worker(app: str, queue: str, env: dict[str, str], log_path: Path) -> Iterator[int]:
    """A ``celery worker`` in its own process group; yields the group id, killed on exit."""
    command = [
        str(BIN / "celery"),
        "-A",
        app,
        "worker",
        "-c",
        str(CONCURRENCY),
        "--without-heartbeat",
        "--without-gossip",
        "--without-mingle",
        "-Q",
        queue,
        "-n",
        f"{queue}@%h",
        "--loglevel",
        "INFO",
    ]
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield process.pid
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def timed_drain(group: int, remaining: Callable[[], int], what: str) -> Drain:
    """Time a started worker from its first finished item until nothing remains."""
    wait_for(lambda: remaining() < ITEMS, START_TIMEOUT_S + RUN_TIMEOUT_S, f"{what} to start")
    started, left = time.perf_counter(), remaining()
    cpu, pg_cpu = worker_cpu(group), postgres_cpu()
    wait_for(lambda: remaining() == 0, RUN_TIMEOUT_S, f"{what} to finish")
    elapsed = time.perf_counter() - started
    cpu, pg_cpu = worker_cpu(group) - cpu, postgres_cpu() - pg_cpu
    return Drain(left / elapsed, cpu / left * 1000, pg_cpu / left * 1000)


# --- the two kinds of work ------------------------------------------------------------------


class Baseline:
    def __init__(self, broker: redis.Redis, env: dict[str, str], log_dir: Path) -> None:
        os.environ.update(BENCH_BROKER_URL=REDIS_URL, BENCH_QUEUE=BASELINE_QUEUE)
        from bench.outbox_baseline import celery

        self.celery: Any = celery
        self.broker, self.env, self.log_dir = broker, env, log_dir

    def run(self, round_: int) -> Drain:
        started = time.perf_counter()
        with self.celery.producer_or_acquire() as producer:
            for n in range(ITEMS):
                self.celery.send_task("bench.noop", args=[n], producer=producer)
        log(f"baseline: send {(time.perf_counter() - started) / ITEMS * 1000:.2f} ms per task")
        log_path = self.log_dir / f"baseline-{round_}.log"
        with worker("bench.outbox_baseline", BASELINE_QUEUE, self.env, log_path) as group:
            return timed_drain(group, lambda: unfinished(self.broker, BASELINE_QUEUE), "baseline")


class Outbox:
    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        os.environ.update({k: v for k, v in env.items() if k.startswith("PORTAL_")})
        from portal import create_app
        from portal.core.db import get_database

        self.app = create_app()
        self.sessions = get_database(self.app).sessions
        self.env, self.log_dir = env, log_dir

    def enqueue_all(self) -> None:
        from portal.outbox.items import enqueue

        with self.app.app_context():
            for start in range(0, ITEMS, BATCH):
                with self.sessions() as session:
                    for n in range(start, min(start + BATCH, ITEMS)):
                        enqueue(session, "core.noop", {"n": n})
                    session.commit()  # inserts the batch, then sends one message per item

    def not_done(self) -> int:
        with self.sessions() as session:
            count = session.scalar(text("SELECT count(*) FROM outbox_item WHERE state <> 'done'"))
        return int(count or 0)

    def run(self, round_: int) -> Drain:
        with self.sessions() as session:
            session.execute(text("TRUNCATE outbox_item RESTART IDENTITY"))
            session.commit()
        started = time.perf_counter()
        self.enqueue_all()
        per_item = (time.perf_counter() - started) / ITEMS * 1000
        log(f"outbox: enqueue, commit and send {per_item:.2f} ms per item")
        log_path = self.log_dir / f"outbox-{round_}.log"
        with worker("portal.worker", OUTBOX_QUEUE, self.env, log_path) as group:
            drain = timed_drain(group, self.not_done, "outbox")
        self.check_once()
        return drain

    def check_once(self) -> None:
        with self.sessions() as session:
            attempts = session.execute(
                text("SELECT min(attempts), max(attempts), count(*) FROM outbox_item")
            ).one()
        if tuple(attempts) != (1, 1, ITEMS):
            raise BenchError(f"(min, max attempts, items) = {tuple(attempts)}: not exactly once")


def describe(name: str, drains: list[Drain]) -> str:
    rates = ", ".join(f"{d.items_per_s:.0f}" for d in drains)
    cpu = statistics.median(d.worker_cpu_ms for d in drains)
    pg = statistics.median(d.postgres_cpu_ms for d in drains)
    return f"{name}: items/s per round {rates}; CPU per item: worker {cpu:.2f} ms, pg {pg:.2f} ms"


def main() -> int:
    log_dir = Path(os.environ.get("BENCH_LOG_DIR", "/tmp")) / f"bench-outbox-{os.getpid()}"
    log_dir.mkdir(parents=True, exist_ok=True)
    broker = redis.Redis.from_url(REDIS_URL)
    env = worker_env()
    baseline_runs: list[Drain] = []
    outbox_runs: list[Drain] = []
    try:
        forget_queues(broker)
        with database():
            baseline, outbox = Baseline(broker, env, log_dir), Outbox(env, log_dir)
            for round_ in range(1, ROUNDS + 1):
                log(f"round {round_}/{ROUNDS}: {ITEMS} items each, worker -c {CONCURRENCY}")
                baseline_runs.append(baseline.run(round_))
                outbox_runs.append(outbox.run(round_))
            log(describe("baseline", baseline_runs))
            log(describe("outbox", outbox_runs))
    except BenchError as error:
        log(f"FAILED: {error} (worker logs in {log_dir})")
        return 1
    finally:
        forget_queues(broker)
        broker.close()
    outbox_rate = statistics.median(d.items_per_s for d in outbox_runs)
    baseline_rate = statistics.median(d.items_per_s for d in baseline_runs)
    ratio = outbox_rate / baseline_rate
    print(
        f"bench: outbox items_per_s={outbox_rate:.0f} baseline_items_per_s={baseline_rate:.0f} "
        f"ratio={ratio:.2f}"
    )
    verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
    print(f"bench: target ratio>={TARGET_RATIO} {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
