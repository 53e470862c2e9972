"""The Celery app of one Flask app: broker settings, the outbox tasks and the beat schedule.

Celery is only the delivery mechanism. Its messages carry an outbox item's id and nothing else,
so every setting here leans towards "deliver again rather than lose": acknowledge after the
task ran (``acks_late``), requeue when the worker process dies, and take one message at a time
so a dying worker holds no backlog. Duplicates are absorbed by :func:`portal.tasks.outbox.claim`.
There is no result backend: results live on the outbox row.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Final

from celery import Celery  # type: ignore[import-untyped]
from flask import Flask

from portal.config import INSTANCE_DIR, broker_url
from portal.integrations.registry import integrations

log = logging.getLogger(__name__)

RUN_TASK: Final = "portal.outbox.run"
FAN_OUT_TASK: Final = "portal.outbox.fan_out"
SWEEP_TASK: Final = "portal.outbox.sweep"
PURGE_SESSIONS_TASK: Final = "portal.sessions.purge"
BILLING_SCHEDULE_TASK: Final = "portal.billing.schedule"
PAYMENTS_RECONCILE_TASK: Final = "portal.payments.reconcile"
DEFAULT_QUEUE: Final = "portal"
_EXTENSION: Final = "portal_celery"


def task_queue(app: Flask) -> str:
    """The broker queue of this deployment (two deployments may share one Redis)."""
    configured = app.config.get("PORTAL_TASK_QUEUE") or os.environ.get("PORTAL_TASK_QUEUE")
    return str(configured or DEFAULT_QUEUE)


def celery_for(app: Flask) -> Celery:
    """The app's Celery instance, made on first use (the web process needs it to dispatch)."""
    if _EXTENSION not in app.extensions:
        app.extensions[_EXTENSION] = make_celery(app)
    return app.extensions[_EXTENSION]


def make_celery(app: Flask) -> Celery:
    """A Celery app configured from the Flask app, with the portal's tasks registered."""
    celery = Celery("portal", set_as_current=False)
    celery.conf.update(_settings(app))
    _register_tasks(celery, app)
    app.extensions[_EXTENSION] = celery
    return celery


def _settings(app: Flask) -> dict[str, Any]:
    url = broker_url(app.config)
    return {
        "broker_url": url,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": 4,
        "broker_transport_options": _transport_options(url),
        # a dead broker must not hold a web request for long: the sweep sends the item later
        "task_publish_retry_policy": {
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "task_ignore_result": True,
        "result_backend": None,
        "task_default_queue": task_queue(app),
        "timezone": "UTC",
        "enable_utc": True,
        "beat_schedule": dict(integrations(app).beat_schedule),
        "beat_schedule_filename": str(INSTANCE_DIR / "celerybeat-schedule"),
        "worker_send_task_events": False,
    }


def _transport_options(url: str) -> dict[str, Any]:
    if url.startswith(("sqla+sqlite", "sqlalchemy+sqlite")):
        # the web process and the worker share the file: wait for its lock, don't fail
        return {"connect_args": {"timeout": 30}}
    return {}


def _register_tasks(celery: Celery, app: Flask) -> None:
    """Tasks close over the Flask app: the worker runs them in its app context."""

    def run(item_id: int) -> str:
        from portal.tasks.outbox import run_item

        with app.app_context():
            return run_item(app, int(item_id))  # Celery logs the outcome with the task

    def fan_out(item_ids: list[int]) -> int:
        from portal.tasks.outbox import dispatch_ids

        return dispatch_ids(app, [int(i) for i in item_ids])

    def sweep() -> int:
        from portal.tasks.outbox import sweep as sweep_outbox

        with app.app_context():
            sent = sweep_outbox(app)
        if sent:
            log.info("sweep dispatched %d outbox item(s)", sent)
        return sent

    def purge_sessions() -> int:
        from portal.web.session_store import purge_expired

        with app.app_context():
            return purge_expired(
                app,
                timedelta(minutes=app.config["PORTAL_SESSION_IDLE_MINUTES"]),
                timedelta(hours=app.config["PORTAL_SESSION_ABSOLUTE_HOURS"]),
            )

    def billing_schedule() -> int:
        from portal.services.billing import schedule_due_runs

        return len(schedule_due_runs(app))  # queues outbox items: the runs are workers' work

    def payments_reconcile() -> int:
        from portal.services.payment_events import reconcile

        with app.app_context():
            report = reconcile(app)
        log.info("payments reconciliation %s", report.line())
        return report.recorded

    # shared=False: a shared task would be added to every Celery app made later in the process,
    # still closing over *this* Flask app
    celery.task(name=RUN_TASK, shared=False)(run)
    celery.task(name=FAN_OUT_TASK, shared=False)(fan_out)
    celery.task(name=SWEEP_TASK, shared=False)(sweep)
    celery.task(name=PURGE_SESSIONS_TASK, shared=False)(purge_sessions)
    celery.task(name=BILLING_SCHEDULE_TASK, shared=False)(billing_schedule)
    celery.task(name=PAYMENTS_RECONCILE_TASK, shared=False)(payments_reconcile)


@contextmanager
def run_sender(app: Flask) -> Iterator[Callable[[int], None]]:
    """A function sending ``portal.outbox.run(item_id)`` by name, on one pooled producer.

    By name, so the sender needs none of the task code; one producer for a whole batch, so a
    sweep of hundreds of items does not acquire a connection per message.
    """
    celery = celery_for(app)
    with celery.producer_or_acquire() as producer:

        def send(item_id: int) -> None:
            celery.send_task(RUN_TASK, args=[item_id], producer=producer)

        yield send


def send_fan_out(app: Flask, ids: list[int]) -> None:
    """One ``portal.outbox.fan_out(ids)`` message: a worker sends each item's own message."""
    celery = celery_for(app)
    with celery.producer_or_acquire() as producer:
        celery.send_task(FAN_OUT_TASK, args=[ids], producer=producer)
