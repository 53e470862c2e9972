"""A web worker connects to the database and the broker before it takes requests."""

from __future__ import annotations

import runpy
from pathlib import Path
from types import SimpleNamespace

from flask import Flask
from kombu import Producer

from portal.core.db import get_database
from portal.features.billing.models import Invoice
from portal.features.payments.models import PaymentWebhookEvent
from portal.outbox.broker import celery_for
from portal.outbox.models import OutboxItem
from portal.warmup import connect, warm_up

ROOT = Path(__file__).resolve().parents[2]


def test_warm_up_leaves_open_connections_in_the_pool(app: Flask) -> None:
    engine = get_database(app).engine
    engine.dispose()
    opened = warm_up(app, connections=4)
    assert opened >= 1
    assert engine.pool.checkedin() == opened  # type: ignore[attr-defined]
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_gunicorn_config_warms_the_portal_and_leaves_other_apps_alone(app: Flask) -> None:
    hooks = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    engine = get_database(app).engine
    engine.dispose()
    hooks["post_worker_init"](SimpleNamespace(wsgi=app, cfg=SimpleNamespace(threads=2)))
    assert engine.pool.checkedin() >= 1  # type: ignore[attr-defined]

    assert "portal_outbox_dispatcher" in app.extensions  # committed work goes out in the back
    app.extensions.pop("portal_outbox_dispatcher").close()

    other = Flask("baseline")
    hooks["post_worker_init"](SimpleNamespace(wsgi=other, cfg=SimpleNamespace(threads=2)))
    assert "portal_db" not in other.extensions
    assert "portal_outbox_dispatcher" not in other.extensions


def test_warm_up_readies_one_producer_per_thread_with_the_queue_declared(app: Flask) -> None:
    celery = celery_for(app)
    warm_up(app, connections=3)
    ready = [p for p in celery.producer_pool._resource.queue if isinstance(p, Producer)]
    assert len(ready) >= 3
    queue = celery.amqp.queues[celery.conf.task_default_queue]
    for producer in ready[-3:]:  # the pool hands out the last returned first
        assert producer.connection.connected
        assert hash(queue) in producer.connection.declared_entities  # not on its first message


def test_warm_up_works_out_every_column_type_for_the_database(app: Flask) -> None:
    dialect = get_database(app).engine.dialect
    warm_up(app, connections=1)
    # SQLAlchemy keeps a type's dialect form in the dialect's memo: there, no request pays for it
    memos = dialect._type_memos  # type: ignore[attr-defined]
    for table in (Invoice.__table__, OutboxItem.__table__, PaymentWebhookEvent.__table__):
        for column in table.columns:
            assert column.type in memos, f"{table.name}.{column.name}"


def test_a_pool_process_connects_to_the_database_and_leaves_the_broker_alone(app: Flask) -> None:
    engine = get_database(app).engine
    engine.dispose()
    celery = celery_for(app)
    producers_before = list(celery.producer_pool._resource.queue)
    assert connect(app, connections=1, broker=False) == 1
    assert engine.pool.checkedin() == 1  # type: ignore[attr-defined]
    assert list(celery.producer_pool._resource.queue) == producers_before
