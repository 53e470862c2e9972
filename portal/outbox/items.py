"""The outbox: enqueue work in the caller's transaction, claim it under a lease, run it once.

Why this shape (DESIGN §7, reliability notes §1.5):

- :func:`enqueue` adds the row to the caller's session, so the work exists if and only if the
  change that causes it commits. The broker only ever hears about committed rows: the items
  are collected in ``session.info`` and their ids sent after the commit. A broker that is down
  loses nothing; the row stays pending and :func:`sweep` sends it later.
- A message carries only the item's id. Messages may be lost, duplicated or redelivered after a
  crash; the row is the truth. :func:`claim` is one conditional UPDATE, so exactly one worker
  holds an item at a time, and a lease lets another take over when a worker dies. Every later
  change of the item's state is conditional on that lease.
- :func:`run_item` commits "done" in the same transaction as the handler's own writes, and only
  if the lease is still ours: a worker that lost its lease can't commit a second effect.

Nothing here imports Celery at module level: the web process enqueues without loading it until
the first dispatch, and the tests drive this module directly.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, Final, cast

from flask import Flask, current_app
from sqlalchemy import (
    Connection,
    String,
    Table,
    and_,
    bindparam,
    event,
    inspect,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.orm import Session, SessionTransaction

from portal.core.db import get_database, utcnow
from portal.core.scoping import Scope, set_scope
from portal.outbox.handlers import Defer, Done, GiveUp, Outcome, RetryLater, wiring
from portal.outbox.models import OutboxItem, OutboxState

log = logging.getLogger(__name__)

BACKOFF_BASE: Final = timedelta(seconds=2)
BACKOFF_CAP: Final = timedelta(hours=1)
RETRY_AFTER_JITTER: Final = 0.05  # share of a Retry-After added at most, to spread retries
SWEEP_BATCH: Final = 500
ERROR_LIMIT: Final = 2000  # characters of an error kept on the item (shown to staff)
DEFAULT_LEASE_SECONDS: Final = 300
RENEW_TICK_S: Final = 5.0  # the lease keeper wakes at least this often (more for short leases)
# follow-ups one task runs before it hands the next to the broker: a long chain of work must not
# keep a worker slot from everything else
FOLLOW_UP_LIMIT: Final = 20
# how long a web process's background dispatch collects committed items into one message
COALESCE_SECONDS: Final = 0.05

# keys of Session.info: the items to dispatch after commit, and the app they belong to
_PENDING: Final = "portal_outbox_items"
_PENDING_IDS: Final = "portal_outbox_item_ids"  # items inserted by enqueue_row
_APP: Final = "portal_outbox_app"

_rng = random.Random()  # jitter spreads retries; it protects nothing


# -- settings --------------------------------------------------------------------------------


def lease_duration(app: Flask) -> timedelta:
    """How long a claimed item stays with its worker before another may take it over."""
    seconds = app.config.get("PORTAL_OUTBOX_LEASE_SECONDS") or DEFAULT_LEASE_SECONDS
    return timedelta(seconds=int(seconds))


def worker_identity() -> str:
    """A lease owner unique to one run: a worker can't mistake an old lease of its own."""
    return f"{socket.gethostname()}:{uuid.uuid4().hex[:12]}"


# -- enqueue ---------------------------------------------------------------------------------


def enqueue(
    session: Session,
    kind: str,
    payload: dict[str, Any],
    *,
    partner_id: int | None = None,
    customer_id: int | None = None,
    available_at: datetime | None = None,
    max_attempts: int = 8,
    app: Flask | None = None,
) -> OutboxItem:
    """Add an outbox item to the caller's transaction; it is dispatched once that commits.

    The caller commits (or rolls back) as usual: a rollback takes the item with it and nothing
    is sent. Like any added object, the item is inserted (and gets its id) at the next flush,
    so a batch of items costs one INSERT. ``app`` defaults to the current app; an unknown
    ``kind`` is refused here rather than failing later in a worker.
    """
    flask_app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    values, due = _item_values(
        flask_app, kind, payload, partner_id, customer_id, available_at, max_attempts
    )
    item = OutboxItem(**values)
    session.add(item)  # inserted at the next flush, many items in one statement
    if due:
        session.info.setdefault(_PENDING, []).append(item)
        session.info[_APP] = flask_app
    return item


def enqueue_row(
    session: Session,
    kind: str,
    payload: dict[str, Any],
    *,
    partner_id: int | None = None,
    customer_id: int | None = None,
    max_attempts: int = 8,
    app: Flask | None = None,
) -> int:
    """:func:`enqueue` for one due item on a hot path: a Core INSERT sent now, its id back.

    The same row and the same guarantee: the id joins the transaction's items to dispatch
    after its commit, and a rollback forgets it (nothing is sent; were a savepoint around it
    rolled back alone, its message would find no row to claim). No ORM object is made, so
    it cannot be a handler's :attr:`Done.follow_up`; use :func:`enqueue` for that.
    """
    flask_app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    values, _ = _item_values(flask_app, kind, payload, partner_id, customer_id, None, max_attempts)
    item_id = int(session.connection().execute(_INSERT_ITEM, values).scalar_one())
    session.info.setdefault(_PENDING_IDS, []).append(item_id)
    session.info[_APP] = flask_app
    return item_id


def _item_values(
    app: Flask,
    kind: str,
    payload: dict[str, Any],
    partner_id: int | None,
    customer_id: int | None,
    available_at: datetime | None,
    max_attempts: int,
) -> tuple[dict[str, Any], bool]:
    """A new item's column values, and whether it is due now; refuses what no worker could run."""
    if kind not in wiring(app).handlers:
        known = ", ".join(sorted(wiring(app).handlers)) or "none"
        raise ValueError(f"no outbox handler for kind {kind!r} is loaded (loaded: {known})")
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    now = utcnow()
    due = available_at is None or available_at <= now
    values = {
        "kind": kind,
        "payload": payload,
        "partner_id": partner_id,
        "customer_id": customer_id,
        "state": OutboxState.PENDING,
        "attempts": 0,
        "max_attempts": max_attempts,
        "available_at": available_at or now,
        # due work is marked as sent now, so the sweep leaves it to the dispatch after commit
        # (a failed dispatch clears the mark); later work is left to the sweep, when it is due
        "dispatched_at": now if due else None,
        "created_at": now,
    }
    return values, due


@event.listens_for(Session, "after_commit")
def _dispatch_after_commit(session: Session) -> None:
    items: list[OutboxItem] = session.info.pop(_PENDING, [])
    inserted: list[int] = session.info.pop(_PENDING_IDS, [])
    app: Flask | None = session.info.pop(_APP, None)
    # the ids from the identity keys: no SQL may run here, and none is needed. An item without
    # one was never inserted (expunged, or its savepoint rolled back): nothing to send.
    ids = [key[0] for key in (inspect(item).identity for item in items) if key] + inserted
    if ids and app is not None:
        dispatcher = app.extensions.get(_DISPATCHER)
        if isinstance(dispatcher, BackgroundDispatch):
            dispatcher.submit(ids)
        else:
            dispatch_ids(app, ids)


_DISPATCHER: Final = "portal_outbox_dispatcher"


class BackgroundDispatch:
    """Sends committed items to the broker from a thread of its own, in batches.

    For web workers (``gunicorn.conf.py`` turns it on): a request that enqueued work is
    answered without waiting for the broker. One item goes out as its own message; several
    that came meanwhile (a busy web process) as one ``fan_out`` message, whose worker sends
    each item's message: a message costs the web process about a millisecond of CPU, most
    of what a payment webhook costs it. The guarantee is unchanged, as the row is the truth:
    an id still queued here when the process dies, or in a lost message, was marked
    dispatched, so the sweep sends it once its lease period has passed; a broker that is down
    clears the mark as :func:`dispatch_ids` always does. At a clean exit the queue is sent
    first.
    """

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._ids: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="portal-outbox-dispatch")
        self._thread.daemon = True
        self._thread.start()
        atexit.register(self.close)

    def submit(self, ids: Sequence[int]) -> None:
        for item_id in ids:
            self._ids.put(item_id)

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued and stop the thread."""
        if self._thread.is_alive():
            self._ids.put(None)
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            batch: list[int] = []
            first = self._ids.get()
            stop = first is None
            if first is not None:
                batch.append(first)
            # what else comes within a moment goes in the same message: a busy web process
            # then sends one message per few requests rather than one per request
            until = time.monotonic() + COALESCE_SECONDS
            while not stop:
                try:
                    more = self._ids.get(timeout=max(until - time.monotonic(), 0))
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                else:
                    batch.append(more)
            try:
                if len(batch) == 1:
                    dispatch_ids(self.app, batch)
                elif batch:
                    fan_out(self.app, batch)
            except Exception:  # neither raises; were one to, the thread must live on
                log.exception("background dispatch of %d outbox item(s) failed", len(batch))
            if stop:
                return


def fan_out(app: Flask, ids: Sequence[int]) -> None:
    """Send ``ids`` in one message that a worker turns into one message each; on failure log
    and un-mark them for the sweep. Never raises (the work is already committed)."""
    from portal.outbox.broker import send_fan_out

    try:
        send_fan_out(app, list(ids))
    except Exception:
        log.exception(
            "could not dispatch %d outbox item(s) (first id %s); the sweep will send them",
            len(ids),
            ids[0],
        )
        _clear_dispatched(app, ids)


def dispatch_in_background(app: Flask) -> BackgroundDispatch:
    """From now on, this process sends the app's committed items from a background thread."""
    dispatcher = app.extensions.get(_DISPATCHER)
    if not isinstance(dispatcher, BackgroundDispatch):
        dispatcher = BackgroundDispatch(app)
        app.extensions[_DISPATCHER] = dispatcher
    return dispatcher


@event.listens_for(Session, "after_transaction_end")
def _forget_after_rollback(session: Session, transaction: SessionTransaction) -> None:
    # after a commit the items are already gone; this drops those of a rolled-back transaction
    if transaction.parent is None:
        session.info.pop(_PENDING, None)
        session.info.pop(_PENDING_IDS, None)
        session.info.pop(_APP, None)


def dispatch_ids(app: Flask, ids: Sequence[int]) -> int:
    """Send ``ids`` to the broker; on failure log, un-mark the rest for the sweep, and go on.

    Never raises: it runs after the caller's commit, when the work is already safely stored.
    """
    from portal.outbox.broker import run_sender

    sent = 0
    try:
        with run_sender(app) as send:
            for item_id in ids:
                send(item_id)
                sent += 1
    except Exception:
        log.exception(
            "could not dispatch %d outbox item(s) (first id %s); the sweep will send them",
            len(ids) - sent,
            ids[sent],
        )
        _clear_dispatched(app, ids[sent:])
    return sent


def _clear_dispatched(app: Flask, ids: Sequence[int]) -> None:
    """Let the next sweep send these items at once instead of after a lease period."""
    try:
        with get_database(app).sessions() as session:
            session.execute(
                update(OutboxItem)
                .where(OutboxItem.id.in_(list(ids)), OutboxItem.state == OutboxState.PENDING)
                .values(dispatched_at=None)
                .execution_options(synchronize_session=False)
            )
            session.commit()
    except Exception:
        log.exception("could not clear dispatched_at; the sweep sends them after one lease")


# -- claim and run ---------------------------------------------------------------------------


# Statements built once, on the table rather than the mapped class: a worker runs them for every
# item, and building them or passing them through the ORM's bulk-update machinery costs more
# than the database round trip of a no-op item.
_T = cast(Table, OutboxItem.__table__)
_INSERT_ITEM = _T.insert().returning(_T.c.id)
_DUE = and_(_T.c.state == OutboxState.PENDING, _T.c.available_at <= bindparam("now"))
_LEASE_EXPIRED = and_(_T.c.state == OutboxState.RUNNING, _T.c.lease_expires_at < bindparam("now"))
# a worker died holding it, and it has attempts left; one that used them all is not run again
# (each run may have been what killed the worker): the sweep fails it instead
_ABANDONED = and_(_LEASE_EXPIRED, _T.c.attempts < _T.c.max_attempts)
_EXHAUSTED = and_(_LEASE_EXPIRED, _T.c.attempts >= _T.c.max_attempts)
_CLAIM = select(OutboxItem).from_statement(
    update(_T)
    .where(_T.c.id == bindparam("item_id"), or_(_DUE, _ABANDONED))
    .values(
        state=OutboxState.RUNNING,
        lease_expires_at=bindparam("lease_until"),
        lease_owner=bindparam("worker_id"),
        attempts=_T.c.attempts + 1,
    )
    .returning(*_T.c)
)
# the item is still leased to this run: no other worker has taken it over
_OURS = and_(
    _T.c.id == bindparam("item_id"),
    _T.c.state == OutboxState.RUNNING,
    _T.c.lease_owner == bindparam("worker_id"),
)
_NO_LEASE = {"lease_expires_at": None, "lease_owner": None}
_FINISH = (
    update(_T)
    .where(_OURS)
    .values(
        state=OutboxState.DONE,
        finished_at=bindparam("now"),
        result=bindparam("result"),
        last_error=None,
        **_NO_LEASE,
    )
)
_FAIL_EXHAUSTED = (
    update(_T)
    .where(_EXHAUSTED)
    .values(
        state=OutboxState.FAILED,
        finished_at=bindparam("now"),
        last_error=literal("gave up after ")
        + sql_cast(_T.c.attempts, String)
        + literal(" attempts: the worker stopped before finishing each time (lease expired)"),
        **_NO_LEASE,
    )
    .returning(_T.c.id, _T.c.kind)
)
_RENEW = update(_T).where(_OURS).values(lease_expires_at=bindparam("lease_until"))
_FAIL = (
    update(_T)
    .where(_OURS)
    .values(
        state=OutboxState.FAILED,
        finished_at=bindparam("now"),
        last_error=bindparam("error"),
        **_NO_LEASE,
    )
)
_HAND_OVER = (
    update(_T)
    .where(_OURS)
    .values(
        state=OutboxState.PENDING,
        attempts=_T.c.attempts - 1,  # it never ran
        dispatched_at=bindparam("now"),
        **_NO_LEASE,
    )
)
_RETRY = (
    update(_T)
    .where(_OURS)
    .values(
        state=OutboxState.PENDING,
        available_at=bindparam("available_at"),
        last_error=bindparam("error"),
        dispatched_at=None,  # the sweep sends it once it is due
        **_NO_LEASE,
    )
)
_DEFER = (
    update(_T)
    .where(_OURS)
    .values(
        state=OutboxState.PENDING,
        available_at=bindparam("available_at"),
        attempts=_T.c.attempts - 1,  # waiting for a budget is not an attempt
        dispatched_at=None,
        **_NO_LEASE,
    )
)


def claim(
    session: Session,
    item_id: int,
    worker_id: str,
    lease: timedelta,
    now: datetime | None = None,
) -> OutboxItem | None:
    """Take the item for ``lease`` if it is available, in one conditional UPDATE.

    Claimable: pending and due, or running with an expired lease (its worker died). Exactly one
    of several concurrent claimers gets the row back: PostgreSQL re-checks the condition on the
    row after waiting for the other's lock, SQLite serialises writers. ``RETURNING`` is the
    rowcount check and the load of the item in one round trip. The caller commits.
    """
    now = now or utcnow()
    params = {"item_id": item_id, "now": now, "lease_until": now + lease, "worker_id": worker_id}
    return session.scalars(_CLAIM, params).first()


def run_item(app: Flask, item_id: int, worker_id: str | None = None) -> str:
    """Claim one item and run its handler; returns what happened (for logs and tests).

    The claim is committed on its own first, so a crash while the handler runs leaves a lease
    that expires rather than a pending item another worker would start at once. Both
    transactions run on one connection, checked out (and pinged) once per task. A handler's
    follow-up (:attr:`Done.follow_up`) is leased to this worker in the commit that finishes
    the item, and run next on the same connection, up to :data:`FOLLOW_UP_LIMIT` of them; the
    one after that goes to the broker.
    """
    worker_id = worker_id or worker_identity()
    database = get_database(app)
    with database.engine.connect() as connection:
        # the claim is one statement: in autocommit it is its own transaction, committed in
        # the same round trip
        with _autocommit(connection), database.sessions(bind=connection) as session:
            item = claim(session, item_id, worker_id, lease_duration(app))
            session.commit()
        if item is None:
            return "not-claimable"
        with _kept(app, item), database.sessions(bind=connection) as session:
            outcome, follow_up = _run_handler(app, session, item, worker_id)
        for _ in range(FOLLOW_UP_LIMIT):
            if follow_up is None:
                break
            with _kept(app, follow_up), database.sessions(bind=connection) as session:
                _, follow_up = _run_handler(app, session, follow_up, worker_id)
    if follow_up is not None:
        _hand_over(app, follow_up)
    return outcome


class _LeaseKeeper:
    """Renews the leases of the items this process is running, so that a handler working past
    its lease (a long billing run) never gets a concurrent twin from the sweep.

    One daemon thread per process (started on first use, again after a fork), waking a few
    times per lease; registering an item is a dictionary write, so a short item costs nothing
    more. A renewal only extends a lease that is still this worker's (``_OURS``).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[int, tuple[Flask, str, timedelta, float]] = {}
        self._pid: int | None = None
        self._wake = threading.Event()  # a new item may need an earlier tick than planned

    def hold(self, app: Flask, item: OutboxItem) -> None:
        lease = lease_duration(app)
        with self._lock:
            self._held[item.id] = (app, str(item.lease_owner), lease, time.monotonic())
            if self._pid != os.getpid():
                self._pid = os.getpid()
                self._wake = threading.Event()
                threading.Thread(target=self._run, name="outbox-lease-keeper", daemon=True).start()
        self._wake.set()

    def release(self, item_id: int) -> None:
        with self._lock:
            self._held.pop(item_id, None)

    def _run(self) -> None:
        while True:
            with self._lock:
                held = dict(self._held)
            quarters = [lease.total_seconds() / 4 for _, _, lease, _ in held.values()]
            self._wake.wait(min([RENEW_TICK_S, *quarters]))
            self._wake.clear()
            for item_id, (app, worker_id, lease, renewed) in held.items():
                if time.monotonic() - renewed >= lease.total_seconds() / 3:
                    self._renew(app, item_id, worker_id, lease)

    def _renew(self, app: Flask, item_id: int, worker_id: str, lease: timedelta) -> None:
        now = utcnow()
        params = {"item_id": item_id, "worker_id": worker_id, "lease_until": now + lease}
        try:
            with get_database(app).engine.begin() as connection:
                connection.execute(_RENEW, params)
        except Exception:
            log.warning("could not renew the lease of outbox item %s", item_id, exc_info=True)
            return
        with self._lock:
            if item_id in self._held:
                self._held[item_id] = (app, worker_id, lease, time.monotonic())


_lease_keeper = _LeaseKeeper()


@contextmanager
def _kept(app: Flask, item: OutboxItem) -> Iterator[None]:
    """Keep ``item``'s lease alive while the block runs its handler."""
    _lease_keeper.hold(app, item)
    try:
        yield
    finally:
        _lease_keeper.release(item.id)


@contextmanager
def _autocommit(connection: Connection) -> Iterator[None]:
    """Run the block's statements on ``connection`` each in its own transaction (no BEGIN,
    no COMMIT round trip), then give the connection back its usual isolation level."""
    usual = connection.default_isolation_level
    connection.execution_options(isolation_level="AUTOCOMMIT")
    try:
        yield
    finally:
        connection.execution_options(isolation_level=usual)


def _hand_over(app: Flask, item: OutboxItem) -> None:
    """A follow-up this worker will not run after all: release its lease and dispatch it."""
    with get_database(app).sessions() as session:
        params = {"item_id": item.id, "worker_id": item.lease_owner, "now": utcnow()}
        session.connection().execute(_HAND_OVER, params)
        session.commit()
    dispatch_ids(app, [item.id])


def _run_handler(
    app: Flask, session: Session, item: OutboxItem, worker_id: str
) -> tuple[str, OutboxItem | None]:
    """Call the item's handler in the item's tenant scope and record its outcome; returns the
    outcome and a follow-up leased to this worker, to run next."""
    if item.partner_id is not None:
        set_scope(session, Scope(item.partner_id, item.customer_id))
    handler = wiring(app).handlers.get(item.kind)
    if handler is None:
        outcome: Outcome = RetryLater(f"no handler for kind {item.kind!r} is loaded")
    else:
        try:
            outcome = handler(item, session)
        except Exception as error:
            log.exception("outbox item %s (%s) raised; it will be retried", item.id, item.kind)
            session.rollback()
            outcome = RetryLater(_describe(error))
    if isinstance(outcome, Done):
        return _finish(session, item, worker_id, outcome, lease_duration(app))
    session.rollback()  # a handler that did not finish keeps none of its writes
    if isinstance(outcome, GiveUp):
        return _fail(session, item, worker_id, outcome.reason), None
    if isinstance(outcome, Defer):
        params = {"available_at": utcnow() + outcome.delay}
        return _release(session, item, worker_id, _DEFER, params, "deferred"), None
    return _retry_or_fail(session, item, worker_id, outcome), None


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:ERROR_LIMIT]


def _finish(
    session: Session, item: OutboxItem, worker_id: str, outcome: Done, lease: timedelta
) -> tuple[str, OutboxItem | None]:
    """Mark done with the handler's writes, in one commit, if the lease is still ours.

    A follow-up enqueued in this transaction is claimed by this worker in the same commit
    (running, leased, one attempt), so it needs neither a message nor a claim of its own.
    Should the worker die before running it, its lease expires and the sweep sends it.
    """
    now = utcnow()
    params = {"item_id": item.id, "worker_id": worker_id, "now": now, "result": outcome.result}
    if not session.in_transaction() and isinstance(session.bind, Connection):
        # the handler used no database: "done" is then the only statement, committed in its
        # own round trip as the claim is, instead of BEGIN, UPDATE and COMMIT
        with _autocommit(session.bind):
            finished = session.connection().execute(_FINISH, params).rowcount == 1
            session.commit()
        if not finished:
            log.warning("outbox item %s: lease lost before it was marked done", item.id)
            return "lease-lost", None
        return "done", None
    if session.connection().execute(_FINISH, params).rowcount != 1:
        session.rollback()
        log.warning("outbox item %s: lease lost before commit; its writes are undone", item.id)
        return "lease-lost", None
    follow_up = outcome.follow_up
    pending: list[OutboxItem] = session.info.get(_PENDING, [])
    if follow_up is not None and follow_up in pending:
        pending.remove(follow_up)  # not for the broker: this worker runs it
        follow_up.state = OutboxState.RUNNING
        follow_up.lease_owner = worker_id
        follow_up.lease_expires_at = now + lease
        follow_up.attempts = (follow_up.attempts or 0) + 1
    else:
        follow_up = None  # not one of this transaction's due items: the broker has it
    # the follow-up is handed on as it is: nothing needs loading again after the commit
    session.expire_on_commit = False
    try:
        session.commit()
    finally:
        session.expire_on_commit = True
    if follow_up is not None:
        session.expunge(follow_up)
    return "done", follow_up


def _fail(session: Session, item: OutboxItem, worker_id: str, reason: str) -> str:
    params = {"now": utcnow(), "error": reason[:ERROR_LIMIT]}
    return _release(session, item, worker_id, _FAIL, params, "failed")


def _retry_or_fail(session: Session, item: OutboxItem, worker_id: str, outcome: RetryLater) -> str:
    if item.attempts >= item.max_attempts:
        return _fail(
            session, item, worker_id, f"gave up after {item.attempts} attempts: {outcome.reason}"
        )
    delay = backoff(item.attempts, outcome.retry_after, _rng)
    params = {"available_at": utcnow() + delay, "error": outcome.reason[:ERROR_LIMIT]}
    return _release(session, item, worker_id, _RETRY, params, "retry")


def _release(
    session: Session,
    item: OutboxItem,
    worker_id: str,
    statement: Any,
    params: dict[str, Any],
    outcome: str,
) -> str:
    """Record a retry or a failure and drop the lease, if the lease is still ours."""
    result = session.connection().execute(
        statement, {"item_id": item.id, "worker_id": worker_id, **params}
    )
    if result.rowcount != 1:
        session.rollback()
        return "lease-lost"
    session.commit()
    log.info("outbox item %s (%s): %s", item.id, item.kind, outcome)
    return outcome


def backoff(attempt: int, retry_after: timedelta | None, rng: random.Random) -> timedelta:
    """Delay before the next attempt: the provider's ``Retry-After`` when it gave one, else
    exponential with full jitter.

    ``Retry-After`` is what the provider asked for: retrying earlier only earns another refusal,
    and waiting out a longer exponential ceiling instead only delays the work (reliability
    notes B2: no earlier, at most 10 % later). A little jitter, up to 5 % of it, keeps the
    items refused together from coming back in the same instant. Without it, full jitter
    (uniform between 0 and the exponential ceiling) spreads the retries of many items failing
    together; the ceiling doubles from 2 s per attempt up to one hour.
    """
    if retry_after is not None and retry_after > timedelta(0):
        return retry_after + retry_after * (RETRY_AFTER_JITTER * rng.random())
    exponent = min(max(attempt - 1, 0), 20)  # 2 s * 2**20 is far above the cap already
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * (1 << exponent))
    return ceiling * rng.random()


# -- sweep -----------------------------------------------------------------------------------


def fail_exhausted(app: Flask, now: datetime | None = None) -> int:
    """Fail the items whose worker stopped on every attempt (the sweep's first step, on its
    own); returns how many. What the work was for is then failed by its own capability's
    periodic job (a licence change by ``sweep_awaiting``)."""
    with get_database(app).sessions() as session:
        failed = _fail_exhausted(session, now or utcnow())
        session.commit()
    return failed


def _fail_exhausted(session: Session, now: datetime) -> int:
    failed = session.execute(_FAIL_EXHAUSTED, {"now": now}).all()
    for item_id, kind in failed:
        log.error("outbox item %s (%s) failed: its worker stopped on every attempt", item_id, kind)
    return len(failed)


def sweep(app: Flask, now: datetime | None = None) -> int:
    """Dispatch work the broker may have lost; returns how many items were sent.

    Picks items that are due but were not dispatched within one lease period (the dispatch
    failed, the broker lost the message, or a retry came due), and items whose worker's lease
    expired (it died). At most :data:`SWEEP_BATCH` per call, oldest first; a duplicate message
    is harmless because a claim succeeds only once.
    """
    now = now or utcnow()
    quiet_since = now - lease_duration(app)
    due = and_(
        OutboxItem.state == OutboxState.PENDING,
        OutboxItem.available_at <= now,
        or_(OutboxItem.dispatched_at.is_(None), OutboxItem.dispatched_at < quiet_since),
    )
    abandoned = and_(
        OutboxItem.state == OutboxState.RUNNING,
        OutboxItem.lease_expires_at < now,
        OutboxItem.attempts < OutboxItem.max_attempts,
        or_(OutboxItem.dispatched_at.is_(None), OutboxItem.dispatched_at < quiet_since),
    )
    with get_database(app).sessions() as session:
        _fail_exhausted(session, now)
        ids = list(
            session.scalars(
                select(OutboxItem.id)
                .where(or_(due, abandoned))
                .order_by(OutboxItem.available_at, OutboxItem.id)
                .limit(SWEEP_BATCH)
            )
        )
        if not ids:
            session.commit()  # the items failed above
            return 0
        session.execute(
            update(OutboxItem)
            .where(OutboxItem.id.in_(ids))
            .values(dispatched_at=now)
            .execution_options(synchronize_session=False)
        )
        session.commit()
    return dispatch_ids(app, ids)
