"""A worker killed with SIGKILL at each point of a task loses nothing and repeats nothing.

The testkit handler kills its own process on the first attempt only (a marker file says it
already happened): before the effect, after the effect but before the commit, and after the
commit but before Celery acknowledges the message. Two ways to die are tested:

- ``prefork``: the pool process dies and the worker's main process survives; the message is
  requeued at once (``task_reject_on_worker_lost``) and finds the item leased;
- ``solo``: the whole worker dies, as on a lost machine; the test restarts it. Its message
  stays unacknowledged in Redis, so only the sweep brings the item back.

Either way, after the lease expires the sweep re-sends the item and it is done exactly once.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from portal.core.db import get_database
from portal.outbox.items import enqueue, sweep
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

KILL_POINTS = ("before_effect", "after_effect", "after_commit")
PLAIN_ITEMS = 10

pytestmark = pytest.mark.postgres


@pytest.mark.parametrize("pool", ["prefork", "solo"])
def test_a_killed_worker_loses_nothing_and_repeats_nothing(
    pool: str,
    cluster: Callable[[str, str], tuple[Flask, Workers]],
    queue: str,
    external: FakeExternal,
    tmp_path: Path,
) -> None:
    app, workers = cluster(REDIS_URL, queue)
    worker = workers.start("victim", pool=pool)
    markers = {point: tmp_path / f"killed-{point}" for point in KILL_POINTS}
    with app.app_context(), get_database(app).sessions() as session:
        killed_items = {
            point: enqueue(
                session,
                "testkit.effect",
                {"external": external.url, "kill_at": point, "marker": str(markers[point])},
            )
            for point in KILL_POINTS
        }
        plain_items = [
            enqueue(session, "testkit.effect", {"external": external.url})
            for _ in range(PLAIN_ITEMS)
        ]
        session.commit()
    killed = {point: item.id for point, item in killed_items.items()}
    plain = [item.id for item in plain_items]
    total = len(killed) + len(plain)

    restarts = 0

    def recovered() -> bool:
        nonlocal worker, restarts
        if all_done(app, total):
            return True
        if not worker.alive():  # what a supervisor (systemd, Kubernetes) does
            restarts += 1
            # not waiting for "ready": the new worker may die of its first task at once
            worker = workers.start("victim", pool=pool, wait=False)
        sweep(app)  # what beat does every PORTAL_OUTBOX_SWEEP_SECONDS
        time.sleep(0.5)
        return False

    wait_until(
        recovered,
        120,
        lambda: f"not recovered: {state_counts(app)}, restarts={restarts}\n{workers.logs()}",
        every=0,
    )

    for point, marker in markers.items():
        assert marker.exists(), f"the worker was never killed at {point}"
    if pool == "solo":
        assert restarts == len(KILL_POINTS), f"{restarts} restarts for {len(KILL_POINTS)} kills"
    else:
        assert restarts == 0
        logs = "".join(w.log.read_text(errors="replace") for w in workers.started)
        assert logs.count("exited with 'signal 9 (SIGKILL)'") == len(KILL_POINTS), workers.logs()

    effects = effect_counts(app)
    assert effects == {item_id: 1 for item_id in [*killed.values(), *plain]}
    calls = Counter(external.keys())
    expected_calls = {f"outbox-{item_id}": 1 for item_id in [*killed.values(), *plain]}
    # killed after calling the service: the retry calls again, with the same key
    expected_calls[f"outbox-{killed['after_effect']}"] = 2
    assert dict(calls) == expected_calls
    with get_database(app).sessions() as session:
        attempts = {
            item_id: session.get(OutboxItem, item_id).attempts  # type: ignore[union-attr]
            for item_id in [*killed.values(), *plain]
        }
    assert attempts[killed["before_effect"]] == 2
    assert attempts[killed["after_effect"]] == 2
    assert attempts[killed["after_commit"]] == 1, "work committed as done ran again"
    assert {attempts[item_id] for item_id in plain} == {1}
