"""Accounting systems: QuickBooks Online, Xero, Business Central."""

from __future__ import annotations

from typing import TYPE_CHECKING

from portal.hookspecs import hookspec

if TYPE_CHECKING:
    from flask import Flask
    from sqlalchemy.orm import Session

    from portal.integrations.accounting import AccountingSystem
    from portal.integrations.events import CreditNoteIssued, InvoiceIssued
    from portal.outbox.handlers import Outcome


@hookspec
def portal_register_accounting_systems(app: Flask) -> list[AccountingSystem] | None:
    """Accounting systems this plugin offers.

    :param app: the Flask app being built (for the plugin's settings).
    :returns: objects implementing :class:`portal.integrations.accounting.AccountingSystem`,
        each with a unique ``key``.
    Calling rule: all results are collected; a duplicate key fails at start-up.
    """


@hookspec
def portal_on_invoice_issued(
    event: InvoiceIssued, session: Session, delivery_id: int
) -> Outcome | None:
    """An invoice was issued to a customer (it never changes afterwards).

    :param event: :class:`portal.integrations.events.InvoiceIssued`: its number, dates,
        partner, customer, currency, lines and totals.
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


@hookspec
def portal_on_credit_note_issued(
    event: CreditNoteIssued, session: Session, delivery_id: int
) -> Outcome | None:
    """A credit note was issued: an invoice voided, or seats removed from a period billed.

    :param event: :class:`portal.integrations.events.CreditNoteIssued`: its number, kind,
        reason, the invoice it credits, the partner, customer, currency, lines and totals.
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
