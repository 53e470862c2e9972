"""Events fanned out to plugins (``portal_on_*`` hooks). Plain values only: ids, not rows."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LicenceChangeFinished:
    change_id: int
    customer_id: int
    subscription_ref: str
    state: str  # provisioned | rejected | failed
    quantity_from: int
    quantity_to: int
    reason: str | None = None


@dataclass(frozen=True)
class InvoiceIssued:
    invoice_id: int
    customer_id: int
    number: str
    total_minor: int
    currency: str


@dataclass(frozen=True)
class PaymentRecorded:
    payment_id: int
    invoice_id: int
    customer_id: int
    amount_minor: int
    currency: str
