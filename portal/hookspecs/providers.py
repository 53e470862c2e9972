"""Licence providers: Microsoft Partner Center, distributors, the demo provider."""

from __future__ import annotations

from typing import TYPE_CHECKING

from portal.hookspecs import hookspec

if TYPE_CHECKING:
    from flask import Flask
    from sqlalchemy.orm import Session

    from portal.integrations.events import LicenceChangeFinished
    from portal.integrations.providers import ProviderAdapter
    from portal.outbox.handlers import Outcome


@hookspec
def portal_register_providers(app: Flask) -> list[ProviderAdapter] | None:
    """Provider adapters this plugin offers.

    :param app: the Flask app being built (for the plugin's settings).
    :returns: objects implementing :class:`portal.integrations.providers.ProviderAdapter`, each
        with a unique ``key``; configuration picks which one serves a partner or customer.
    Calling rule: all results are collected; a duplicate key fails at start-up.
    """


@hookspec
def portal_on_licence_change_finished(
    event: LicenceChangeFinished, session: Session, delivery_id: int
) -> Outcome | None:
    """A licence change reached a final state (provisioned, rejected or failed).

    A failed change that staff then resolve is announced again, with its final state.

    :param event: :class:`portal.integrations.events.LicenceChangeFinished`: what changed, for
        which partner, customer and product, and how it ended.
    :param session: the delivery's database transaction (optional).
    :param delivery_id: the delivery's id, the same on every retry (optional).
    :returns: nothing, or an outbox outcome.
    Calling rule: queued once per plugin when the change commits, and run by a background
        worker (an outbox item of its own, ``plugins.deliver``) until it succeeds: one that
        raises is retried later with backoff, alone; it may return ``RetryLater`` or
        ``GiveUp`` (:mod:`portal.outbox.handlers`). Declare ``session`` to write in the
        transaction that marks the delivery done (your bookkeeping, and follow-up work you
        ``enqueue`` there: exactly once; never commit it yourself), ``delivery_id`` for the
        idempotency key of calls out, which may repeat (a worker can die after a call).
    """
