"""Work enqueued while the broker is down is kept, and done exactly once when it is back.

The broker is a private ``redis-server`` without persistence: stopping it loses every message
it held, as a crashed broker would. The web side's commits still succeed (the dispatch failure
is only logged), the rows wait as pending, and the sweep sends them once Redis answers again.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from flask import Flask

from portal.core.db import get_database
from portal.outbox.items import enqueue, sweep
from portal.outbox.models import OutboxItem, OutboxState
from tests.reliability.conftest import (
    FakeExternal,
    PrivateRedis,
    Workers,
    all_done,
    effect_counts,
    state_counts,
    wait_until,
)

WHILE_DOWN = 50

pytestmark = pytest.mark.postgres


def _enqueue(app: Flask, url: str, count: int) -> list[int]:
    with app.app_context(), get_database(app).sessions() as session:
        items = [enqueue(session, "testkit.effect", {"external": url}) for _ in range(count)]
        session.commit()
    return [item.id for item in items]


def test_work_enqueued_while_the_broker_is_down_is_done_once_it_is_back(
    cluster: Callable[[str, str], tuple[Flask, Workers]],
    private_redis: PrivateRedis,
    external: FakeExternal,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, workers = cluster(private_redis.url, "portal")
    workers.start("w")
    before = _enqueue(app, external.url, 1)
    wait_until(lambda: all_done(app, 1), 30, lambda: f"{state_counts(app)}\n{workers.logs()}")

    private_redis.stop()
    with caplog.at_level(logging.ERROR, logger="portal.outbox.items"):
        during = [i for _ in range(5) for i in _enqueue(app, external.url, WHILE_DOWN // 5)]
    assert caplog.text.count("could not dispatch") == 5
    assert sweep(app) == 0, "nothing can be sent while the broker is down"
    time.sleep(2)
    with get_database(app).sessions() as session:
        waiting = session.scalars(sa.select(OutboxItem).where(OutboxItem.id.in_(during))).all()
    assert len(waiting) == WHILE_DOWN, "work enqueued while the broker was down was lost"
    assert {item.state for item in waiting} == {OutboxState.PENDING}
    assert all(item.dispatched_at is None for item in waiting)

    private_redis.start()  # same port, empty: whatever it held is gone

    def recovered() -> bool:
        if all_done(app, 1 + WHILE_DOWN):
            return True
        sweep(app)  # what beat does every PORTAL_OUTBOX_SWEEP_SECONDS
        time.sleep(0.5)
        return False

    wait_until(
        recovered,
        90,
        lambda: f"not recovered: {state_counts(app)}\n{workers.logs()}",
        every=0,
    )
    everything = [*before, *during]
    assert effect_counts(app) == {item_id: 1 for item_id in everything}
    assert dict(Counter(external.keys())) == {f"outbox-{i}": 1 for i in everything}
