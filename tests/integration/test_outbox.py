"""The outbox on SQLite and PostgreSQL: enqueue and dispatch, claims and leases, outcomes, sweep.

No worker runs here: the tests call :func:`claim`, :func:`run_item` and :func:`sweep` directly.
Dispatched messages go to Celery's in-memory broker (a queue of the test's own) and are read
back from it, so what was "sent" is what a worker would have received. Handlers come from the
``outbox_testkit`` test plugin (``tests/plugins/outbox_testkit``).
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from queue import Empty
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from hypothesis import given
from hypothesis import strategies as st

from portal.core.db import get_database, utcnow
from portal.default_plugin.schedule import PURGE_SESSIONS_TASK
from portal.integrations.registry import integrations
from portal.outbox.broker import FAN_OUT_TASK, RUN_TASK, SWEEP_TASK, celery_for
from portal.outbox.celery_app import make_celery
from portal.outbox.items import (
    BACKOFF_BASE,
    BACKOFF_CAP,
    FOLLOW_UP_LIMIT,
    _run_handler,
    backoff,
    claim,
    dispatch_in_background,
    enqueue,
    fan_out,
    run_item,
    sweep,
)
from portal.outbox.models import OutboxItem, OutboxState
from tests.support import Tenant

PLUGIN_PATHS = str(Path(__file__).resolve().parent.parent / "plugins")
LEASE = timedelta(minutes=5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _testkit_app(app_factory: Any, **overrides: Any) -> Flask:
    settings = {
        "PORTAL_PLUGINS": "outbox_testkit",
        "PORTAL_PLUGIN_PATHS": PLUGIN_PATHS,
        "PORTAL_BROKER_URL": "memory://",
        "PORTAL_TASK_QUEUE": f"test-{uuid.uuid4().hex[:10]}",
        **overrides,
    }
    app: Flask = app_factory(**settings)
    from outbox_testkit import create_tables, effect_table

    engine = get_database(app).engine
    create_tables(engine)
    with engine.begin() as conn:
        conn.execute(effect_table.delete())
    return app


@pytest.fixture
def outbox_app(app_factory: Any) -> Iterator[Flask]:
    app = _testkit_app(app_factory)
    with app.app_context():
        yield app


def sent_ids(app: Flask) -> list[int]:
    """Drain the app's queue on the in-memory broker: the item ids a worker would receive."""
    celery = celery_for(app)
    ids: list[int] = []
    with celery.connection_for_read() as conn:
        queue = conn.SimpleQueue(celery.conf.task_default_queue)
        try:
            while True:
                message = queue.get(timeout=0.05)
                assert message.headers["task"] == RUN_TASK
                args, kwargs, _embed = message.payload
                assert kwargs == {} and len(args) == 1, "a message carries only the item id"
                ids.append(int(args[0]))
                message.ack()
        except Empty:
            pass
        finally:
            queue.close()
    return ids


def add(app: Flask, kind: str = "core.noop", **kwargs: Any) -> int:
    """Enqueue one item in its own committed transaction; returns its id."""
    payload = kwargs.pop("payload", {})
    with get_database(app).sessions() as session:
        item = enqueue(session, kind, payload, app=app, **kwargs)
        session.commit()
        return item.id


def load(app: Flask, item_id: int) -> OutboxItem:
    with get_database(app).sessions() as session:
        item = session.get(OutboxItem, item_id)
        assert item is not None
        return item


def effects(app: Flask) -> list[dict[str, Any]]:
    from outbox_testkit import effect_table

    with get_database(app).engine.connect() as conn:
        rows = conn.execute(sa.select(effect_table).order_by(effect_table.c.item_id))
        return [dict(row._mapping) for row in rows]


def set_columns(app: Flask, item_id: int, **values: Any) -> None:
    with get_database(app).sessions() as session:
        session.execute(sa.update(OutboxItem).where(OutboxItem.id == item_id).values(**values))
        session.commit()


# -- enqueue and dispatch --------------------------------------------------------------------


def test_enqueue_dispatches_only_after_commit(outbox_app: Flask) -> None:
    with get_database(outbox_app).sessions() as session:
        item = enqueue(session, "core.noop", {"n": 1})
        session.flush()
        assert sent_ids(outbox_app) == [], "nothing may be sent before the commit"
        session.commit()
    assert sent_ids(outbox_app) == [item.id]
    stored = load(outbox_app, item.id)
    assert stored.state == OutboxState.PENDING and stored.attempts == 0
    assert stored.payload == {"n": 1} and stored.dispatched_at is not None


def test_one_commit_dispatches_every_item_it_enqueued(outbox_app: Flask) -> None:
    with get_database(outbox_app).sessions() as session:
        items = [enqueue(session, "core.noop", {"n": n}) for n in range(3)]
        session.commit()
        session.commit()  # a second, empty commit sends nothing again
    assert sent_ids(outbox_app) == [item.id for item in items]


def test_rollback_dispatches_nothing(outbox_app: Flask) -> None:
    with get_database(outbox_app).sessions() as session:
        enqueue(session, "core.noop", {})
        session.rollback()
        session.commit()  # the next transaction of the same session has nothing to send
    assert sent_ids(outbox_app) == []
    with get_database(outbox_app).sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(OutboxItem)) == 0


def test_unknown_kind_is_refused_at_enqueue(outbox_app: Flask) -> None:
    with get_database(outbox_app).sessions() as session:
        with pytest.raises(ValueError, match=r"no outbox handler for kind 'nobody\.knows'"):
            enqueue(session, "nobody.knows", {})
        assert session.scalar(sa.select(sa.func.count()).select_from(OutboxItem)) == 0


def test_later_work_is_left_to_the_sweep(outbox_app: Flask) -> None:
    later = utcnow() + timedelta(hours=1)
    item_id = add(outbox_app, available_at=later)
    assert sent_ids(outbox_app) == []
    assert load(outbox_app, item_id).dispatched_at is None
    assert sweep(outbox_app) == 0
    assert sweep(outbox_app, now=later + timedelta(seconds=1)) == 1
    assert sent_ids(outbox_app) == [item_id]


def test_a_broker_that_is_down_loses_nothing(
    app_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = _testkit_app(app_factory, PORTAL_BROKER_URL=f"redis://127.0.0.1:{_free_port()}/0")
    with caplog.at_level(logging.ERROR, logger="portal.outbox.items"):
        item_id = add(app)  # the commit succeeds although the dispatch fails
    assert "could not dispatch 1 outbox item(s)" in caplog.text
    item = load(app, item_id)
    assert item.state == OutboxState.PENDING
    assert item.dispatched_at is None, "the sweep must send it at its next run"
    assert sweep(app) == 0  # still down: nothing sent, nothing lost
    assert load(app, item_id).dispatched_at is None
    assert run_item(app, item_id, "w") == "done"  # a worker that gets the id runs it


def test_background_dispatch_sends_committed_items_from_its_own_thread(outbox_app: Flask) -> None:
    dispatcher = dispatch_in_background(outbox_app)
    try:
        assert dispatch_in_background(outbox_app) is dispatcher  # one per app
        first = [add(outbox_app) for _ in range(3)]
        received = wait_for_sent(outbox_app, len(first))
        assert sorted(received) == first
        # at exit whatever is still queued is sent before the thread stops
        with get_database(outbox_app).sessions() as session:
            items = [enqueue(session, "core.noop", {"n": n}) for n in range(2)]
            session.commit()
        dispatcher.close()
        rest = wait_for_sent(outbox_app, len(items), timeout=1.0)
        assert sorted(received + rest) == sorted(first + [i.id for i in items])
    finally:
        dispatcher.close()
        outbox_app.extensions.pop("portal_outbox_dispatcher", None)


def test_background_dispatch_to_a_broker_that_is_down_leaves_the_item_to_the_sweep(
    app_factory: Any,
) -> None:
    app = _testkit_app(app_factory, PORTAL_BROKER_URL=f"redis://127.0.0.1:{_free_port()}/0")
    dispatcher = dispatch_in_background(app)
    try:
        item_id = add(app)  # committed: the request would be answered now
        dispatcher.close()  # the thread has tried the broker and given up
        item = load(app, item_id)
        assert item.state == OutboxState.PENDING and item.dispatched_at is None
    finally:
        dispatcher.close()


def wait_for_sent(app: Flask, count: int, timeout: float = 10.0) -> list[int]:
    """The item ids sent, a worker's fan-out of a batch included."""
    received: list[int] = []
    deadline = time.monotonic() + timeout
    while len(received) < count and time.monotonic() < deadline:
        for task, args in messages(app):
            if task == FAN_OUT_TASK:
                # as a worker runs it (the web side's Celery only sends)
                worker = celery_for(app)
                if FAN_OUT_TASK not in worker.tasks:
                    worker = make_celery(app)
                worker.tasks[FAN_OUT_TASK](*args)
            else:
                received.append(int(args[0]))
    return received


def messages(app: Flask) -> list[tuple[str, list[Any]]]:
    """Drain the app's queue: each message's task name and arguments."""
    celery = celery_for(app)
    found: list[tuple[str, list[Any]]] = []
    with celery.connection_for_read() as conn:
        queue = conn.SimpleQueue(celery.conf.task_default_queue)
        try:
            while True:
                message = queue.get(timeout=0.05)
                args, _kwargs, _embed = message.payload
                found.append((message.headers["task"], list(args)))
                message.ack()
        except Empty:
            pass
        finally:
            queue.close()
    return found


def test_a_batch_goes_out_as_one_message_that_a_worker_fans_out(outbox_app: Flask) -> None:
    ids = [add(outbox_app) for _ in range(3)]
    assert sorted(sent_ids(outbox_app)) == ids  # each sent on its commit, as usual
    fan_out(outbox_app, ids)
    assert messages(outbox_app) == [(FAN_OUT_TASK, [ids])]
    assert make_celery(outbox_app).tasks[FAN_OUT_TASK](ids) == 3  # the worker's side
    assert sent_ids(outbox_app) == ids


def test_a_fan_out_the_broker_refuses_leaves_the_items_to_the_sweep(app_factory: Any) -> None:
    app = _testkit_app(app_factory, PORTAL_BROKER_URL=f"redis://127.0.0.1:{_free_port()}/0")
    item_id = add(app)  # its own dispatch failed too: un-marked already
    set_columns(app, item_id, dispatched_at=utcnow())
    fan_out(app, [item_id])
    assert load(app, item_id).dispatched_at is None


# -- claims and leases -----------------------------------------------------------------------


def test_claim_is_exclusive(outbox_app: Flask) -> None:
    item_id = add(outbox_app)
    sessions = get_database(outbox_app).sessions
    with sessions() as first, sessions() as second:
        won = claim(first, item_id, "worker-a", LEASE)
        first.commit()
        lost = claim(second, item_id, "worker-b", LEASE)
        second.commit()
    assert won is not None and won.lease_owner == "worker-a" and won.attempts == 1
    assert won.state == OutboxState.RUNNING and won.lease_expires_at is not None
    assert lost is None


def _race(app: Flask, item_id: int, contenders: int) -> list[str]:
    """Let ``contenders`` threads claim one item at the same moment; returns the winners."""
    barrier = threading.Barrier(contenders)
    winners: list[str] = []
    errors: list[BaseException] = []

    def contend(name: str) -> None:
        try:
            with get_database(app).sessions() as session:
                barrier.wait(timeout=10)
                if claim(session, item_id, name, LEASE) is not None:
                    winners.append(name)
                session.commit()
        except BaseException as error:  # reported below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=contend, args=(f"w{n}",)) for n in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a claim hung"
    assert not errors, errors
    return winners


def test_concurrent_claims_have_one_winner(outbox_app: Flask) -> None:
    for item_id in [add(outbox_app) for _ in range(5)]:
        winners = _race(outbox_app, item_id, contenders=6)
        assert len(winners) == 1, f"item {item_id} claimed by {winners}"
        assert load(outbox_app, item_id).lease_owner == winners[0]


def test_claim_refuses_work_not_yet_due_or_finished(outbox_app: Flask) -> None:
    later = add(outbox_app, available_at=utcnow() + timedelta(minutes=10))
    done = add(outbox_app)
    assert run_item(outbox_app, done, "w") == "done"
    with get_database(outbox_app).sessions() as session:
        assert claim(session, later, "w", LEASE) is None
        assert claim(session, done, "w", LEASE, now=utcnow() + timedelta(days=1)) is None
        assert claim(session, later, "w", LEASE, now=utcnow() + timedelta(minutes=11))


def test_an_expired_lease_lets_another_worker_claim(outbox_app: Flask) -> None:
    item_id = add(outbox_app)
    sessions = get_database(outbox_app).sessions
    with sessions() as session:
        assert claim(session, item_id, "dead-worker", timedelta(seconds=30))
        session.commit()
    with sessions() as session:
        assert claim(session, item_id, "rescuer", LEASE) is None, "the lease is still live"
        later = utcnow() + timedelta(seconds=31)
        taken = claim(session, item_id, "rescuer", LEASE, now=later)
        session.commit()
    assert taken is not None and taken.lease_owner == "rescuer" and taken.attempts == 2
    assert run_item(outbox_app, item_id, "late-worker") == "not-claimable"


# -- outcomes --------------------------------------------------------------------------------


def test_done_commits_with_the_handlers_writes(outbox_app: Flask) -> None:
    item_id = add(outbox_app, "testkit.effect")
    assert run_item(outbox_app, item_id, "w") == "done"
    item = load(outbox_app, item_id)
    assert item.state == OutboxState.DONE and item.finished_at is not None
    assert item.result == {"attempt": 1} and item.attempts == 1
    assert item.lease_owner is None and item.lease_expires_at is None
    assert [e["item_id"] for e in effects(outbox_app)] == [item_id]
    assert run_item(outbox_app, item_id, "w2") == "not-claimable"  # a redelivery repeats nothing
    assert len(effects(outbox_app)) == 1


def test_a_follow_up_runs_next_in_the_same_worker_without_the_broker(outbox_app: Flask) -> None:
    first = add(outbox_app, "testkit.chain", payload={"remaining": 3})
    sent_ids(outbox_app)  # the first one's own message
    assert run_item(outbox_app, first, "w") == "done"
    done = effects(outbox_app)
    assert len(done) == 4, "the three follow-ups ran in the same call"
    assert all(load(outbox_app, e["item_id"]).state == OutboxState.DONE for e in done)
    assert sent_ids(outbox_app) == [], "a follow-up run here is not also sent to the broker"
    # a redelivered follow-up message repeats nothing
    assert run_item(outbox_app, done[-1]["item_id"], "w2") == "not-claimable"


def test_a_long_chain_of_follow_ups_hands_the_rest_to_the_broker(outbox_app: Flask) -> None:
    first = add(outbox_app, "testkit.chain", payload={"remaining": FOLLOW_UP_LIMIT + 5})
    sent_ids(outbox_app)
    assert run_item(outbox_app, first, "w") == "done"
    assert len(effects(outbox_app)) == FOLLOW_UP_LIMIT + 1
    [handed_on] = sent_ids(outbox_app)
    assert load(outbox_app, handed_on).state == OutboxState.PENDING
    assert run_item(outbox_app, handed_on, "w") == "done"
    assert len(effects(outbox_app)) == FOLLOW_UP_LIMIT + 6


def test_a_follow_up_left_behind_by_a_dead_worker_is_swept(outbox_app: Flask) -> None:
    """The worker commits a link (its follow-up leased to itself) and dies before running the
    follow-up: no message was sent for it, so the sweep sends it once the lease has expired."""
    first = add(outbox_app, "testkit.chain", payload={"remaining": 1})
    sent_ids(outbox_app)
    database = get_database(outbox_app)
    with database.sessions() as session:
        item = claim(session, first, "doomed", LEASE)
        session.commit()
    assert item is not None
    with database.sessions() as session:
        outcome, follow_up = _run_handler(outbox_app, session, item, "doomed")
    assert outcome == "done" and follow_up is not None  # ... and here the worker dies
    left = load(outbox_app, follow_up.id)
    assert (left.state, left.lease_owner, left.attempts) == (OutboxState.RUNNING, "doomed", 1)
    assert sent_ids(outbox_app) == []
    assert sweep(outbox_app) == 0, "within its lease the worker may still be about to run it"
    assert sweep(outbox_app, now=utcnow() + LEASE + timedelta(seconds=1)) == 1
    assert sent_ids(outbox_app) == [follow_up.id]
    set_columns(outbox_app, follow_up.id, lease_expires_at=utcnow() - timedelta(seconds=1))
    assert run_item(outbox_app, follow_up.id, "w") == "done"
    assert len(effects(outbox_app)) == 2


def test_a_lost_lease_undoes_the_handlers_writes(outbox_app: Flask) -> None:
    item_id = add(outbox_app, "testkit.steal")
    assert run_item(outbox_app, item_id, "slow-worker") == "lease-lost"
    assert effects(outbox_app) == [], "the write of a worker that lost its lease survived"
    item = load(outbox_app, item_id)
    assert item.state == OutboxState.RUNNING and item.lease_owner == "thief"


def test_a_handler_that_uses_no_database_is_marked_done_with_its_result(
    outbox_app: Flask,
) -> None:
    """Its "done" is committed on its own (autocommit), and the connection is transactional
    again for whatever runs on it next."""
    item_id = add(outbox_app, "testkit.scope")
    assert run_item(outbox_app, item_id, "w") == "done"
    item = load(outbox_app, item_id)
    assert (item.state, item.lease_owner, item.result) == (OutboxState.DONE, None, {"scope": None})
    # a leaked autocommit would keep this handler's write although its lease was lost
    stolen = add(outbox_app, "testkit.steal")
    assert run_item(outbox_app, stolen, "w") == "lease-lost"
    assert effects(outbox_app) == [], "the connection stayed in autocommit after the finish"


def test_a_lost_lease_is_noticed_when_the_handler_used_no_database(outbox_app: Flask) -> None:
    item_id = add(outbox_app, "testkit.steal_quietly")
    assert run_item(outbox_app, item_id, "slow-worker") == "lease-lost"
    item = load(outbox_app, item_id)
    assert item.state == OutboxState.RUNNING and item.lease_owner == "thief"
    assert item.result is None


def test_a_handler_working_past_its_lease_gets_no_concurrent_twin(app_factory: Any) -> None:
    """The lease is renewed while the handler works: a claim in the meantime, even after the
    original lease would have run out, finds nothing to take."""
    app = _testkit_app(app_factory, PORTAL_OUTBOX_LEASE_SECONDS=1)
    with app.app_context():
        item_id = add(app, "testkit.slow", payload={"seconds": 2.5})
        outcome: list[str] = []
        worker = threading.Thread(target=lambda: outcome.append(run_item(app, item_id, "long")))
        worker.start()
        time.sleep(1.8)  # the first lease (1 s) would be over by now
        with get_database(app).sessions() as session:
            twin = claim(session, item_id, "twin", timedelta(seconds=1))
            session.commit()
        worker.join(timeout=30)
        assert twin is None, "another worker took over an item that was still being worked on"
        assert outcome == ["done"]
        assert len(effects(app)) == 1
        assert load(app, item_id).attempts == 1


def test_an_item_whose_worker_died_on_every_attempt_is_failed_not_run_again(
    outbox_app: Flask,
) -> None:
    """Its lease expired with no attempt left: no claim takes it (running it again may be what
    kills the worker), and the sweep records it as failed instead of sending it."""
    item_id = add(outbox_app, "testkit.effect", max_attempts=3)
    expired = utcnow() - timedelta(seconds=1)
    set_columns(
        outbox_app,
        item_id,
        state=OutboxState.RUNNING,
        attempts=3,
        lease_owner="dead",
        lease_expires_at=expired,
    )
    sent_ids(outbox_app)
    assert run_item(outbox_app, item_id, "w") == "not-claimable"
    assert sweep(outbox_app) == 0
    assert sent_ids(outbox_app) == []
    item = load(outbox_app, item_id)
    assert item.state == OutboxState.FAILED and item.lease_owner is None
    assert item.last_error is not None and "gave up after 3 attempts" in item.last_error
    assert effects(outbox_app) == []
    # one with an attempt left is taken over as before
    other = add(outbox_app, "testkit.effect", max_attempts=3)
    set_columns(
        outbox_app,
        other,
        state=OutboxState.RUNNING,
        attempts=2,
        lease_owner="dead",
        lease_expires_at=expired,
    )
    assert run_item(outbox_app, other, "w") == "done"


def test_retry_later_reschedules_no_earlier_than_retry_after(outbox_app: Flask) -> None:
    item_id = add(outbox_app, "testkit.retry", payload={"retry_after": 120})
    before = utcnow()
    assert run_item(outbox_app, item_id, "w") == "retry"
    item = load(outbox_app, item_id)
    assert item.state == OutboxState.PENDING and item.attempts == 1
    assert item.available_at >= before + timedelta(seconds=120)
    assert item.last_error == "the provider is busy"
    assert item.lease_owner is None and item.dispatched_at is None
    assert effects(outbox_app) == [], "a retried attempt keeps none of its writes"
    assert run_item(outbox_app, item_id, "w") == "not-claimable", "retried too early"
    assert sweep(outbox_app) == 0
    assert sweep(outbox_app, now=item.available_at + timedelta(seconds=1)) == 1


def test_exhausted_attempts_fail_the_item(outbox_app: Flask) -> None:
    item_id = add(outbox_app, "testkit.retry", max_attempts=2)
    assert run_item(outbox_app, item_id, "w") == "retry"
    set_columns(outbox_app, item_id, available_at=utcnow())
    assert run_item(outbox_app, item_id, "w") == "failed"
    item = load(outbox_app, item_id)
    assert item.state == OutboxState.FAILED and item.attempts == 2
    assert item.last_error == "gave up after 2 attempts: the provider is busy"
    assert item.finished_at is not None and item.lease_owner is None


def test_give_up_fails_at_once_and_is_never_retried(outbox_app: Flask) -> None:
    item_id = add(outbox_app, "testkit.give_up")
    assert run_item(outbox_app, item_id, "w") == "failed"
    item = load(outbox_app, item_id)
    assert item.state == OutboxState.FAILED and item.attempts == 1
    assert item.last_error == "the provider rejected the change: quantity below the minimum"
    assert effects(outbox_app) == []
    assert run_item(outbox_app, item_id, "w") == "not-claimable"
    assert sweep(outbox_app, now=utcnow() + timedelta(days=30)) == 0


def test_an_exception_rolls_back_and_retries(
    outbox_app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    item_id = add(outbox_app, "testkit.boom")
    with caplog.at_level(logging.ERROR, logger="portal.outbox.items"):
        assert run_item(outbox_app, item_id, "w") == "retry"
    assert f"outbox item {item_id} (testkit.boom) raised" in caplog.text
    item = load(outbox_app, item_id)
    assert item.state == OutboxState.PENDING and item.attempts == 1
    assert item.last_error == "RuntimeError: handler crashed"
    assert effects(outbox_app) == []


def test_an_item_whose_handler_is_gone_is_retried_not_lost(outbox_app: Flask) -> None:
    with get_database(outbox_app).sessions() as session:
        item = OutboxItem(kind="removed.plugin", payload={})
        session.add(item)
        session.commit()
    assert run_item(outbox_app, item.id, "w") == "retry"
    stored = load(outbox_app, item.id)
    assert stored.state == OutboxState.PENDING
    assert stored.last_error == "no handler for kind 'removed.plugin' is loaded"


def test_handlers_run_in_the_items_tenant_scope(outbox_app: Flask, tenant: Tenant) -> None:
    partner_id, customer_id = tenant.partner.id, tenant.customers["a"].id
    scoped = add(outbox_app, "testkit.scope", partner_id=partner_id, customer_id=customer_id)
    partner_wide = add(outbox_app, "testkit.scope", partner_id=partner_id)
    global_ = add(outbox_app, "testkit.scope")
    for item_id in (scoped, partner_wide, global_):
        assert run_item(outbox_app, item_id, "w") == "done"
    assert load(outbox_app, scoped).result == {"scope": [partner_id, customer_id]}
    assert load(outbox_app, partner_wide).result == {"scope": [partner_id, None]}
    assert load(outbox_app, global_).result == {"scope": None}


# -- sweep -----------------------------------------------------------------------------------


def test_sweep_sends_waiting_and_abandoned_work_only(outbox_app: Flask) -> None:
    now = utcnow()
    long_ago = now - LEASE - timedelta(minutes=1)
    rows = {
        "never sent": {},
        "sent long ago": {"dispatched_at": long_ago},
        "abandoned": {
            "state": OutboxState.RUNNING,
            "lease_expires_at": now - timedelta(seconds=1),
            "dispatched_at": long_ago,
        },
        "just sent": {"dispatched_at": now},
        "not due": {"available_at": now + timedelta(minutes=1)},
        "leased": {"state": OutboxState.RUNNING, "lease_expires_at": now + timedelta(minutes=1)},
        "done": {"state": OutboxState.DONE, "finished_at": now},
        "failed": {"state": OutboxState.FAILED, "finished_at": now},
    }
    ids: dict[str, int] = {}
    with get_database(outbox_app).sessions() as session:
        for name, values in rows.items():
            values.setdefault("available_at", now - timedelta(seconds=1))
            item = OutboxItem(kind="core.noop", payload={"name": name}, **values)
            session.add(item)
            session.flush()
            ids[name] = item.id
        session.commit()
    assert sweep(outbox_app, now=now) == 3
    expected = [ids["never sent"], ids["sent long ago"], ids["abandoned"]]
    assert sorted(sent_ids(outbox_app)) == sorted(expected)
    assert sweep(outbox_app, now=now) == 0, "a second sweep re-sent what the first just sent"
    for name in ("never sent", "sent long ago", "abandoned"):
        assert run_item(outbox_app, ids[name], "w") == "done", name
    for name in ("done", "failed"):
        assert load(outbox_app, ids[name]).state == OutboxState(name)


def test_sweep_sends_a_bounded_batch(outbox_app: Flask) -> None:
    with get_database(outbox_app).sessions() as session:
        session.add_all(OutboxItem(kind="core.noop", payload={}) for _ in range(501))
        session.commit()
    assert sweep(outbox_app) == 500
    assert sweep(outbox_app) == 1
    assert len(sent_ids(outbox_app)) == 501


# -- the Celery app and the core hooks -------------------------------------------------------


def test_celery_app_settings_and_schedule(outbox_app: Flask) -> None:
    celery = make_celery(outbox_app)  # the worker's
    conf = celery.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1 and conf.task_ignore_result
    assert conf.accept_content == ["json"] and conf.task_serializer == "json"
    assert conf.broker_url == "memory://"
    assert {RUN_TASK, SWEEP_TASK, PURGE_SESSIONS_TASK} <= set(celery.tasks)
    schedule = conf.beat_schedule
    assert schedule["portal.outbox.sweep"]["task"] == SWEEP_TASK
    assert schedule["portal.outbox.sweep"]["schedule"] == timedelta(seconds=30)
    assert schedule["portal.sessions.purge"]["task"] == PURGE_SESSIONS_TASK
    assert schedule == integrations(outbox_app).beat_schedule
    assert "core.noop" in integrations(outbox_app).outbox_handlers


def test_the_tasks_run_and_sweep_outbox_items(outbox_app: Flask) -> None:
    celery = make_celery(outbox_app)  # the worker's
    item_id = add(outbox_app)
    assert sent_ids(outbox_app) == [item_id]
    assert celery.tasks[RUN_TASK](item_id) == "done"  # what a worker runs for the message
    assert load(outbox_app, item_id).state == OutboxState.DONE
    set_columns(outbox_app, item_id, state=OutboxState.PENDING, dispatched_at=None)
    assert celery.tasks[SWEEP_TASK]() == 1
    assert sent_ids(outbox_app) == [item_id]
    assert celery.tasks[PURGE_SESSIONS_TASK]() == 0


# -- backoff ---------------------------------------------------------------------------------


@given(
    attempt=st.integers(min_value=0, max_value=10_000),
    retry_after=st.none() | st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=2)),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_backoff_bounds(attempt: int, retry_after: timedelta | None, seed: int) -> None:
    delay = backoff(attempt, retry_after, random.Random(seed))
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(max(attempt - 1, 0), 30))
    assert delay >= timedelta(0)
    if retry_after:
        assert delay >= retry_after, "retried before the provider's Retry-After"
        assert delay <= retry_after * 1.1, "kept waiting well after the provider's Retry-After"
    else:  # none given (or "now"): exponential backoff
        assert delay <= ceiling


def test_backoff_grows_and_is_jittered() -> None:
    rng = random.Random(7)
    first = [backoff(1, None, rng) for _ in range(200)]
    tenth = [backoff(10, None, rng) for _ in range(200)]
    assert max(first) <= BACKOFF_BASE < max(tenth)
    assert len(set(tenth)) > 150, "retries of items failing together must spread out"
    assert max(backoff(50, None, rng) for _ in range(200)) <= BACKOFF_CAP


def test_savepoints_inside_the_transaction(outbox_app: Flask) -> None:
    with get_database(outbox_app).sessions() as session:
        kept = enqueue(session, "core.noop", {"kept": True})
        with session.begin_nested():
            inner = enqueue(session, "core.noop", {"inner": True})
        savepoint = session.begin_nested()
        undone = enqueue(session, "core.noop", {"undone": True})
        session.flush()
        undone_id = undone.id
        savepoint.rollback()
        session.commit()
    assert sent_ids(outbox_app) == [kept.id, inner.id]
    assert run_item(outbox_app, undone_id, "w") == "not-claimable"
