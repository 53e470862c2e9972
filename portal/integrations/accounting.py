"""Accounting systems: the Protocol and what it exchanges. Amounts are integer minor units."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Protocol, runtime_checkable

from portal.integrations.results import Result


@dataclass(frozen=True)
class AccountingLine:
    description: str
    quantity: int
    amount_minor: int
    tax_minor: int


@dataclass(frozen=True)
class AccountingInvoice:
    invoice_ref: str
    number: str
    customer_name: str
    currency: str
    issued_on: date
    due_on: date
    lines: tuple[AccountingLine, ...]
    total_minor: int


@dataclass(frozen=True)
class AccountingPayment:
    payment_ref: str
    invoice_ref: str
    amount_minor: int
    currency: str
    received_on: date


@runtime_checkable
class AccountingSystem(Protocol):
    key: str
    display_name: str

    def push_invoice(self, invoice: AccountingInvoice, idempotency_key: str) -> Result[str]:
        """Create the invoice once (by ``idempotency_key``); return the system's id for it."""
        ...

    def push_payment(self, payment: AccountingPayment, idempotency_key: str) -> Result[str]:
        """Record the payment once; return the system's id for it."""
        ...
