"""The broker side of the outbox: task names, Celery settings, a sending-only Celery app.

Celery is only the delivery mechanism. Its messages carry an outbox item's id and nothing else,
so every setting here leans towards "deliver again rather than lose": acknowledge after the
task ran (``acks_late``), requeue when the worker process dies, and take one message at a time
so a dying worker holds no backlog. Duplicates are absorbed by :func:`portal.outbox.items.claim`.
There is no result backend: results live on the outbox row.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final

from celery import Celery  # type: ignore[import-untyped]
from flask import Flask

from portal.core.config import broker_url

RUN_TASK: Final = "portal.outbox.run"
FAN_OUT_TASK: Final = "portal.outbox.fan_out"
SWEEP_TASK: Final = "portal.outbox.sweep"
DEFAULT_QUEUE: Final = "portal"
_EXTENSION: Final = "portal_celery"


def task_queue(app: Flask) -> str:
    """The broker queue of this deployment (two deployments may share one Redis)."""
    configured = app.config.get("PORTAL_TASK_QUEUE") or os.environ.get("PORTAL_TASK_QUEUE")
    return str(configured or DEFAULT_QUEUE)


def celery_for(app: Flask) -> Celery:
    """The app's Celery instance, made on first use: a sending-only one in a web process (it
    sends tasks by name and needs none of their code); the worker's, with its tasks, once
    :func:`portal.outbox.celery_app.make_celery` made it."""
    if _EXTENSION not in app.extensions:
        app.extensions[_EXTENSION] = sending_celery(app)
    return app.extensions[_EXTENSION]


def remember(app: Flask, celery: Celery) -> None:
    """Make ``celery`` the one :func:`celery_for` returns (the worker's, with its tasks)."""
    app.extensions[_EXTENSION] = celery


def sending_celery(app: Flask) -> Celery:
    """A Celery app configured from the Flask app, with no tasks of its own."""
    celery = Celery("portal", set_as_current=False)
    celery.conf.update(settings(app))
    return celery


def settings(app: Flask) -> dict[str, Any]:
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
        "worker_send_task_events": False,
    }


def _transport_options(url: str) -> dict[str, Any]:
    if url.startswith(("sqla+sqlite", "sqlalchemy+sqlite")):
        # the web process and the worker share the file: wait for its lock, don't fail
        return {"connect_args": {"timeout": 30}}
    return {}


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
