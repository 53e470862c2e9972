"""Make a freshly started web worker ready before it takes requests.

A cold worker opens its database connections, builds its Celery app and connects to the broker
on its first requests; under a burst (a payment provider's webhooks after a deploy) those
requests took over a second each in ``bench/webhooks.py``. ``gunicorn.conf.py`` calls
:func:`warm_up` in each worker before it accepts connections; a Celery worker calls
:func:`prepare` before its pool forks and :func:`connect` in each pool process.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from typing import TYPE_CHECKING

from flask import Flask
from kombu.utils.uuid import uuid
from sqlalchemy.engine import Dialect

from portal.core.db import Base, get_database

if TYPE_CHECKING:
    from celery import Celery  # type: ignore[import-untyped]

log = logging.getLogger(__name__)


def warm_up(app: Flask, connections: int) -> int:
    """Open up to ``connections`` pooled database connections and as many broker producers,
    and prepare what the first statements and the first task message would otherwise pay for.

    Returns the number of database connections left open in the pool. Never raises: a worker
    that cannot warm up still serves (and reports the same failure on its first request).
    """
    prepare(app)
    return connect(app, connections)


def prepare(app: Flask) -> None:
    """Work out once what every process would otherwise work out on its first task or request
    (no connection is opened: a Celery worker does this before its pool forks, and every pool
    process inherits it)."""
    try:
        _prepare_statements(get_database(app).engine.dialect)
    except Exception:
        log.warning("warm-up: could not prepare the statements", exc_info=True)
    try:
        from portal.outbox.broker import celery_for

        _prepare_task_message(celery_for(app))
    except Exception:
        log.warning("warm-up: could not prepare the task message", exc_info=True)


def connect(app: Flask, connections: int, *, broker: bool = True) -> int:
    """Open up to ``connections`` pooled database connections and (with ``broker``) as many
    broker producers; returns the number of database connections left open in the pool."""
    database = get_database(app)
    wanted = max(1, min(connections, _pool_size(database.engine.pool)))
    opened = []
    try:
        for _ in range(wanted):
            opened.append(database.engine.connect())
    except Exception:
        log.warning("warm-up: could not open database connections", exc_info=True)
    finally:
        for connection in opened:
            connection.close()  # back to the pool, still connected
    if not broker:
        return len(opened)
    try:
        from portal.outbox.broker import celery_for

        _prepare_producers(celery_for(app), connections)
    except Exception:
        log.warning("warm-up: could not reach the broker", exc_info=True)
    return len(opened)


def _prepare_statements(dialect: Dialect) -> None:
    """Compile a read and a write of every mapped table for the database's dialect.

    A column type's dialect form is worked out the first time a statement using it is
    compiled, and SQLAlchemy keeps it on the dialect: without this the first requests of a
    worker each paid up to a tenth of a second for it (``bench/webhooks.py``).
    """
    Base.registry.configure()
    for table in Base.metadata.sorted_tables:
        table.select().compile(dialect=dialect)
        table.insert().compile(dialect=dialect)


def _prepare_producers(celery: Celery, count: int) -> None:
    """Connect ``count`` pooled producers (one per request thread) and declare the task queue
    on each: a producer declares it on its first message, on its own connection."""
    queue = celery.amqp.queues[celery.conf.task_default_queue]
    with ExitStack() as held:  # held at once, so the pool makes that many
        for _ in range(max(1, min(count, celery.conf.broker_pool_limit or 1))):
            producer = held.enter_context(celery.producer_pool.acquire(block=True))
            producer.connection.ensure_connection(max_retries=1)
            producer.maybe_declare(queue)


def _prepare_task_message(celery: Celery) -> None:
    """Load what sending the first task loads: the result backend's class (looked up on
    every send) and the message protocol's code (a message is built, not sent)."""
    from portal.outbox.broker import RUN_TASK

    _ = celery.backend
    celery.amqp.create_task_message(uuid(), RUN_TASK, (0,), {})


def _pool_size(pool: object) -> int:
    # connections beyond the pool's size are closed when returned: warming them is pointless
    size = getattr(pool, "size", None)
    return int(size()) if callable(size) else 1
