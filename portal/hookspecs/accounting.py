"""Accounting systems: QuickBooks Online, Xero, Business Central."""

from __future__ import annotations

from typing import TYPE_CHECKING

from portal.hookspecs import hookspec

if TYPE_CHECKING:
    from flask import Flask

    from portal.integrations.accounting import AccountingSystem
    from portal.integrations.events import InvoiceIssued


@hookspec
def portal_register_accounting_systems(app: Flask) -> list[AccountingSystem] | None:
    """Accounting systems this plugin offers.

    :param app: the Flask app being built (for the plugin's settings).
    :returns: objects implementing :class:`portal.integrations.accounting.AccountingSystem`,
        each with a unique ``key``.
    Calling rule: all results are collected; a duplicate key fails at start-up.
    """


@hookspec
def portal_on_invoice_issued(event: InvoiceIssued) -> None:
    """An invoice was issued to a customer.

    :param event: the invoice's number, customer, total and currency.
    :returns: nothing.
    Calling rule: every implementation is called; one that raises is logged and skipped.
    """
