"""What the invoice pages read: lists with derived status and balance, one invoice in full,
the dashboard's open balance, billing runs, and the deferred revenue report.

Every function takes the caller's session: a request's session is tenant-scoped
(:mod:`portal.core.scoping`), so a customer's page sees that customer's documents only and a staff
page its partner's, without a filter written here. Drafts are for staff: customer-facing calls
leave ``include_drafts`` False.

Paid, credited, balance and status are never stored (``portal.features.billing.models``): they are
computed in SQL from the payment ledger and the issued credit notes, per invoice, with
correlated subqueries that use the ``invoice_id`` indexes, so a page costs the same however
long the customer's history is, and filters on status run in the database.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from dateutil.relativedelta import relativedelta
from sqlalchemy import ColumnElement, Integer, Select, bindparam, case, func, literal, select
from sqlalchemy.orm import Session, selectinload

from portal.core.proration import Period
from portal.features.billing.models import (
    BillingContract,
    BillingRun,
    CreditNote,
    CreditNoteLine,
    CreditNoteState,
    Invoice,
    InvoiceLine,
    InvoicePayment,
    InvoiceState,
    InvoiceStatus,
    PaymentKind,
)
from portal.features.billing.rules.invoicing import ContractFrequency
from portal.features.billing.rules.revenue import deferred_revenue
from portal.features.tenancy.models import Customer

MAX_PER_PAGE = 200


# -- derived amounts, in SQL ------------------------------------------------------------------


def _credited() -> ColumnElement[int]:
    return (
        select(func.coalesce(func.sum(CreditNote.total_minor), 0))
        .where(CreditNote.invoice_id == Invoice.id, CreditNote.state == CreditNoteState.ISSUED)
        .correlate(Invoice)
        .scalar_subquery()
    )


def _paid() -> ColumnElement[int]:
    signed = case(
        (InvoicePayment.kind == PaymentKind.REFUND, -InvoicePayment.amount_minor),
        else_=InvoicePayment.amount_minor,
    )
    return (
        select(func.coalesce(func.sum(signed), 0))
        .where(InvoicePayment.invoice_id == Invoice.id)
        .correlate(Invoice)
        .scalar_subquery()
    )


def _status(
    credited: ColumnElement[int], paid: ColumnElement[int], today: date
) -> ColumnElement[str]:
    """:func:`invoice_status` as SQL, so lists can filter and count by status."""
    balance = Invoice.total_minor - credited - paid
    return case(
        (Invoice.state == InvoiceState.DRAFT, literal(InvoiceStatus.DRAFT.value)),
        (Invoice.state == InvoiceState.VOID, literal(InvoiceStatus.VOID.value)),
        (balance <= 0, literal(InvoiceStatus.PAID.value)),
        (Invoice.due_on < today, literal(InvoiceStatus.OVERDUE.value)),
        (paid > 0, literal(InvoiceStatus.PARTIALLY_PAID.value)),
        else_=literal(InvoiceStatus.OPEN.value),
    )


def invoice_status(
    state: InvoiceState,
    total_minor: int,
    credited_minor: int,
    paid_minor: int,
    due_on: date | None,
    today: date,
) -> InvoiceStatus:
    """What the customer is shown (see :class:`~portal.features.billing.models.InvoiceStatus`)."""
    if state is InvoiceState.DRAFT:
        return InvoiceStatus.DRAFT
    if state is InvoiceState.VOID:
        return InvoiceStatus.VOID
    if total_minor - credited_minor - paid_minor <= 0:
        return InvoiceStatus.PAID
    if due_on is not None and due_on < today:
        return InvoiceStatus.OVERDUE
    if paid_minor > 0:
        return InvoiceStatus.PARTIALLY_PAID
    return InvoiceStatus.OPEN


# -- lists ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InvoiceRow:
    """An invoice as a list shows it."""

    invoice: Invoice
    customer_name: str
    credited_minor: int
    paid_minor: int
    status: InvoiceStatus

    @property
    def balance_minor(self) -> int:
        return self.invoice.total_minor - self.credited_minor - self.paid_minor


@dataclass(frozen=True)
class InvoicePage:
    rows: list[InvoiceRow]
    page: int
    per_page: int
    total: int  # invoices matching the filters, on every page

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def has_next(self) -> bool:
        return self.page < self.pages

    @property
    def has_previous(self) -> bool:
        return self.page > 1


def list_invoices(
    db_session: Session,
    *,
    today: date,
    customer_id: int | None = None,
    statuses: Collection[InvoiceStatus] = (),
    issued_from: date | None = None,
    issued_to: date | None = None,
    number: str | None = None,
    billing_run_id: int | None = None,
    include_drafts: bool = False,
    page: int = 1,
    per_page: int = 25,
) -> InvoicePage:
    """Invoices newest first (drafts first for staff), filtered, one page at a time.

    ``statuses`` filters on the derived status; ``issued_from``/``issued_to`` on the issue date
    (inclusive); ``number`` is a case-insensitive part of the number. ``today`` (the partner's
    date) decides what is overdue.
    """
    page = max(1, page)
    per_page = min(max(1, per_page), MAX_PER_PAGE)
    credited, paid = _credited(), _paid()
    status = _status(credited, paid, today)
    conditions: list[ColumnElement[bool]] = []
    if not include_drafts:
        conditions.append(Invoice.state != InvoiceState.DRAFT)
    if customer_id is not None:
        conditions.append(Invoice.customer_id == customer_id)
    if statuses:
        conditions.append(status.in_([InvoiceStatus(s).value for s in statuses]))
    if issued_from is not None:
        conditions.append(Invoice.issued_on >= issued_from)
    if issued_to is not None:
        conditions.append(Invoice.issued_on <= issued_to)
    if number:
        conditions.append(func.lower(Invoice.number).contains(number.strip().lower()))
    if billing_run_id is not None:
        conditions.append(Invoice.billing_run_id == billing_run_id)
    total = db_session.scalar(select(func.count(Invoice.id)).where(*conditions)) or 0
    statement = (
        select(Invoice, Customer.name, credited, paid, status)
        .join(Customer, Customer.id == Invoice.customer_id)
        .where(*conditions)
        .order_by(
            (Invoice.state == InvoiceState.DRAFT).desc(),
            Invoice.issued_on.desc(),
            Invoice.id.desc(),
        )
        .limit(per_page)
        .offset((page - 1) * per_page)
    )
    rows = [
        InvoiceRow(invoice, name, int(credit), int(pay), InvoiceStatus(state))
        for invoice, name, credit, pay, state in db_session.execute(statement)
    ]
    return InvoicePage(rows=rows, page=page, per_page=per_page, total=total)


def iter_invoices(
    db_session: Session, *, today: date, batch: int = 500, **filters: Any
) -> Iterator[InvoiceRow]:
    """Every invoice :func:`list_invoices` would list, page after page (for a CSV export
    that must not hold the whole history in memory)."""
    page = 1
    while True:
        found = list_invoices(db_session, today=today, page=page, per_page=batch, **filters)
        yield from found.rows
        if not found.has_next:
            return
        page += 1


# -- one invoice --------------------------------------------------------------------------------


@dataclass(frozen=True)
class InvoiceDetail:
    """One invoice with everything its page and PDF print."""

    invoice: Invoice
    customer: Customer
    contract: BillingContract
    credit_notes: list[CreditNote]  # issued ones (drafts too, for a draft invoice), lines loaded
    payments: list[InvoicePayment]
    credited_minor: int
    paid_minor: int
    status: InvoiceStatus

    @property
    def balance_minor(self) -> int:
        return self.invoice.total_minor - self.credited_minor - self.paid_minor

    @property
    def lines(self) -> list[InvoiceLine]:
        return self.invoice.lines


def invoice_detail(
    db_session: Session, invoice_id: int, *, today: date, include_drafts: bool = False
) -> InvoiceDetail | None:
    """The invoice (in the session's scope), or None: not there, or a draft and not allowed."""
    invoice = db_session.scalars(
        select(Invoice).where(Invoice.id == invoice_id).options(selectinload(Invoice.lines))
    ).first()
    if invoice is None or (invoice.state is InvoiceState.DRAFT and not include_drafts):
        return None
    credit_notes = list(
        db_session.scalars(
            select(CreditNote)
            .where(CreditNote.invoice_id == invoice.id)
            .options(selectinload(CreditNote.lines))
            .order_by(CreditNote.id)
        )
    )
    if invoice.state is not InvoiceState.DRAFT:
        credit_notes = [note for note in credit_notes if note.state is CreditNoteState.ISSUED]
    payments = list(
        db_session.scalars(
            select(InvoicePayment)
            .where(InvoicePayment.invoice_id == invoice.id)
            .order_by(InvoicePayment.received_at, InvoicePayment.id)
        )
    )
    credited = sum(
        note.total_minor for note in credit_notes if note.state is CreditNoteState.ISSUED
    )
    paid = sum(
        -p.amount_minor if p.kind is PaymentKind.REFUND else p.amount_minor for p in payments
    )
    contract = db_session.scalars(
        select(BillingContract).where(BillingContract.id == invoice.billing_contract_id)
    ).one()
    customer = db_session.scalars(select(Customer).where(Customer.id == invoice.customer_id)).one()
    status = invoice_status(
        invoice.state, invoice.total_minor, credited, paid, invoice.due_on, today
    )
    return InvoiceDetail(
        invoice, customer, contract, credit_notes, payments, credited, paid, status
    )


# -- the dashboard ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccountSummary:
    """What a customer owes: open balance per currency, how many invoices are overdue, and the
    next due date among the unpaid ones."""

    open_balance_minor: dict[str, int] = field(default_factory=dict)
    open_count: int = 0
    overdue_count: int = 0
    overdue_minor: dict[str, int] = field(default_factory=dict)
    next_due_on: date | None = None


def unpaid_invoices() -> Select[Any]:
    """The issued invoices of the customer bound as ``customer_id`` that still have a balance:
    id, currency, due date and balance. Built once by its callers with the bound parameter
    (building it per dashboard view cost more than running it); the payments capability adds
    its own column to it so the dashboard reads both cards in one round trip."""
    credited, paid = _credited(), _paid()
    balance = (Invoice.total_minor - credited - paid).label("balance")
    issued = (
        select(Invoice.id, Invoice.currency, Invoice.due_on, balance)
        .where(
            Invoice.customer_id == bindparam("customer_id", type_=Integer),
            Invoice.state == InvoiceState.ISSUED,
        )
        .subquery()
    )
    return select(issued.c.id, issued.c.currency, issued.c.due_on, issued.c.balance).where(
        issued.c.balance > 0
    )


_UNPAID_INVOICES = unpaid_invoices()


def account_summary(db_session: Session, customer_id: int, today: date) -> AccountSummary:
    """The customer's issued, unpaid invoices summed (one query over their unpaid invoices)."""
    rows = db_session.execute(_UNPAID_INVOICES, {"customer_id": customer_id}).all()
    return summarize_unpaid([(row.currency, row.due_on, int(row.balance)) for row in rows], today)


def summarize_unpaid(rows: Collection[tuple[str, date, int]], today: date) -> AccountSummary:
    """Sum unpaid invoices given as (currency, due date, balance) into the dashboard's card."""
    open_balance: dict[str, int] = defaultdict(int)
    overdue: dict[str, int] = defaultdict(int)
    overdue_count = 0
    next_due: date | None = None
    for currency, due_on, owed in rows:
        open_balance[currency] += owed
        if due_on < today:
            overdue_count += 1
            overdue[currency] += owed
        elif next_due is None or due_on < next_due:
            next_due = due_on
    return AccountSummary(
        open_balance_minor=dict(open_balance),
        open_count=len(rows),
        overdue_count=overdue_count,
        overdue_minor=dict(overdue),
        next_due_on=next_due,
    )


def overdue_invoices(db_session: Session, today: date, limit: int = 50) -> list[InvoiceRow]:
    """Issued invoices past their due date with something left to pay, oldest due first (the
    staff view across customers; uses the (partner, state, due date) index)."""
    credited, paid = _credited(), _paid()
    statement = (
        select(Invoice, Customer.name, credited, paid)
        .join(Customer, Customer.id == Invoice.customer_id)
        .where(
            Invoice.state == InvoiceState.ISSUED,
            Invoice.due_on < today,
            Invoice.total_minor - credited - paid > 0,
        )
        .order_by(Invoice.due_on, Invoice.id)
        .limit(limit)
    )
    return [
        InvoiceRow(invoice, name, int(credit), int(pay), InvoiceStatus.OVERDUE)
        for invoice, name, credit, pay in db_session.execute(statement)
    ]


# -- billing runs -------------------------------------------------------------------------------


def billing_runs(db_session: Session, limit: int = 20) -> list[BillingRun]:
    """The latest runs, newest first (a staff session sees its partner's)."""
    return list(
        db_session.scalars(
            select(BillingRun)
            .order_by(BillingRun.created_at.desc(), BillingRun.id.desc())
            .limit(limit)
        )
    )


def billing_run(db_session: Session, run_id: int) -> BillingRun | None:
    return db_session.scalars(select(BillingRun).where(BillingRun.id == run_id)).first()


# -- deferred revenue ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RevenueMonth:
    """One calendar month of one currency: revenue recognised in it, and what was invoiced but
    not yet recognised at its end (deferred)."""

    month: date
    currency: str
    recognised_minor: int
    deferred_minor: int


@dataclass(frozen=True)
class DeferredRevenueReport:
    months: list[RevenueMonth]
    first_month: date
    last_month: date

    def by_currency(self) -> dict[str, list[RevenueMonth]]:
        grouped: dict[str, list[RevenueMonth]] = defaultdict(list)
        for month in self.months:
            grouped[month.currency].append(month)
        return dict(grouped)


LONG_FREQUENCIES = (ContractFrequency.QUARTERLY, ContractFrequency.ANNUAL)


def deferred_revenue_report(
    db_session: Session,
    *,
    first_month: date,
    last_month: date,
    frequencies: Collection[ContractFrequency] = LONG_FREQUENCIES,
) -> DeferredRevenueReport:
    """Revenue of issued invoices of quarterly and annual contracts, recognised per calendar
    month by days (:func:`portal.features.billing.rules.revenue.deferred_revenue`, which splits
    each line
    exactly), net of their credit notes (a void cancels the invoice's lines), tax excluded.

    ``deferred_minor`` at a month's end is what lines issued by then still have to recognise
    after it. Lines are streamed: the report does not hold the history in memory.
    """
    first = first_month.replace(day=1)
    last = last_month.replace(day=1)
    if last < first:
        raise ValueError("the report's last month is before its first")
    end = last + relativedelta(months=1)
    months = []
    month = first
    while month < end:
        months.append(month)
        month += relativedelta(months=1)
    recognised: dict[tuple[str, date], int] = defaultdict(int)
    deferred: dict[tuple[str, date], int] = defaultdict(int)
    for currency, issued_on, start, stop, amount in _revenue_lines(db_session, frequencies, end):
        for part in deferred_revenue(amount, Period(start, stop)):
            if first <= part.month < end:
                recognised[(currency, part.month)] += part.amount_minor
            # deferred at the end of each report month issued on or before it, earned after it
            for month in months:
                month_end = month + relativedelta(months=1)
                if issued_on < month_end <= part.month:
                    deferred[(currency, month)] += part.amount_minor
    currencies = sorted({key[0] for key in recognised} | {key[0] for key in deferred})
    rows = [
        RevenueMonth(month, currency, recognised[(currency, month)], deferred[(currency, month)])
        for currency in currencies
        for month in months
    ]
    return DeferredRevenueReport(rows, first, last)


def _revenue_lines(
    db_session: Session, frequencies: Collection[ContractFrequency], before: date
) -> Iterator[tuple[str, date, date, date, int]]:
    """(currency, issued on, period start, period end, amount) of every line of the issued (or
    since voided) invoices of such contracts issued before ``before``, and, negated, of their
    issued credit notes' lines (dated by the credit note's issue)."""
    contract_kinds = [ContractFrequency(f).value for f in frequencies]
    invoice_lines = (
        select(
            Invoice.currency,
            Invoice.issued_on,
            InvoiceLine.period_start,
            InvoiceLine.period_end,
            InvoiceLine.amount_minor,
        )
        .join(Invoice, Invoice.id == InvoiceLine.invoice_id)
        .join(BillingContract, BillingContract.id == Invoice.billing_contract_id)
        .where(
            Invoice.state.in_((InvoiceState.ISSUED, InvoiceState.VOID)),
            Invoice.issued_on < before,
            BillingContract.frequency.in_(contract_kinds),
        )
    )
    credit_lines = (
        select(
            CreditNote.currency,
            CreditNote.issued_on,
            CreditNoteLine.period_start,
            CreditNoteLine.period_end,
            -CreditNoteLine.amount_minor,
        )
        .join(CreditNote, CreditNote.id == CreditNoteLine.credit_note_id)
        .join(Invoice, Invoice.id == CreditNote.invoice_id)
        .join(BillingContract, BillingContract.id == Invoice.billing_contract_id)
        .where(
            CreditNote.state == CreditNoteState.ISSUED,
            CreditNote.issued_on < before,
            BillingContract.frequency.in_(contract_kinds),
        )
    )
    for statement in (invoice_lines, credit_lines):
        for row in db_session.execute(statement.execution_options(yield_per=1000)):
            currency, issued_on, start, stop, amount = row
            assert issued_on is not None  # issued documents only
            yield currency, issued_on, start, stop, int(amount)
