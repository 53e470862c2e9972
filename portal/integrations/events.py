"""Events delivered to plugins (``portal_on_*`` hooks): what happened, as committed.

Each event is a frozen dataclass of plain values that carries what a subscriber needs without
reading the portal's tables: the ids, the partner, the customer (its name and Microsoft tenant),
the document's number, dates, currency, lines and totals. Money is in integer minor units of
``currency``; quantities and unit prices are :class:`~decimal.Decimal`; dates are the partner's
calendar days; a line's ``period_end`` is exclusive.

An event is taken when the change that causes it commits and travels in an outbox item, one per
subscribing plugin (:mod:`portal.integrations.delivery`), so it is stored as JSON:
:func:`to_payload` and :func:`from_payload` convert, and every type here must survive them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TypeVar

from cattrs.preconf.json import make_converter

# -- who and what an event is about ------------------------------------------------------------


@dataclass(frozen=True)
class PartnerRef:
    """The CSP partner whose portal it happened in."""

    id: int
    slug: str
    name: str


@dataclass(frozen=True)
class CustomerRef:
    """The partner's customer; ``tenant_id`` is its Microsoft Entra tenant, once known."""

    id: int
    name: str
    tenant_id: str | None


@dataclass(frozen=True)
class ProductRef:
    """A catalogue product, with the provider's offer id it is bought under."""

    id: int
    name: str
    offer_id: str


@dataclass(frozen=True)
class DocumentLine:
    """One line of an invoice or credit note, in the document's order (``position`` from 1).

    ``kind`` is ``advance`` (seats for the period, billed in advance), ``addition`` (seats added
    during the previous period, prorated), ``reduction_credit`` (seats removed, a prorated
    credit), ``usage`` (consumption, in arrears) or ``discount`` (negative);
    ``subscription_id`` names the subscription it bills, when it bills one. ``unit_price`` is
    in major units; ``amount_minor`` is before tax, negative only on a ``discount`` line (a
    credit note's lines are the amounts it credits, positive).
    """

    position: int
    kind: str
    description: str
    period_start: date
    period_end: date
    quantity: Decimal
    unit_price: Decimal
    amount_minor: int
    subscription_id: int | None


# -- the events --------------------------------------------------------------------------------


@dataclass(frozen=True)
class InvoiceIssued:
    """An invoice was numbered and issued to the customer (staff after review, or a billing
    run); it never changes afterwards. A void later comes as a :class:`CreditNoteIssued`."""

    invoice_id: int
    number: str
    partner: PartnerRef
    customer: CustomerRef
    issued_on: date
    due_on: date
    period_start: date
    period_end: date
    currency: str
    lines: tuple[DocumentLine, ...]
    subtotal_minor: int
    tax_minor: int
    total_minor: int


@dataclass(frozen=True)
class CreditNoteIssued:
    """A credit note was issued against an invoice: ``kind`` ``void`` cancels the whole invoice
    (``reason`` says why), ``reduction`` credits seats removed from a period already billed
    (issued with the next invoice). Amounts are positive: what is credited."""

    credit_note_id: int
    number: str
    kind: str
    reason: str
    invoice_id: int
    invoice_number: str
    partner: PartnerRef
    customer: CustomerRef
    issued_on: date
    currency: str
    lines: tuple[DocumentLine, ...]
    subtotal_minor: int
    tax_minor: int
    total_minor: int


@dataclass(frozen=True)
class PaymentRecorded:
    """Money the gateway confirmed was added to the ledger, once per gateway transaction:
    ``kind`` ``payment`` (received for the invoice) or ``refund`` (given back from it)."""

    payment_id: int
    kind: str
    invoice_id: int
    invoice_number: str
    partner: PartnerRef
    customer: CustomerRef
    amount_minor: int
    currency: str
    gateway_key: str
    gateway_reference: str
    received_at: datetime


@dataclass(frozen=True)
class LicenceChangeFinished:
    """A licence change reached its end: ``state`` ``provisioned`` (the provider did it),
    ``rejected`` (the provider refused, or staff closed it as not applied; ``reason`` says
    why) or ``failed`` (given up; staff may resolve it later, which comes as another event)."""

    change_id: int
    subscription_id: int
    subscription_ref: str
    partner: PartnerRef
    customer: CustomerRef
    product: ProductRef
    state: str
    quantity_from: int
    quantity_to: int
    reason: str | None
    finished_at: datetime | None


Event = InvoiceIssued | CreditNoteIssued | PaymentRecorded | LicenceChangeFinished
T = TypeVar("T")

# the hook each event is delivered through
HOOKS: dict[type[Any], str] = {
    InvoiceIssued: "portal_on_invoice_issued",
    CreditNoteIssued: "portal_on_credit_note_issued",
    PaymentRecorded: "portal_on_payment_recorded",
    LicenceChangeFinished: "portal_on_licence_change_finished",
}
EVENT_TYPES: dict[str, type[Any]] = {hook: kind for kind, hook in HOOKS.items()}

_converter = make_converter()
# Decimal as its exact string: JSON numbers would go through float
_converter.register_unstructure_hook(Decimal, str)
_converter.register_structure_hook(Decimal, lambda value, _: Decimal(str(value)))


def to_payload(event: object) -> dict[str, Any]:
    """An event (or any dataclass of this module) as JSON-ready values: the outbox item's
    payload."""
    payload = _converter.unstructure(event)
    assert isinstance(payload, dict)
    return payload


def from_payload(kind: type[T], payload: dict[str, Any]) -> T:
    """The value of type ``kind`` that :func:`to_payload` gave ``payload`` for."""
    return _converter.structure(payload, kind)
