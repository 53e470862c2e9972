"""Make a freshly started web worker ready before it takes requests.

A cold worker opens its database connections, builds its Celery app and connects to the broker
on its first requests; under a burst (a payment provider's webhooks after a deploy) those
requests took over a second each in ``bench/webhooks.py``. ``gunicorn.conf.py`` calls
:func:`warm_up` in each worker before it accepts connections.
"""

from __future__ import annotations

import logging

from flask import Flask

from portal.db import get_database

log = logging.getLogger(__name__)


def warm_up(app: Flask, connections: int) -> int:
    """Open up to ``connections`` pooled database connections and the broker connection.

    Returns the number of database connections left open in the pool. Never raises: a worker
    that cannot warm up still serves (and reports the same failure on its first request).
    """
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
    try:
        from portal.tasks.celery_app import celery_for

        with celery_for(app).producer_or_acquire() as producer:
            producer.connection.ensure_connection(max_retries=1)
    except Exception:
        log.warning("warm-up: could not reach the broker", exc_info=True)
    return len(opened)


def _pool_size(pool: object) -> int:
    # connections beyond the pool's size are closed when returned: warming them is pointless
    size = getattr(pool, "size", None)
    return int(size()) if callable(size) else 1
