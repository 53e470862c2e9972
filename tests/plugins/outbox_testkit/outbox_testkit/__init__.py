"""Outbox handlers for the tests: a real effect, retries, rejections, crashes and kills.

Loaded like a first-party plugin: ``PORTAL_PLUGINS=outbox_testkit`` with
``PORTAL_PLUGIN_PATHS=<repo>/tests/plugins``. Worker processes in the reliability tests load it
the same way, so the handlers here run inside real ``celery worker`` processes.

The effect of ``testkit.effect`` is twofold, as in real work: a row in
``outbox_testkit_effect`` (unique per item, committed with "done") and an optional call to an
"external" HTTP service carrying the item id as its idempotency key. The payload can ask for
the worker process to be killed with SIGKILL at one point of the first attempt:

- ``before_effect``: before anything is written or called;
- ``after_effect``: after the row is written and the service called, before the commit;
- ``after_commit``: right after "done" is committed, before Celery acknowledges the message.

A marker file (``payload["marker"]``) makes the kill happen once: whoever creates it dies.
"""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from datetime import timedelta
from typing import Any

from sqlalchemy import Column, DateTime, Engine, Integer, MetaData, String, Table, event, func
from sqlalchemy.orm import Session

from portal.core.scoping import get_scope
from portal.hookspecs import hookimpl
from portal.outbox.handlers import Done, GiveUp, Outcome, RetryLater
from portal.outbox.items import claim, enqueue
from portal.outbox.models import OutboxItem

metadata = MetaData()
effect_table = Table(
    "outbox_testkit_effect",
    metadata,
    Column("item_id", Integer, primary_key=True),  # one effect per item, ever
    Column("attempt", Integer, nullable=False),
    Column("worker_pid", Integer, nullable=False),
    Column("note", String(100)),
    Column("created_at", DateTime, server_default=func.now()),
)
KILL_AFTER_COMMIT = "outbox_testkit_kill_after_commit"


def create_tables(engine: Engine) -> None:
    metadata.create_all(engine)


def _write_effect(item: OutboxItem, session: Session, note: str = "") -> None:
    session.execute(
        effect_table.insert().values(
            item_id=item.id, attempt=item.attempts, worker_pid=os.getpid(), note=note
        )
    )


def _call_external(url: str, item: OutboxItem) -> None:
    request = urllib.request.Request(  # noqa: S310  (a loopback URL chosen by the test)
        url, data=b"{}", method="POST", headers={"Idempotency-Key": f"outbox-{item.id}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        response.read()


def _first_time(payload: dict[str, Any]) -> bool:
    """True once per marker file: the caller is the attempt that must die."""
    try:
        fd = os.open(str(payload["marker"]), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def _maybe_kill(payload: dict[str, Any], point: str) -> None:
    if payload.get("kill_at") == point and _first_time(payload):
        os.kill(os.getpid(), signal.SIGKILL)


def effect(item: OutboxItem, session: Session) -> Outcome:
    payload = dict(item.payload)
    _maybe_kill(payload, "before_effect")
    _write_effect(item, session)
    session.flush()
    if payload.get("external"):
        _call_external(str(payload["external"]), item)
    _maybe_kill(payload, "after_effect")
    if payload.get("kill_at") == "after_commit" and _first_time(payload):
        session.info[KILL_AFTER_COMMIT] = True
    return Done({"attempt": item.attempts})


@event.listens_for(Session, "after_commit")
def _kill_after_commit(session: Session) -> None:
    if session.info.pop(KILL_AFTER_COMMIT, False):
        os.kill(os.getpid(), signal.SIGKILL)


def retry(item: OutboxItem, session: Session) -> Outcome:
    """Writes, then asks to be retried: the write must not survive."""
    _write_effect(item, session, "retry")
    seconds = item.payload.get("retry_after")
    after = timedelta(seconds=float(seconds)) if isinstance(seconds, int | float) else None
    return RetryLater("the provider is busy", retry_after=after)


def give_up(item: OutboxItem, session: Session) -> Outcome:
    _write_effect(item, session, "give-up")
    return GiveUp("the provider rejected the change: quantity below the minimum")


def boom(item: OutboxItem, session: Session) -> Outcome:
    _write_effect(item, session, "boom")
    session.flush()
    raise RuntimeError("handler crashed")


def steal(item: OutboxItem, session: Session) -> Outcome:
    """Another worker takes the item over (our lease "expired") while this handler runs."""
    with Session(bind=session.get_bind()) as other:
        far = item.lease_expires_at + timedelta(seconds=1) if item.lease_expires_at else None
        taken = claim(other, item.id, "thief", timedelta(minutes=5), now=far)
        assert taken is not None, "the thief could not take the item over"
        other.commit()
    _write_effect(item, session, "stolen")
    return Done()


def steal_quietly(item: OutboxItem, session: Session) -> Outcome:
    """As :func:`steal`, by a handler that itself uses no database (it only calls out)."""
    with Session(bind=session.get_bind()) as other:
        far = item.lease_expires_at + timedelta(seconds=1) if item.lease_expires_at else None
        taken = claim(other, item.id, "thief", timedelta(minutes=5), now=far)
        assert taken is not None, "the thief could not take the item over"
        other.commit()
    return Done({"stolen": True})


def slow(item: OutboxItem, session: Session) -> Outcome:
    """Works longer than its lease (``seconds``), then writes its effect."""
    time.sleep(float(item.payload.get("seconds", 1)))
    _write_effect(item, session, "slow")
    return Done()


def chain(item: OutboxItem, session: Session) -> Outcome:
    """Writes, then enqueues the next link (``remaining`` more) for this worker to run next."""
    _write_effect(item, session, "chain")
    remaining = int(item.payload.get("remaining", 0))
    if remaining <= 0:
        return Done()
    follow_up = enqueue(session, "testkit.chain", {"remaining": remaining - 1})
    return Done({"remaining": remaining}, follow_up=follow_up)


def scope(item: OutboxItem, session: Session) -> Outcome:
    current = get_scope(session)
    seen = None if current is None else [current.partner_id, current.customer_id]
    return Done({"scope": seen})


@hookimpl
def portal_outbox_handlers() -> dict[str, Any]:
    return {
        "testkit.effect": effect,
        "testkit.retry": retry,
        "testkit.give_up": give_up,
        "testkit.boom": boom,
        "testkit.steal": steal,
        "testkit.steal_quietly": steal_quietly,
        "testkit.scope": scope,
        "testkit.chain": chain,
        "testkit.slow": slow,
    }
