"""1,000 outbox items on four worker processes, every message delivered twice: one effect each.

The effect is a database row (committed with "done") and a call to a fake external service
with the item's idempotency key. Without crashes, nothing may run twice: every item takes one
attempt, and the service sees each key exactly once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
import redis
import sqlalchemy as sa
from flask import Flask

from portal.core.db import get_database
from portal.outbox.items import dispatch_ids, enqueue
from portal.outbox.models import OutboxItem
from tests.reliability.conftest import (
    REDIS_URL,
    FakeExternal,
    Workers,
    all_done,
    effect_counts,
    state_counts,
    wait_until,
)

ITEMS = 1000
WORKERS = 4

pytestmark = pytest.mark.postgres


def test_a_thousand_items_on_four_workers_take_effect_exactly_once(
    cluster: Callable[[str, str], tuple[Flask, Workers]], queue: str, external: FakeExternal
) -> None:
    app, workers = cluster(REDIS_URL, queue)
    started = [workers.start(f"w{n}", wait=False) for n in range(WORKERS)]
    for worker in started:
        workers.wait_ready(worker)

    with app.app_context(), get_database(app).sessions() as session:
        payload = {"external": external.url}
        items = [enqueue(session, "testkit.effect", payload) for _ in range(ITEMS)]
        session.commit()  # sends one message per item
    ids = [item.id for item in items]
    assert dispatch_ids(app, ids) == ITEMS  # and a duplicate of each: a redelivery

    wait_until(
        lambda: all_done(app, ITEMS),
        150,
        lambda: f"not all done: {state_counts(app)}\n{workers.logs()}",
        every=0.5,
    )
    broker = redis.Redis.from_url(REDIS_URL)
    try:
        wait_until(
            lambda: broker.llen(queue) == 0,
            60,
            lambda: f"{broker.llen(queue)} duplicate messages left unconsumed\n{workers.logs()}",
            every=0.5,
        )
    finally:
        broker.close()

    effects = effect_counts(app)
    assert set(effects) == set(ids), "an item took no effect"
    assert set(effects.values()) == {1}, "an item took effect twice"
    calls = Counter(external.keys())
    assert len(calls) == ITEMS, f"{len(calls)} distinct idempotency keys for {ITEMS} items"
    assert set(calls.values()) == {1}, "the external service was called twice for an item"
    with get_database(app).sessions() as session:
        attempts = Counter(session.scalars(sa.select(OutboxItem.attempts)))
    assert attempts == {1: ITEMS}, f"items claimed more than once: {attempts}"
    assert state_counts(app) == {"done": ITEMS}
    with get_database(app).engine.connect() as conn:
        pids = conn.scalar(sa.text("SELECT count(DISTINCT worker_pid) FROM outbox_testkit_effect"))
    assert pids is not None and pids >= 2, "the work was not shared between the workers"
