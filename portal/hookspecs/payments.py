"""Payment gateways: Stripe, the demo gateway."""

from __future__ import annotations

from typing import TYPE_CHECKING

from portal.hookspecs import hookspec

if TYPE_CHECKING:
    from flask import Flask
    from sqlalchemy.orm import Session

    from portal.integrations.events import PaymentRecorded
    from portal.integrations.payments import PaymentGateway
    from portal.outbox.handlers import Outcome


@hookspec
def portal_register_payment_gateways(app: Flask) -> list[PaymentGateway] | None:
    """Payment gateways this plugin offers.

    :param app: the Flask app being built (for the plugin's settings).
    :returns: objects implementing :class:`portal.integrations.payments.PaymentGateway`, each
        with a unique ``key``; those that also implement
        :class:`portal.integrations.payments.SavedCardGateway` offer saved cards and autopay.
    Calling rule: all results are collected; a duplicate key fails at start-up.
    """


@hookspec
def portal_on_payment_recorded(
    event: PaymentRecorded, session: Session, delivery_id: int
) -> Outcome | None:
    """The gateway confirmed money for an invoice, or its refund, and the ledger recorded it
    (once per gateway transaction).

    :param event: :class:`portal.integrations.events.PaymentRecorded`: payment or refund, the
        amount, the invoice it is for, the partner, the customer and the gateway's reference.
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
