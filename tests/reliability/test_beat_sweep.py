"""Celery beat runs the sweep on its own: abandoned work is finished with no one calling it.

A worker with embedded beat (as ``make run`` starts it) and ``PORTAL_OUTBOX_SWEEP_SECONDS=1``:
its pool process is killed before the effect of one item, the redelivered message finds the
item leased, and only the periodic sweep, once the lease expires, brings the item back.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from portal.core.db import get_database
from portal.outbox.items import enqueue
from tests.reliability.conftest import (
    REDIS_URL,
    FakeExternal,
    Workers,
    all_done,
    effect_counts,
    state_counts,
    wait_until,
)

pytestmark = pytest.mark.postgres


def test_beat_sweeps_abandoned_work(
    cluster: Callable[[str, str], tuple[Flask, Workers]],
    queue: str,
    external: FakeExternal,
    tmp_path: Path,
) -> None:
    app, workers = cluster(REDIS_URL, queue)
    workers.start("beat", beat=True)
    marker = tmp_path / "killed"
    with app.app_context(), get_database(app).sessions() as session:
        item = enqueue(
            session,
            "testkit.effect",
            {"external": external.url, "kill_at": "before_effect", "marker": str(marker)},
        )
        session.commit()
    wait_until(
        lambda: all_done(app, 1),
        60,
        lambda: f"the sweep never finished the item: {state_counts(app)}\n{workers.logs()}",
        every=0.5,
    )
    assert marker.exists(), "the worker was never killed"
    assert effect_counts(app) == {item.id: 1}
    logs = workers.started[0].log.read_text(errors="replace")
    assert "Sending due task portal.outbox.sweep" in logs
