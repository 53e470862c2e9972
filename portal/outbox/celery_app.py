"""The worker's Celery app: the outbox tasks, plus the periodic jobs and schedule of the plugins.

Celery is only the delivery mechanism. Its messages carry an outbox item's id and nothing else,
so every setting here leans towards "deliver again rather than lose": acknowledge after the
task ran (``acks_late``), requeue when the worker process dies, and take one message at a time
so a dying worker holds no backlog. Duplicates are absorbed by :func:`portal.outbox.items.claim`.
There is no result backend: results live on the outbox row.
"""

from __future__ import annotations

import logging

from celery import Celery  # type: ignore[import-untyped]
from flask import Flask

from portal.core.config import INSTANCE_DIR
from portal.outbox.broker import FAN_OUT_TASK, RUN_TASK, SWEEP_TASK, remember, sending_celery
from portal.outbox.handlers import PeriodicJob, wiring
from portal.outbox.items import dispatch_ids, run_item
from portal.outbox.items import sweep as sweep_outbox

log = logging.getLogger(__name__)


def make_celery(app: Flask) -> Celery:
    """The worker's Celery app: the outbox's tasks, plus the periodic jobs and beat schedule
    the plugins handed the outbox (:func:`portal.outbox.handlers.wire`)."""
    celery = sending_celery(app)
    wired = wiring(app)
    celery.conf.update(
        beat_schedule={name: dict(entry) for name, entry in wired.beat_schedule.items()},
        beat_schedule_filename=str(INSTANCE_DIR / "celerybeat-schedule"),
    )
    _register_outbox_tasks(celery, app)
    for name, job in wired.periodic_jobs.items():
        _register_periodic(celery, app, name, job)
    remember(app, celery)
    return celery


def _register_outbox_tasks(celery: Celery, app: Flask) -> None:
    """Tasks close over the Flask app: the worker runs them in its app context."""

    def run(item_id: int) -> str:
        with app.app_context():
            return run_item(app, int(item_id))  # Celery logs the outcome with the task

    def fan_out(item_ids: list[int]) -> int:
        return dispatch_ids(app, [int(i) for i in item_ids])

    def sweep() -> int:
        with app.app_context():
            sent = sweep_outbox(app)
        if sent:
            log.info("sweep dispatched %d outbox item(s)", sent)
        return sent

    # shared=False: a shared task would be added to every Celery app made later in the process,
    # still closing over *this* Flask app
    celery.task(name=RUN_TASK, shared=False)(run)
    celery.task(name=FAN_OUT_TASK, shared=False)(fan_out)
    celery.task(name=SWEEP_TASK, shared=False)(sweep)


def _register_periodic(celery: Celery, app: Flask, name: str, job: PeriodicJob) -> None:
    def periodic() -> object:
        with app.app_context():
            return job(app)

    periodic.__name__ = periodic.__qualname__ = name.rsplit(".", 1)[-1]
    celery.task(name=name, shared=False)(periodic)
