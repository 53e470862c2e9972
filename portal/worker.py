"""The module the ``celery`` command points at: ``celery -A portal.worker worker``.

It builds the portal from the environment (the same ``PORTAL_*`` settings as the web server)
and exposes its Celery app as ``celery``. The Flask app is deliberately not called ``app``:
Celery's ``-A`` lookup would take it for the Celery app.
"""

from __future__ import annotations

from typing import Any

from celery.signals import worker_process_init  # type: ignore[import-untyped]
from sqlalchemy import event

from portal import create_app, warmup
from portal.core.db import get_database
from portal.outbox.celery_app import make_celery

flask_app = create_app()
celery = make_celery(flask_app)


warmup.prepare(flask_app)  # before the pool forks: every pool process inherits it


def _fresh_connections(**_: Any) -> None:
    """A forked pool process must not share the parent's database connections; it opens its
    own before its first task (with many processes starting at once, the first tasks would
    otherwise queue behind each other's connecting). The broker is left to the first task that
    sends something: a worker started while the broker is down must not wait for it here."""
    get_database(flask_app).engine.dispose(close=False)
    warmup.connect(flask_app, connections=1, broker=False)


worker_process_init.connect(_fresh_connections, weak=False)


@event.listens_for(get_database(flask_app).engine, "connect")
def _asynchronous_commit(dbapi_connection: Any, _record: Any) -> None:
    """Workers commit without waiting for PostgreSQL's WAL flush.

    Safe by the outbox's design: a crash of the database server can lose the last fraction of
    a second of commits, but each is atomic with its item's "done" mark, so a lost commit only
    means the item runs again, and every external effect is idempotent under the item's id.
    The web process keeps synchronous commits: what a person is told is saved, stays saved.
    """
    if get_database(flask_app).engine.dialect.name == "postgresql":
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET synchronous_commit TO off")
        # the SET opened a transaction: end it, or the pool's reset would roll the SET back
        dbapi_connection.commit()
