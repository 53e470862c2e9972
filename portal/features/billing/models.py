"""Billing: contracts, invoices and their lines, credit notes, the payment ledger, document
numbering and billing runs (DESIGN §4, Billing and Money; issue 5).

Decisions, and why:

- **Amounts** are integer minor units of the row's currency, in ``BigInteger`` columns: a year
  of a large customer in a 0-decimal currency (JPY) passes 2**31.
- **Rates** (contract discount, tax) are stored as integer parts per million: exact, checkable
  in SQL, fine enough for every tax rate in use (8.875 % is 88 750), and never a float. The
  properties ``discount`` and ``tax_rate`` give them back as ``Decimal`` fractions (0.2 = 20 %),
  the form :mod:`portal.features.billing.rules.invoicing` takes. Quantities and usage unit prices,
  which keep
  more decimals than the currency, are stored as Decimal text (:class:`DecimalText`): SQLite has
  no exact decimal type, and SQLAlchemy's ``Numeric`` goes through float there.
- **One invoice per contract and period** is a database guarantee: ``UNIQUE (billing_contract_id,
  period_start)``. The billing run inserts with ``ON CONFLICT DO NOTHING``; a rerun or a second
  run at the same time inserts nothing new (reliability notes C7; Lago #1988, frappe#170).
- **Numbers** are given at issue, from :class:`InvoiceNumberCounter` (one row per partner and
  document kind) incremented in the issuing transaction, so a rolled-back issue leaves no gap;
  ``UNIQUE (partner_id, number)`` backs it. Credit notes have their own sequence.
- **What is paid is never stored twice**: an invoice's paid amount is Σ payments - Σ refunds of
  :class:`InvoicePayment` (the ledger the payment gateway writes), its credits the totals of its
  issued credit notes, and its status (:class:`InvoiceStatus`) is derived from those and the due
  date when read (``portal.features.billing.services.queries``).
- **Staff review**: :class:`BillingSettings` per partner; review on (the default) makes the run
  leave drafts for staff to issue; off, the run issues at once.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from portal.core.db import Base, UTCDateTime, enum_column, utcnow
from portal.core.scoping import CustomerScoped, PartnerScoped
from portal.features.billing.rules.invoicing import (
    ContractFrequency as ContractFrequency,  # re-exported
)
from portal.features.billing.rules.invoicing import LineKind as LineKind  # re-exported
from portal.features.tenancy.models import Customer

PPM = Decimal(1_000_000)


def rate_to_ppm(rate: Decimal) -> int:
    """A Decimal fraction (0.0875) as parts per million (87 500); refuses what would not fit
    exactly or is outside 0..1, rather than rounding a tax rate."""
    if not isinstance(rate, Decimal):
        raise TypeError("a rate is a Decimal fraction, e.g. Decimal('0.2') for 20 %")
    scaled = rate * PPM
    if scaled != scaled.to_integral_value():
        raise ValueError(f"rate {rate} has more than 6 decimal places")
    if not 0 <= scaled <= PPM:
        raise ValueError(f"rate {rate} is not between 0 and 1")
    return int(scaled)


def ppm_to_rate(ppm: int) -> Decimal:
    return Decimal(ppm) / PPM


class DecimalText(TypeDecorator[Decimal]):
    """An exact Decimal on every engine, stored as its text (``"12.5"``); never a float."""

    impl = String(40)
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if not isinstance(value, Decimal | int):
            raise TypeError(f"DecimalText takes a Decimal, not {type(value).__name__}")
        return str(Decimal(value))

    def process_result_value(self, value: str | None, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(value)


# -- states ---------------------------------------------------------------------------------------


class InvoiceState(StrEnum):
    """The stored life of an invoice. Payment is not a state: see :class:`InvoiceStatus`."""

    DRAFT = "draft"  # made by a run, waiting for staff review; no number, not shown to customers
    ISSUED = "issued"  # numbered, due, shown and emailed to the customer
    VOID = "void"  # cancelled (an issued one by a credit note of its whole amount)


class InvoiceStatus(StrEnum):
    """What the customer is shown; derived when read, never stored.

    ``paid`` when nothing is left to pay (balance <= 0), else ``overdue`` once the due date has
    passed (whether or not part of it was paid), else ``partially_paid`` when some of it was
    paid (a credit note applied lowers the balance but is not a payment), else ``open``.
    """

    DRAFT = "draft"
    OPEN = "open"
    PARTIALLY_PAID = "partially_paid"
    PAID = "paid"
    OVERDUE = "overdue"
    VOID = "void"


class CreditNoteKind(StrEnum):
    REDUCTION = "reduction"  # prorated credits for reductions inside their window
    VOID = "void"  # cancels the whole invoice it is applied to


class CreditNoteState(StrEnum):
    DRAFT = "draft"  # belongs to a draft invoice; issued with it
    ISSUED = "issued"


class PaymentKind(StrEnum):
    PAYMENT = "payment"
    REFUND = "refund"


class DocumentKind(StrEnum):
    """A numbering sequence of its own per partner."""

    INVOICE = "invoice"
    CREDIT_NOTE = "credit_note"


class BillingRunState(StrEnum):
    QUEUED = "queued"  # asked for (the staff button); a worker will start it
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


# -- tables ---------------------------------------------------------------------------------------


class BillingSettings(PartnerScoped, Base):
    """A partner's billing settings; a partner without a row has the defaults (review on)."""

    __tablename__ = "billing_settings"

    id: Mapped[int] = mapped_column(primary_key=True)
    # staff review each run's invoices before they are issued (off: issued by the run)
    invoice_review: Mapped[bool] = mapped_column(Boolean, default=True)
    invoice_prefix: Mapped[str] = mapped_column(String(16), default="INV-")
    credit_note_prefix: Mapped[str] = mapped_column(String(16), default="CN-")
    # automatic credit hold, for customers with no setting of their own (None: off): an invoice
    # overdue more than this many days; an overdue balance above this amount, in the partner's
    # default currency (customers in another currency need their own credit limit)
    hold_grace_days: Mapped[int | None] = mapped_column(Integer)
    hold_limit_minor: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(300))

    __table_args__ = (UniqueConstraint("partner_id"),)


class BillingContract(PartnerScoped, CustomerScoped, Base):
    """How a group of a customer's subscriptions is invoiced: currency, how often, when, terms.

    Periods are anniversaries of ``anchor_on`` (its day of the month is the anchor day; a
    contract anchored on the 31st bills from the last day of shorter months), ``frequency``
    months long, computed from the anchor every time (``portal.core.proration``).
    """

    __tablename__ = "billing_contract"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    currency: Mapped[str] = mapped_column(String(3))
    frequency: Mapped[ContractFrequency] = mapped_column(
        enum_column(ContractFrequency, "contract_frequency")
    )
    anchor_on: Mapped[date] = mapped_column(Date)  # the start of the first period
    payment_terms_days: Mapped[int] = mapped_column(Integer, default=30)
    discount_ppm: Mapped[int] = mapped_column(Integer, default=0)
    # the upfront discount of subscriptions billed a year (or three) in advance; never applied
    # to seats added during the term (DESIGN §4)
    prepaid_discount_ppm: Mapped[int] = mapped_column(Integer, default=0)
    tax_rate_ppm: Mapped[int] = mapped_column(Integer, default=0)
    # a tax plugin's key: when set, the plugin computes the tax (none is loaded yet)
    tax_plugin_key: Mapped[str | None] = mapped_column(String(63))
    # charge the customer's saved payment method when an invoice is issued (issue 6)
    autocharge: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # the contract a purchase in its currency lands on: one per customer and currency
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    customer: Mapped[Customer] = relationship()

    __table_args__ = (
        UniqueConstraint("customer_id", "name"),
        Index(
            "uq_billing_contract_default",
            "customer_id",
            "currency",
            unique=True,
            postgresql_where=text("is_default"),
            sqlite_where=text("is_default"),
        ),
        CheckConstraint("length(currency) = 3", name="currency_code"),
        CheckConstraint("payment_terms_days >= 0", name="payment_terms_non_negative"),
        CheckConstraint("discount_ppm >= 0 AND discount_ppm <= 1000000", name="discount_range"),
        CheckConstraint("tax_rate_ppm >= 0 AND tax_rate_ppm <= 1000000", name="tax_rate_range"),
        CheckConstraint(
            "prepaid_discount_ppm >= 0 AND prepaid_discount_ppm <= 1000000",
            name="prepaid_discount_range",
        ),
    )

    @property
    def discount(self) -> Decimal:
        return ppm_to_rate(self.discount_ppm)

    @property
    def tax_rate(self) -> Decimal:
        return ppm_to_rate(self.tax_rate_ppm)

    @property
    def prepaid_discount(self) -> Decimal:
        return ppm_to_rate(self.prepaid_discount_ppm)


class BillingRun(PartnerScoped, Base):
    """One billing run of one partner for one date, with its progress and results."""

    __tablename__ = "billing_run"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_on: Mapped[date] = mapped_column(Date)  # periods starting on this day (partner's zone)
    state: Mapped[BillingRunState] = mapped_column(
        enum_column(BillingRunState, "billing_run_state")
    )
    started_by: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    contracts_total: Mapped[int] = mapped_column(Integer, default=0)
    contracts_done: Mapped[int] = mapped_column(Integer, default=0)
    invoices_created: Mapped[int] = mapped_column(Integer, default=0)
    credit_notes_created: Mapped[int] = mapped_column(Integer, default=0)
    lines_created: Mapped[int] = mapped_column(Integer, default=0)
    # contracts already invoiced for the period (a rerun, or another run got there first)
    contracts_skipped: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_billing_run_partner_id_created_at", "partner_id", "created_at"),)


class Invoice(PartnerScoped, CustomerScoped, Base):
    """One contract's invoice for one period: ``[period_start, period_end)``, the end exclusive
    (the first day of the next period), as :class:`portal.core.proration.Period`."""

    __tablename__ = "invoice"

    id: Mapped[int] = mapped_column(primary_key=True)
    billing_contract_id: Mapped[int] = mapped_column(
        ForeignKey("billing_contract.id", ondelete="RESTRICT")
    )
    billing_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("billing_run.id", ondelete="SET NULL"), index=True
    )
    number: Mapped[str | None] = mapped_column(String(40))
    state: Mapped[InvoiceState] = mapped_column(enum_column(InvoiceState, "invoice_state"))
    period_start: Mapped[date] = mapped_column(Date)
    period_end: Mapped[date] = mapped_column(Date)
    currency: Mapped[str] = mapped_column(String(3))
    subtotal_minor: Mapped[int] = mapped_column(BigInteger)
    tax_minor: Mapped[int] = mapped_column(BigInteger)
    total_minor: Mapped[int] = mapped_column(BigInteger)
    tax_rate_ppm: Mapped[int] = mapped_column(Integer, default=0)
    issued_on: Mapped[date | None] = mapped_column(Date)
    due_on: Mapped[date | None] = mapped_column(Date)
    issued_by: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    voided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    voided_by: Mapped[str | None] = mapped_column(String(300))
    void_reason: Mapped[str | None] = mapped_column(Text)
    # set on the invoice made at once for a purchase (its first periods, in advance; DESIGN
    # §4): one such invoice per purchase, beside the contract's invoice for the period
    purchase_change_id: Mapped[int | None] = mapped_column(
        ForeignKey("licence_change.id", ondelete="RESTRICT")
    )

    contract: Mapped[BillingContract] = relationship()
    customer: Mapped[Customer] = relationship()
    lines: Mapped[list[InvoiceLine]] = relationship(
        order_by="InvoiceLine.position", cascade="all, delete-orphan", passive_deletes=True
    )

    __table_args__ = (
        # THE idempotency guarantee of billing runs (C7): one run invoice per contract and
        # period; a purchase's own invoices are one per purchase
        Index(
            "uq_invoice_billing_contract_id_period_start",
            "billing_contract_id",
            "period_start",
            unique=True,
            postgresql_where=text("purchase_change_id IS NULL"),
            sqlite_where=text("purchase_change_id IS NULL"),
        ),
        Index("uq_invoice_purchase_change_id", "purchase_change_id", unique=True),
        UniqueConstraint("partner_id", "number"),
        CheckConstraint("total_minor = subtotal_minor + tax_minor", name="total_adds_up"),
        CheckConstraint("period_end > period_start", name="period_not_empty"),
        CheckConstraint(
            "state <> 'issued' OR (number IS NOT NULL AND issued_on IS NOT NULL "
            "AND due_on IS NOT NULL)",
            name="issued_is_numbered",
        ),
        # the portal's list (newest first) and the staff list across customers
        Index("ix_invoice_customer_id_issued_on", "customer_id", "issued_on", "id"),
        Index("ix_invoice_partner_id_issued_on", "partner_id", "issued_on", "id"),
        # open and overdue invoices (dashboard, reminders)
        Index("ix_invoice_partner_id_state_due_on", "partner_id", "state", "due_on"),
    )

    @property
    def tax_rate(self) -> Decimal:
        return ppm_to_rate(self.tax_rate_ppm)


class InvoiceLine(PartnerScoped, CustomerScoped, Base):
    """One printed line: ``amount_minor`` is the rounded amount the invoice adds up.

    Prorated lines (additions) carry ``days`` of ``total_days`` ("12/30 days"). ``quantity`` and
    ``unit_price`` (major units, more decimals for usage) are what is printed beside the amount.
    """

    __tablename__ = "invoice_line"

    # the line's tenant is its invoice's, repeated for the scoping layer only: no foreign key
    # or index of its own (lines are read through their document, and the two checks per line
    # would double the cost of a billing run's writes)
    partner_id: Mapped[int] = mapped_column(Integer)
    customer_id: Mapped[int] = mapped_column(Integer)
    id: Mapped[int] = mapped_column(primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoice.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[LineKind] = mapped_column(enum_column(LineKind, "line_kind"))
    subscription_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscription.id", ondelete="SET NULL"), index=True
    )
    description: Mapped[str] = mapped_column(String(500))
    period_start: Mapped[date] = mapped_column(Date)
    period_end: Mapped[date] = mapped_column(Date)  # exclusive
    quantity: Mapped[Decimal] = mapped_column(DecimalText)
    unit_price_minor: Mapped[int | None] = mapped_column(BigInteger)
    unit_price: Mapped[Decimal] = mapped_column(DecimalText)
    days: Mapped[int | None] = mapped_column(Integer)
    total_days: Mapped[int | None] = mapped_column(Integer)
    amount_minor: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (UniqueConstraint("invoice_id", "position"),)


class CreditNote(PartnerScoped, CustomerScoped, Base):
    """A credit applied to ``invoice_id``: prorated credits for in-window reductions (made with
    the invoice, issued with it), or the cancellation of a voided invoice. At most one of each
    kind per invoice, by constraint: voiding twice cannot credit twice."""

    __tablename__ = "credit_note"

    id: Mapped[int] = mapped_column(primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoice.id", ondelete="RESTRICT"))
    kind: Mapped[CreditNoteKind] = mapped_column(enum_column(CreditNoteKind, "credit_note_kind"))
    state: Mapped[CreditNoteState] = mapped_column(
        enum_column(CreditNoteState, "credit_note_state")
    )
    number: Mapped[str | None] = mapped_column(String(40))
    reason: Mapped[str] = mapped_column(Text, default="")
    currency: Mapped[str] = mapped_column(String(3))
    subtotal_minor: Mapped[int] = mapped_column(BigInteger)
    tax_minor: Mapped[int] = mapped_column(BigInteger)
    total_minor: Mapped[int] = mapped_column(BigInteger)
    issued_on: Mapped[date | None] = mapped_column(Date)
    created_by: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    invoice: Mapped[Invoice] = relationship()
    lines: Mapped[list[CreditNoteLine]] = relationship(
        order_by="CreditNoteLine.position", cascade="all, delete-orphan", passive_deletes=True
    )

    __table_args__ = (
        UniqueConstraint("invoice_id", "kind"),
        UniqueConstraint("partner_id", "number"),
        CheckConstraint("total_minor = subtotal_minor + tax_minor", name="total_adds_up"),
        CheckConstraint(
            "state <> 'issued' OR (number IS NOT NULL AND issued_on IS NOT NULL)",
            name="issued_is_numbered",
        ),
    )


class CreditNoteLine(PartnerScoped, CustomerScoped, Base):
    """A credit note's printed line (positive amounts: what is credited)."""

    __tablename__ = "credit_note_line"

    # the line's tenant is its credit note's, repeated for the scoping layer only: no foreign key
    # or index of its own (lines are read through their document, and the two checks per line
    # would double the cost of a billing run's writes)
    partner_id: Mapped[int] = mapped_column(Integer)
    customer_id: Mapped[int] = mapped_column(Integer)
    id: Mapped[int] = mapped_column(primary_key=True)
    credit_note_id: Mapped[int] = mapped_column(ForeignKey("credit_note.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[LineKind] = mapped_column(enum_column(LineKind, "line_kind"))
    subscription_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscription.id", ondelete="SET NULL")
    )
    description: Mapped[str] = mapped_column(String(500))
    period_start: Mapped[date] = mapped_column(Date)
    period_end: Mapped[date] = mapped_column(Date)  # exclusive
    quantity: Mapped[Decimal] = mapped_column(DecimalText)
    unit_price_minor: Mapped[int | None] = mapped_column(BigInteger)
    unit_price: Mapped[Decimal] = mapped_column(DecimalText)
    days: Mapped[int | None] = mapped_column(Integer)
    total_days: Mapped[int | None] = mapped_column(Integer)
    amount_minor: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (UniqueConstraint("credit_note_id", "position"),)


class InvoicePayment(PartnerScoped, CustomerScoped, Base):
    """The payment ledger: money received for (or refunded from) an invoice, once per gateway
    transaction (``UNIQUE (gateway_key, gateway_reference)``: a webhook delivered twice records
    one payment). Rows are never updated; a refund is a row of its own."""

    __tablename__ = "invoice_payment"

    id: Mapped[int] = mapped_column(primary_key=True)
    invoice_id: Mapped[int] = mapped_column(
        ForeignKey("invoice.id", ondelete="RESTRICT"), index=True
    )
    kind: Mapped[PaymentKind] = mapped_column(enum_column(PaymentKind, "payment_kind"))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    gateway_key: Mapped[str] = mapped_column(String(63))
    gateway_reference: Mapped[str] = mapped_column(String(255))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    recorded_by: Mapped[str] = mapped_column(String(300))

    __table_args__ = (
        UniqueConstraint("gateway_key", "gateway_reference"),
        CheckConstraint("amount_minor > 0", name="amount_positive"),
    )


class InvoiceNumberCounter(Base):
    """The last number given to a partner's documents of one kind.

    Incremented (``UPDATE … RETURNING``, which holds the row lock) in the transaction that issues
    the documents: a failed issue rolls the increment back with it, so numbers have no gaps, and
    concurrent issuers wait for each other here. Not tenant-scoped: only the services touch it.
    """

    __tablename__ = "invoice_number_counter"

    partner_id: Mapped[int] = mapped_column(
        ForeignKey("partner.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[DocumentKind] = mapped_column(
        enum_column(DocumentKind, "document_kind"), primary_key=True
    )
    last_number: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (CheckConstraint("last_number >= 0", name="last_number_non_negative"),)
