"""The outbox benchmark's baseline: a bare Celery no-op task, with the portal's worker settings.

Served with ``celery -A bench.outbox_baseline worker``; ``BENCH_BROKER_URL`` names the broker
and ``BENCH_QUEUE`` the queue. Same delivery settings as :mod:`portal.outbox.celery_app`
(late acknowledgement, requeue on a lost worker, one message at a time, JSON, no results), so
the difference measured is the outbox's own work: the row, the claim, the lease and "done".
"""

from __future__ import annotations

import os

from celery import Celery

celery = Celery("bench_baseline", set_as_current=False)
celery.conf.update(
    broker_url=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/12"),
    broker_connection_retry_on_startup=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_default_queue=os.environ.get("BENCH_QUEUE", "bench-baseline"),
    worker_send_task_events=False,
)


def noop(n: int) -> None:
    """Nothing: the cost of a message through broker and worker, and nothing else."""


celery.task(name="bench.noop", shared=False)(noop)
