"""The contract of an outbox handler: what it receives and what it returns.

A handler performs one kind of background work (``item.kind``). It is called with the item and
a database session whose transaction also marks the item done: everything the handler writes
commits together with "done", or not at all. Effects outside the database must be idempotent
under the item's id (send it as the idempotency key / request id), because a worker killed after
the effect but before the commit runs the handler again.

The outbox knows kinds, not handlers: :mod:`portal.plugins` hands it each app's handlers, beat
schedule and periodic jobs (:func:`wire`), collected from every plugin, the core's own
(:mod:`portal.default_plugin`) included.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from flask import Flask
    from sqlalchemy.orm import Session

    from portal.outbox.models import OutboxItem


@dataclass(frozen=True)
class Done:
    """The work is finished; ``result`` is kept on the item for the record.

    ``follow_up``: an item the handler enqueued in this transaction that this worker should run
    next itself, rather than send it through the broker (the next step of the same work, such
    as a subscription's next licence change). Should the worker die first, the sweep sends it
    after one lease period, as it does for a lost message.
    """

    result: dict[str, object] | None = None
    follow_up: OutboxItem | None = None


@dataclass(frozen=True)
class RetryLater:
    """A technical failure: try again after backoff (at least ``retry_after`` when given)."""

    reason: str
    retry_after: timedelta | None = None


@dataclass(frozen=True)
class GiveUp:
    """A business rejection or a permanent error: never retried; ``reason`` is kept."""

    reason: str


@dataclass(frozen=True)
class Defer:
    """Not now, and not a failure (a rate budget is spent): run again after ``delay`` without
    counting this as an attempt."""

    delay: timedelta


Outcome = Done | RetryLater | GiveUp | Defer


class OutboxHandler(Protocol):
    def __call__(self, item: OutboxItem, session: Session) -> Outcome: ...


PeriodicJob = Callable[["Flask"], object]
"""A periodic job: called with the app (in its app context) by the worker, on a beat entry."""

_EXTENSION = "portal_outbox_wiring"


@dataclass(frozen=True)
class Wiring:
    """What the plugins contributed to one app's background work."""

    handlers: Mapping[str, OutboxHandler] = field(default_factory=dict)
    beat_schedule: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    periodic_jobs: Mapping[str, PeriodicJob] = field(default_factory=dict)


def wire(app: Flask, wiring: Wiring) -> None:
    """Hand the outbox of ``app`` its handlers, schedule and periodic jobs (read-only)."""
    app.extensions[_EXTENSION] = Wiring(
        handlers=MappingProxyType(dict(wiring.handlers)),
        beat_schedule=MappingProxyType(dict(wiring.beat_schedule)),
        periodic_jobs=MappingProxyType(dict(wiring.periodic_jobs)),
    )


def wiring(app: Flask) -> Wiring:
    found = app.extensions.get(_EXTENSION)
    if found is None:
        raise RuntimeError("the outbox of this app was never wired (portal.plugins.init_app)")
    assert isinstance(found, Wiring)
    return found
