"""Events to plugins through the outbox: once, after commit, one item per subscribing plugin.

:func:`publish` is called by a service in the transaction that makes the event true (the
invoice issued, the payment in the ledger, the licence change finished). It adds one outbox
item per plugin that implements the event's hook, so the event exists if and only if that
transaction commits, and each plugin's delivery is retried on its own: a plugin that fails is
tried again later with backoff, and never makes another plugin hear the event twice.

:func:`deliver` is that item's handler. The plugin's implementation is called with the event
and, when it declares them, ``session`` (the worker's transaction, which also marks the
delivery done: a plugin's bookkeeping and the follow-up work it enqueues there commit with it,
or not at all) and ``delivery_id`` (stable across retries: the idempotency key for the plugin's
own calls out). It may return an outcome of :mod:`portal.outbox.handlers` (``RetryLater``
after a rate limit, ``GiveUp`` for an error retrying cannot fix); it returns nothing when done.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final, cast

from cattrs.errors import ClassValidationError

from portal.integrations.events import EVENT_TYPES, HOOKS, Event, from_payload, to_payload
from portal.integrations.registry import PluginNotLoaded, integrations
from portal.outbox.handlers import Defer, Done, GiveUp, Outcome, RetryLater
from portal.outbox.items import enqueue_row

if TYPE_CHECKING:
    from flask import Flask
    from sqlalchemy.orm import Session

    from portal.outbox.models import OutboxItem

log = logging.getLogger(__name__)

DELIVER_KIND: Final = "plugins.deliver"
# with the outbox's backoff (2 s doubling, capped at an hour, jittered) most of a day of tries
# before the delivery is marked failed where staff see it
MAX_ATTEMPTS: Final = 30


def publish(
    session: Session,
    event: Event,
    *,
    partner_id: int,
    customer_id: int | None,
    app: Flask | None = None,
) -> list[int]:
    """Queue ``event`` for every plugin that subscribes to it, in the caller's transaction;
    returns the deliveries' ids.

    Costs nothing when no plugin subscribes; the event is taken now, as this transaction
    sees it, and delivered as it was.
    """
    hook = HOOKS[type(event)]
    plugins = integrations(app).subscribers(hook)
    if not plugins:
        return []
    payload = to_payload(event)
    return [
        enqueue_row(
            session,
            DELIVER_KIND,
            {"hook": hook, "plugin": plugin, "event": payload},
            partner_id=partner_id,
            customer_id=customer_id,
            max_attempts=MAX_ATTEMPTS,
            app=app,
        )
        for plugin in plugins
    ]


def subscribed(hook: str, app: Flask | None = None) -> bool:
    """Whether any plugin listens to ``hook``: a service skips building an event nobody hears."""
    return bool(integrations(app).subscribers(hook))


def deliver(item: OutboxItem, session: Session) -> Outcome:
    """Outbox handler for ``plugins.deliver``: the event to one plugin."""
    hook = str(item.payload.get("hook", ""))
    plugin = str(item.payload.get("plugin", ""))
    kind = EVENT_TYPES.get(hook)
    if kind is None:
        return GiveUp(f"no event is delivered through {hook!r}")
    try:
        event = from_payload(kind, cast(dict[str, Any], item.payload["event"]))
    except (ClassValidationError, KeyError, TypeError, ValueError) as unreadable:
        return GiveUp(f"the stored event cannot be read as {kind.__name__}: {unreadable}")
    try:
        answer = integrations().call_one(
            plugin, hook, event=event, session=session, delivery_id=item.id
        )
    except PluginNotLoaded as missing:
        # a plugin taken out of PORTAL_PLUGINS, or a worker not yet restarted with it: retried,
        # then failed where staff see it, never dropped silently
        return RetryLater(str(missing))
    except Exception as error:
        log.exception(
            "plugin %s failed in %s (delivery %s); it will be retried", plugin, hook, item.id
        )
        return RetryLater(f"plugin {plugin} failed in {hook}: {type(error).__name__}: {error}")
    if isinstance(answer, Done | RetryLater | GiveUp | Defer):
        return answer
    return Done({"plugin": plugin})
