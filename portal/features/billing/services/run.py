"""The billing run: one invoice per contract whose period starts on a given day (DESIGN §4).

**What goes on the invoice of a contract period [S, E)** (its previous period [P, S)):

- *advance*: every own billing period of each of the contract's subscriptions (bundle parents
  only; a bundle's parts are named in the line) that starts in [S, E), for the seats it had at
  the start of day S, at the catalogue price in the contract's currency; an annually or
  triennially billed subscription gets the contract's prepaid (upfront) discount. Only active
  subscriptions (an expired one is not), and a term that does not renew is not billed past
  its end; a renewal moves the term on with the same anchor day, and a quantity it changed is
  settled like any applied change (a renewal that kept the quantity settles nothing);
- *changes*: every licence change the provider applied (provisioned, or reported by the
  provider) on a day in [P, S) in the partner's time zone, on or after the contract's first
  day, prorated by :func:`portal.features.billing.rules.invoicing.assemble` over each own period of
  the subscription that was billed before S and ends after the change: from the change's day in
  the period containing it, whole for the later ones (they were billed in advance with the
  old quantity). Additions are charged at the list price; a reduction inside its window
  (:func:`portal.features.licences.rules.reducible_seats` over the change log, at the moment it took
  effect) is credited on a credit note applied to the invoice; outside it, nothing. A purchase
  is never settled here: it is billed in advance, at once, on an invoice of its own for the
  period it starts in, up to the end of the period the provider applied it in (its seats count
  at a period's start only from the day it was applied)
  (:mod:`portal.features.billing.services.purchases`), which each run makes first for the
  purchases not billed yet, each on its own (one that fails is reported and retried next run);
- *usage* in arrears, from :func:`usage_charges` (the usage module does not exist yet: none);
- the contract's discount and tax (the domain).

Every change is settled exactly once, by the run of the period after it, and the seats billed
in advance are counted at the start of day S, so a late run (catch-up) charges the same. A
contract with nothing to charge and nothing to credit gets no invoice.

**Idempotent by constraint** (reliability notes C7): invoices are inserted with ``INSERT … ON
CONFLICT (billing_contract_id, period_start) DO NOTHING``; lines and credit notes go in only
for the invoices that insert returned. A rerun, or a second run at the same time, inserts
nothing new (on PostgreSQL the second waits for the first's uncommitted row, then skips it).

**Throughput and memory**: contracts are processed in chunks of :data:`CHUNK` in one
transaction each (a failure loses one chunk's work, and progress is visible); each chunk reads
its subscriptions, their bundles' parts and their changes in three set-based statements, and
its rows go in with ``COPY`` on PostgreSQL (executemany on SQLite), written in a thread while
the next chunk is read and assembled. At most two chunks are held at once (BENCHMARKS.md).

With the partner's review on, the invoices stay drafts for staff; off, they are numbered and
issued in the chunk's transaction (:func:`portal.features.billing.services.documents.issue_drafts`);
the run itself (:class:`~portal.features.billing.models.BillingRun`, who and when) is then their
record, not an audit event per invoice.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any, cast
from zoneinfo import ZoneInfo

from flask import Flask, current_app
from sqlalchemy import (
    Connection,
    Integer,
    Row,
    Table,
    any_,
    bindparam,
    extract,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased

from portal.core.db import get_database, utcnow
from portal.core.proration import Period, billing_period
from portal.features.billing.models import (
    BillingContract,
    BillingRun,
    BillingRunState,
    CreditNote,
    CreditNoteKind,
    CreditNoteLine,
    CreditNoteState,
    Invoice,
    InvoiceLine,
    InvoiceState,
    ppm_to_rate,
)
from portal.features.billing.rules.invoicing import (
    Assembled,
    BilledSubscription,
    ContractTerms,
    DraftLine,
    QuantityChange,
    UsageCharge,
    assemble,
)
from portal.features.billing.services.contracts import place_unplaced_purchases
from portal.features.billing.services.documents import (
    Draft,
    billing_settings,
    issue_drafts,
    line_rows,
)
from portal.features.billing.services.purchases import bill_purchases, unbilled_purchases
from portal.features.catalogue.models import Product, ProductPrice
from portal.features.catalogue.rules import BillingFrequency, ReductionBehaviour
from portal.features.licences.models import LicenceChange, Subscription, SubscriptionStatus
from portal.features.licences.rules import ChangeKind, ChangeState, SeatEvent, reducible_seats
from portal.features.tenancy.models import Partner

log = logging.getLogger(__name__)

CHUNK = 500  # contracts per transaction
ERROR_LIMIT = 4000
# changes that count as done at the provider: they are what is billed
APPLIED = (ChangeState.PROVISIONED, ChangeState.NOT_APPLICABLE)
PREPAID = (BillingFrequency.ANNUAL, BillingFrequency.TRIENNIAL)

_INVOICE = cast(Table, Invoice.__table__)
_LINE = cast(Table, InvoiceLine.__table__)
_CREDIT = cast(Table, CreditNote.__table__)
_CREDIT_LINE = cast(Table, CreditNoteLine.__table__)
_RUN = cast(Table, BillingRun.__table__)


class BillingRunError(Exception):
    """A run could not start (no such partner or run)."""


# -- entry points -------------------------------------------------------------------------------


def run_billing(
    on: date,
    started_by: str,
    *,
    partner_id: int | None = None,
    today: date | None = None,
    app: Flask | None = None,
) -> list[BillingRun]:
    """Bill every partner's contracts (or one partner's) whose period starts on ``on``, a day
    in each partner's own time zone; one :class:`BillingRun` per partner. Commits as it goes.
    """
    flask_app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    with get_database(flask_app).sessions() as session:
        statement = select(Partner.id).order_by(Partner.id)
        if partner_id is not None:
            statement = statement.where(Partner.id == partner_id)
        partner_ids = list(session.scalars(statement))
    if partner_id is not None and not partner_ids:
        raise BillingRunError(f"no partner with id {partner_id}")
    return [
        run_billing_for_partner(pid, on, started_by, today=today, app=flask_app)
        for pid in partner_ids
    ]


def run_billing_for_partner(
    partner_id: int,
    on: date,
    started_by: str,
    *,
    run_id: int | None = None,
    today: date | None = None,
    app: Flask | None = None,
) -> BillingRun:
    """One partner's run for ``on``: a new :class:`BillingRun`, or the queued (or interrupted)
    one ``run_id`` (the staff button's, run by a worker). Returns the run as it finished; a
    failure is recorded on the run (state failed, its error) and raised again."""
    flask_app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    database = get_database(flask_app)
    with database.sessions() as session:
        partner = session.get(Partner, partner_id)
        if partner is None:
            raise BillingRunError(f"no partner with id {partner_id}")
        zone = ZoneInfo(partner.timezone or "UTC")
        run = _start(session, partner_id, on, started_by, run_id)
        settings = billing_settings(session, partner_id)  # kept loaded: expire_on_commit off
        run_id = run.id
        session.commit()
    issue_on = today or utcnow().astimezone(zone).date()
    context = _RunContext(
        app=flask_app,
        partner_id=partner_id,
        run_id=run_id,
        on=on,
        zone=zone,
        review=settings.invoice_review,
        settings=settings,
        issue_on=issue_on,
        started_by=started_by,
    )
    try:
        _bill_purchases(context)
        _run(context)
    except Exception as error:
        log.exception("billing run %s (partner %s, %s) failed", run_id, partner_id, on)
        _finish(context, BillingRunState.FAILED, f"{type(error).__name__}: {error}")
        raise
    _finish(
        context,
        BillingRunState.FAILED if context.errors else BillingRunState.DONE,
        "\n".join(context.errors) or None,
    )
    with database.sessions() as session:
        return session.get_one(BillingRun, run_id)


def _bill_purchases(context: _RunContext) -> None:
    """The invoices of purchases not billed yet (one made at once may have been missed: the
    purchase was applied before its subscription went on a contract, or its item failed), each
    in a transaction of its own: one that fails is logged and reported on the run, and the run
    goes on (the next run tries it again)."""
    database = get_database(context.app)
    with context.app.app_context():
        try:
            with database.sessions() as session:
                place_unplaced_purchases(session, context.partner_id, by=context.started_by)
                session.commit()
        except Exception as error:
            log.exception("billing run %s: purchases not placed on contracts", context.run_id)
            context.errors.append(f"purchases not placed on contracts ({type(error).__name__})")
        with database.sessions() as session:
            change_ids = unbilled_purchases(session, context.partner_id)
        for change_id in change_ids:
            try:
                with database.sessions() as session:
                    bill_purchases(
                        session,
                        context.partner_id,
                        by=context.started_by,
                        change_ids=[change_id],
                        today=context.issue_on,
                        run_id=context.run_id,
                        app=context.app,
                    )
                    session.commit()
            except Exception as error:
                log.exception(
                    "billing run %s: purchase %s could not be billed", context.run_id, change_id
                )
                context.errors.append(
                    f"purchase {change_id}: not billed ({type(error).__name__}: {error})"
                )


def _start(
    session: Session, partner_id: int, on: date, started_by: str, run_id: int | None
) -> BillingRun:
    now = utcnow()
    if run_id is None:
        run = BillingRun(
            partner_id=partner_id,
            run_on=on,
            state=BillingRunState.RUNNING,
            started_by=started_by,
            created_at=now,
            started_at=now,
        )
        session.add(run)
        session.flush()
        return run
    found = session.get(BillingRun, run_id)
    if found is None or found.partner_id != partner_id:
        raise BillingRunError(f"no billing run {run_id} for partner {partner_id}")
    # a worker that died left it running: start again, counting from nothing (what the first
    # attempt committed is found already invoiced, and counted as such)
    found.state = BillingRunState.RUNNING
    found.started_at = now
    found.finished_at = None
    found.error = None
    for counter in (
        "contracts_total",
        "contracts_done",
        "contracts_skipped",
        "invoices_created",
        "credit_notes_created",
        "lines_created",
    ):
        setattr(found, counter, 0)
    return found


@dataclass
class _RunContext:
    app: Flask
    partner_id: int
    run_id: int
    on: date
    zone: ZoneInfo
    review: bool
    settings: Any
    issue_on: date
    started_by: str
    errors: list[str] = field(default_factory=list)


def _finish(context: _RunContext, state: BillingRunState, error: str | None) -> None:
    with get_database(context.app).sessions() as session:
        session.execute(
            update(_RUN)
            .where(_RUN.c.id == context.run_id)
            .values(
                state=state,
                finished_at=utcnow(),
                error=error[:ERROR_LIMIT] if error else None,
            )
        )
        session.commit()


# -- the run ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Contract:
    id: int
    customer_id: int
    name: str
    currency: str
    anchor_on: date
    payment_terms_days: int
    discount_ppm: int
    prepaid_discount_ppm: int
    tax_rate_ppm: int
    period: Period
    # the days whose changes this invoice settles: [previous period's start, S), from the
    # contract's first day; None on its first invoice
    settles: Period | None


def _run(context: _RunContext) -> None:
    """Bill the due contracts chunk by chunk. On PostgreSQL a chunk is written (in a thread of
    its own, on its own connection) while the next one is read and computed: the database's
    work and ours overlap instead of taking turns. One write at a time, in chunk order."""
    database = get_database(context.app)
    with database.sessions() as session:
        due, skipped = _due_contracts(session, context.partner_id, context.on)
        session.execute(
            update(_RUN)
            .where(_RUN.c.id == context.run_id)
            .values(contracts_total=len(due) + skipped, contracts_skipped=skipped)
        )
        session.commit()
    overlap = database.engine.dialect.name == "postgresql"
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="billing-write") as writer:
        writing: Future[None] | None = None
        for start in range(0, len(due), CHUNK):
            with database.sessions() as session:
                contracts = _load_contracts(session, due[start : start + CHUNK], context.on)
                prepared = _prepare(session, context, contracts)
            if writing is not None:
                writing.result()  # the previous chunk's failure stops the run here
            if overlap:
                writing = writer.submit(_write, context, prepared)
            else:
                _write(context, prepared)
        if writing is not None:
            writing.result()


def _write(context: _RunContext, prepared: _Prepared) -> None:
    """Store one chunk and count it on the run, in one transaction."""
    with context.app.app_context(), get_database(context.app).sessions() as session:
        counts = _Counts()
        if prepared.assembled:
            _store(session, context, prepared.contracts, prepared.assembled, counts)
        counts.skipped = len(prepared.assembled) - counts.invoices
        session.execute(
            update(_RUN)
            .where(_RUN.c.id == context.run_id)
            .values(
                contracts_done=_RUN.c.contracts_done + len(prepared.contracts),
                contracts_skipped=_RUN.c.contracts_skipped + counts.skipped,
                invoices_created=_RUN.c.invoices_created + counts.invoices,
                credit_notes_created=_RUN.c.credit_notes_created + counts.credit_notes,
                lines_created=_RUN.c.lines_created + counts.lines,
            )
        )
        session.commit()


def period_starts_on(anchor: date, months: int, on: date) -> bool:
    return anchor <= on and _period(anchor, months, on).start == on


def _candidate_days(on: date) -> list[int]:
    """Anchor days whose period can start on ``on``: its own day, and on a month's last day
    the days it does not have (an anchor on the 31st starts on 30 April)."""
    last_day = (on + timedelta(days=1)).day == 1
    return [on.day, *range(on.day + 1, 32)] if last_day else [on.day]


def _due_contracts(session: Session, partner_id: int, on: date) -> tuple[list[int], int]:
    """Ids of the partner's active contracts whose period starts on ``on`` and that have no
    invoice for it yet, and how many had one. The anchor's day narrows them in SQL; the exact
    anniversary rule (months, short months) is the domain's."""
    invoiced = (
        select(_INVOICE.c.id)
        .where(
            _INVOICE.c.billing_contract_id == BillingContract.id,
            _INVOICE.c.period_start == on,
            _INVOICE.c.purchase_change_id.is_(None),
        )
        .exists()
    )
    rows = session.execute(
        select(BillingContract.id, BillingContract.anchor_on, BillingContract.frequency, invoiced)
        .where(
            BillingContract.partner_id == partner_id,
            BillingContract.active.is_(True),
            BillingContract.anchor_on <= on,
            extract("day", BillingContract.anchor_on).in_(_candidate_days(on)),
        )
        .order_by(BillingContract.id)
    )
    due: list[int] = []
    skipped = 0
    for contract_id, anchor, frequency, done in rows.all():
        if not period_starts_on(anchor, frequency.months, on):
            continue
        if done:
            skipped += 1
        else:
            due.append(contract_id)
    return due, skipped


def _among(connection: Connection, column: Any, ids: Sequence[int]) -> Any:
    """``column IN ids``; on PostgreSQL ``column = ANY(:ids)`` with the ids as one array
    parameter, so a chunk's statement is not 500 placeholders to render and parse each time."""
    if connection.dialect.name == "postgresql":
        return column == any_(bindparam(None, list(ids), type_=postgresql.ARRAY(Integer)))
    return column.in_(list(ids))


def _load_contracts(session: Session, ids: Sequence[int], on: date) -> list[_Contract]:
    connection = session.connection()
    rows = connection.execute(
        select(
            BillingContract.id,
            BillingContract.customer_id,
            BillingContract.name,
            BillingContract.currency,
            BillingContract.frequency,
            BillingContract.anchor_on,
            BillingContract.payment_terms_days,
            BillingContract.discount_ppm,
            BillingContract.prepaid_discount_ppm,
            BillingContract.tax_rate_ppm,
        )
        .where(_among(connection, BillingContract.id, ids))
        .order_by(BillingContract.id)
    )
    contracts = []
    for row in rows.all():
        months = row.frequency.months
        period = _period(row.anchor_on, months, on)
        settles = None
        if on > row.anchor_on:
            previous = _period(row.anchor_on, months, on - timedelta(days=1))
            settles = Period(max(previous.start, row.anchor_on), on)
        contracts.append(
            _Contract(
                id=row.id,
                customer_id=row.customer_id,
                name=row.name,
                currency=row.currency,
                anchor_on=row.anchor_on,
                payment_terms_days=row.payment_terms_days,
                discount_ppm=row.discount_ppm,
                prepaid_discount_ppm=row.prepaid_discount_ppm,
                tax_rate_ppm=row.tax_rate_ppm,
                period=period,
                settles=settles,
            )
        )
    return contracts


@dataclass
class _Counts:
    invoices: int = 0
    credit_notes: int = 0
    lines: int = 0
    skipped: int = 0


@dataclass(frozen=True)
class _Change:
    id: int
    sequence: int
    day: date
    at: datetime
    quantity_from: int
    quantity_to: int
    purchase: bool = False  # billed at once on its own invoice, never settled by a run

    @property
    def delta(self) -> int:
        return self.quantity_to - self.quantity_from


@dataclass(frozen=True)
class _Prepared:
    """A chunk read and computed, ready to be written."""

    contracts: dict[int, _Contract]
    assembled: dict[int, Assembled]


def _prepare(session: Session, context: _RunContext, contracts: list[_Contract]) -> _Prepared:
    """Read a chunk's facts in a few set-based statements and assemble each contract's
    documents; a contract the domain refuses is reported on the run and left out."""
    by_id = {contract.id: contract for contract in contracts}
    subscriptions = _subscriptions(session, list(by_id))
    children = _children(session, list(by_id))
    oldest = min((c.settles.start for c in contracts if c.settles is not None), default=context.on)
    max_window = max((row.window_hours for row in subscriptions), default=0)
    since = _utc_midnight(oldest, context.zone) - timedelta(hours=max_window)
    changes = _changes(session, list(by_id), since, context.zone)
    usage = usage_charges(session, contracts)
    assembled: dict[int, Assembled] = {}
    per_contract: dict[int, list[Row[Any]]] = defaultdict(list)
    for row in subscriptions:
        per_contract[row.billing_contract_id].append(row)
    for contract in contracts:
        try:
            billed = [
                entry
                for row in per_contract.get(contract.id, ())
                for entry in _billed(
                    contract, row, children.get(row.id, ()), changes.get(row.id, ()), context
                )
            ]
            terms = ContractTerms(
                contract.currency,
                ppm_to_rate(contract.discount_ppm),
                ppm_to_rate(contract.tax_rate_ppm),
            )
            result = assemble(terms, billed, usage.get(contract.id, ()))
        except _ContractProblem as problem:
            context.errors.append(f"contract {contract.id} ({contract.name}): {problem}")
            continue
        except ValueError as problem:  # the domain refused the facts: say which contract
            context.errors.append(f"contract {contract.id} ({contract.name}): {problem}")
            continue
        if result.invoice.lines or result.credit is not None:
            assembled[contract.id] = result
    return _Prepared(by_id, assembled)


class _ContractProblem(Exception):
    """Facts a contract cannot be invoiced from (a price missing); the run goes on without it."""


def _subscriptions(session: Session, contract_ids: list[int]) -> list[Row[Any]]:
    """The contracts' subscriptions (bundle parents only) with what billing needs of their
    product and its price in the contract's currency, in one statement."""
    connection = session.connection()
    rows: Sequence[Any] = connection.execute(
        select(
            Subscription.id,
            Subscription.billing_contract_id,
            Subscription.status,
            Subscription.quantity,
            Subscription.billing_frequency,
            Subscription.term_started_at,
            Subscription.term_ends_on,
            Subscription.auto_renew,
            Subscription.currency,
            Product.name,
            Product.reduction,
            Product.window_hours,
            ProductPrice.price_minor,
        )
        .join(Product, Product.id == Subscription.product_id)
        .join(BillingContract, BillingContract.id == Subscription.billing_contract_id)
        .outerjoin(
            ProductPrice,
            (ProductPrice.product_id == Product.id)
            & (ProductPrice.currency == BillingContract.currency),
        )
        .where(
            _among(connection, Subscription.billing_contract_id, contract_ids),
            Subscription.parent_id.is_(None),
            Subscription.status != SubscriptionStatus.FAILED,
        )
        .order_by(Subscription.billing_contract_id, Subscription.id)
    ).all()  # fetchall: one call, not one per row
    return list(rows)


def _children(session: Session, contract_ids: list[int]) -> dict[int, tuple[str, ...]]:
    """The names of each bundle's parts, by the bundle's subscription id."""
    parent = aliased(Subscription)
    names: dict[int, list[str]] = defaultdict(list)
    connection = session.connection()
    rows = connection.execute(
        select(Subscription.parent_id, Product.name)
        .join(parent, parent.id == Subscription.parent_id)
        .join(Product, Product.id == Subscription.product_id)
        .where(_among(connection, parent.billing_contract_id, contract_ids))
        .order_by(Subscription.parent_id, Subscription.id)
    )
    for parent_id, name in rows.all():
        if parent_id is not None:
            names[parent_id].append(name)
    return {key: tuple(value) for key, value in names.items()}


def _changes(
    session: Session, contract_ids: list[int], since: datetime, zone: ZoneInfo
) -> dict[int, list[_Change]]:
    """Applied changes since ``since`` of the contracts' subscriptions, in the order they took
    effect, by subscription; each with its day in the partner's time zone."""
    found: dict[int, list[_Change]] = defaultdict(list)
    connection = session.connection()
    rows = connection.execute(
        select(
            LicenceChange.subscription_id,
            LicenceChange.id,
            LicenceChange.sequence,
            LicenceChange.effective_at,
            LicenceChange.quantity_from,
            LicenceChange.quantity_to,
            LicenceChange.kind,
        )
        .join(Subscription, Subscription.id == LicenceChange.subscription_id)
        .where(
            _among(connection, Subscription.billing_contract_id, contract_ids),
            Subscription.parent_id.is_(None),
            LicenceChange.state.in_(APPLIED),
            LicenceChange.effective_at >= since,
            # a renewal that kept the quantity moved no seats: nothing to settle
            (LicenceChange.kind != ChangeKind.RENEWAL)
            | (LicenceChange.quantity_from != LicenceChange.quantity_to),
        )
        .order_by(LicenceChange.subscription_id, LicenceChange.effective_at, LicenceChange.sequence)
    )
    for subscription_id, change_id, sequence, at, quantity_from, quantity_to, kind in rows.all():
        assert at is not None  # the statement asks for effective_at >= since
        found[subscription_id].append(
            _Change(
                change_id,
                sequence,
                at.astimezone(zone).date(),
                at,
                quantity_from,
                quantity_to,
                kind == ChangeKind.PURCHASE,
            )
        )
    return found


def usage_charges(session: Session, contracts: Sequence[_Contract]) -> dict[int, list[UsageCharge]]:
    """Usage lines in arrears for each contract's previous period, by contract id.

    The usage module (Azure usage, a later issue) does not exist yet, so there are none: when
    it lands, it returns here its rated, billed usage of each contract's subscriptions for the
    period the invoice settles, as :class:`~portal.features.billing.rules.invoicing.UsageCharge`
    (unit prices keep their decimals until the line is rounded).
    """
    return {}


@lru_cache(maxsize=8192)
def _period(anchor: date, months: int, on: date) -> Period:
    """:func:`billing_period`, remembered: a run asks the same few anchors over and over (most
    subscriptions share their contract's anchor day), and the calendar arithmetic is most of
    the run's own CPU otherwise."""
    return billing_period(anchor, months, on)


def _utc_midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(), tzinfo=zone).astimezone(UTC)


def _own_periods(anchor: date, months: int, first_day: date) -> Iterator[Period]:
    """The subscription's own billing periods from the one containing ``first_day`` on."""
    period = _period(anchor, months, first_day)
    while True:
        yield period
        period = _period(anchor, months, period.end)


def _billed(
    contract: _Contract,
    row: Row[Any],
    children: Sequence[str],
    changes: Sequence[_Change],
    context: _RunContext,
) -> list[BilledSubscription]:
    """One subscription's entries for the domain: the periods it is charged in advance for,
    and the earlier periods its settled changes are prorated over."""
    start = contract.period.start
    settles = contract.settles
    if changes:
        settled = [
            change
            for change in changes
            if settles is not None
            and settles.start <= change.day < settles.end
            and not change.purchase
        ]
        quantity_at_start = row.quantity - sum(c.delta for c in changes if c.day >= start)
    else:  # nine in ten: nothing changed lately
        settled = []
        quantity_at_start = row.quantity
    anchor = _local_day(row.term_started_at, context.zone)
    months = _MONTHS[row.billing_frequency]
    advance: list[Period] = []
    if quantity_at_start > 0 and row.status is SubscriptionStatus.ACTIVE:
        advance = [
            own
            for own in _starting_in(anchor, months, contract.period)
            if row.auto_renew or own.start <= row.term_ends_on
        ]
    if not advance and not settled:
        return []
    if row.price_minor is None:
        raise _ContractProblem(
            f"{row.name} (subscription {row.id}) has no price in {contract.currency}"
        )
    if row.currency != contract.currency:
        raise _ContractProblem(
            f"subscription {row.id} is in {row.currency}, the contract in {contract.currency}"
        )
    discount = (
        ppm_to_rate(contract.prepaid_discount_ppm)
        if row.billing_frequency in PREPAID
        else _NO_DISCOUNT
    )
    if not settled:
        return [
            BilledSubscription(
                subscription_id=row.id,
                description=row.name,
                period=period,
                unit_price_minor=row.price_minor,
                upfront_discount=discount,
                quantity=quantity_at_start,
                bill_in_advance=True,
                previous_period=None,
                changes=(),
                children=children,
            )
            for period in advance
        ]
    quantity_changes = {
        change.id: QuantityChange(
            change.day,
            change.quantity_from,
            change.quantity_to,
            _credit_allowed(change, row, changes),
        )
        for change in settled
    }

    def entry(
        period: Period, in_advance: bool, previous: Period | None, batch: list[_Change]
    ) -> BilledSubscription:
        return BilledSubscription(
            subscription_id=row.id,
            description=row.name,
            period=period,
            unit_price_minor=row.price_minor,
            upfront_discount=discount,
            quantity=quantity_at_start if in_advance else 0,
            bill_in_advance=in_advance,
            previous_period=previous,
            changes=[quantity_changes[change.id] for change in batch],
            children=children,
        )

    entries: list[BilledSubscription] = []
    pending = list(advance)
    # each own period billed before S that ends after the first settled change
    for own in _own_periods(anchor, months, min(change.day for change in settled)):
        if own.start >= start:
            break
        batch = [change for change in settled if change.day < own.end]
        if not batch:
            continue
        if pending and pending[0].start == own.end:
            # the usual case: the period charged in advance follows the settled one
            entries.append(entry(pending.pop(0), True, own, batch))
        else:
            entries.append(entry(_period(anchor, months, own.end), False, own, batch))
    entries += [entry(period, True, None, []) for period in pending]
    return entries


_MONTHS = {frequency: frequency.months for frequency in BillingFrequency}
_NO_DISCOUNT = Decimal(0)


@lru_cache(maxsize=65536)
def _local_day(at: datetime, zone: ZoneInfo) -> date:
    return at.astimezone(zone).date()


@lru_cache(maxsize=8192)
def _starting_in(anchor: date, months: int, period: Period) -> tuple[Period, ...]:
    """A subscription's own periods that start in the contract's ``period``."""
    found = []
    for own in _own_periods(anchor, months, period.start):
        if own.start >= period.end:
            break
        if own.start >= period.start:
            found.append(own)
    return tuple(found)


def _credit_allowed(change: _Change, row: Row[Any], changes: Sequence[_Change]) -> bool:
    """Whether a reduction was inside its window when it took effect: only for products whose
    seats can be reduced within a window, and only for as many seats as were still inside it
    (the window opens at the term's start and at each addition, for the seats added)."""
    if change.delta >= 0 or row.reduction is not ReductionBehaviour.WITHIN_WINDOW:
        return False
    window = timedelta(hours=row.window_hours)
    earlier = [
        other
        for other in changes
        if other.at >= row.term_started_at
        and (other.at, other.sequence) < (change.at, change.sequence)
    ]
    base = earlier[0].quantity_from if earlier else change.quantity_from
    open_seats = reducible_seats(
        base,
        row.term_started_at,
        [SeatEvent(other.at, other.delta) for other in earlier],
        change.at,
        window,
    )
    return -change.delta <= sum(batch.quantity for batch in open_seats)


# -- writing ------------------------------------------------------------------------------------


_INVOICE_COLUMNS = (
    "partner_id",
    "customer_id",
    "billing_contract_id",
    "billing_run_id",
    "state",
    "period_start",
    "period_end",
    "currency",
    "subtotal_minor",
    "tax_minor",
    "total_minor",
    "tax_rate_ppm",
    "created_at",
)
_LINE_COLUMNS = (
    "partner_id",
    "customer_id",
    "position",
    "kind",
    "subscription_id",
    "description",
    "period_start",
    "period_end",
    "quantity",
    "unit_price_minor",
    "unit_price",
    "days",
    "total_days",
    "amount_minor",
)


def _copy(connection: Connection, table: str, columns: Sequence[str], rows: Iterable[Any]) -> None:
    """``COPY table (columns) FROM STDIN`` of ``rows`` (sequences of values as stored: enum
    values, Decimal text), in the caller's transaction (PostgreSQL only)."""
    names = ", ".join(f'"{name}"' for name in columns)
    raw = connection.connection.driver_connection
    assert raw is not None
    with raw.cursor() as cursor, cursor.copy(f'COPY "{table}" ({names}) FROM STDIN') as copy:
        for row in rows:
            copy.write_row(row)


def _line_values(lines: Sequence[DraftLine], tenant: tuple[int, int], owner: int) -> Iterator[Any]:
    """The stored values of a document's lines (:data:`_LINE_COLUMNS`, then the owner's id),
    numbered from 1 in the document's order."""
    for position, line in enumerate(lines, start=1):
        yield (
            *tenant,
            position,
            line.kind.value,
            line.subscription_id,
            line.description[:500],
            line.period.start,
            line.period.end,
            str(line.quantity),
            line.unit_price_minor,
            str(line.unit_price),
            line.days,
            line.total_days,
            line.amount_minor,
            owner,
        )


def _insert_lines(
    connection: Connection,
    table: Table,
    owner_column: str,
    documents: Sequence[tuple[int, tuple[int, int], Sequence[DraftLine]]],
) -> int:
    """Insert the lines of ``documents`` (owner id, (partner, customer), lines); returns how
    many. Lines are most of what a run writes: on PostgreSQL they go in with ``COPY``, with no
    statement to build, parse or plan per batch; elsewhere as one executemany."""
    if connection.dialect.name == "postgresql":
        count = 0

        def values() -> Iterator[Any]:
            nonlocal count
            for owner, tenant, lines in documents:
                count += len(lines)
                yield from _line_values(lines, tenant, owner)

        _copy(connection, table.name, (*_LINE_COLUMNS, owner_column), values())
        return count
    rows = [
        {**fields, "partner_id": tenant[0], "customer_id": tenant[1], owner_column: owner}
        for owner, tenant, lines in documents
        for fields in line_rows(lines)
    ]
    if rows:
        connection.execute(insert(table), rows)
    return len(rows)


def _insert_invoices(connection: Connection, rows: list[tuple[Any, ...]]) -> list[tuple[int, int]]:
    """Insert the invoices not there yet, by constraint: ``ON CONFLICT (billing_contract_id,
    period_start) DO NOTHING``; returns (id, contract id) of those inserted.

    On PostgreSQL the rows are copied into a temporary table and inserted from it in contract
    order (concurrent runs then take the rows' locks in the same order and cannot deadlock);
    a multi-row ``INSERT`` of hundreds of rows costs more to build and parse than to run.
    """
    if connection.dialect.name != "postgresql":
        statement = sqlite.insert(_INVOICE).on_conflict_do_nothing(
            index_elements=["billing_contract_id", "period_start"],
            index_where=_INVOICE.c.purchase_change_id.is_(None),
        )
        found = connection.execute(
            statement.returning(_INVOICE.c.id, _INVOICE.c.billing_contract_id),
            [dict(zip(_INVOICE_COLUMNS, row, strict=True)) for row in rows],
        )
        return [(int(row[0]), int(row[1])) for row in found]
    columns = ", ".join(_INVOICE_COLUMNS)
    shape = f"SELECT {columns} FROM invoice WITH NO DATA"  # noqa: S608  (our own names)
    connection.exec_driver_sql(
        f"CREATE TEMPORARY TABLE IF NOT EXISTS billing_new_invoice ON COMMIT DELETE ROWS AS {shape}"
    )
    connection.exec_driver_sql("TRUNCATE billing_new_invoice")
    _copy(connection, "billing_new_invoice", _INVOICE_COLUMNS, rows)
    inserted = connection.exec_driver_sql(
        f"INSERT INTO invoice ({columns}) SELECT {columns} FROM billing_new_invoice "  # noqa: S608
        "ORDER BY billing_contract_id "
        "ON CONFLICT (billing_contract_id, period_start) WHERE purchase_change_id IS NULL "
        "DO NOTHING "
        "RETURNING id, billing_contract_id"
    )
    return [(int(row[0]), int(row[1])) for row in inserted]


def _store(
    session: Session,
    context: _RunContext,
    contracts: dict[int, _Contract],
    assembled: dict[int, Assembled],
    counts: _Counts,
) -> None:
    """Insert the chunk's invoices (those not there yet), their lines and credit notes, and
    issue them when the partner does not review."""
    connection = session.connection()
    now = utcnow()
    draft = InvoiceState.DRAFT.value
    invoice_rows = [
        (
            context.partner_id,
            contracts[contract_id].customer_id,
            contract_id,
            context.run_id,
            draft,
            contracts[contract_id].period.start,
            contracts[contract_id].period.end,
            result.invoice.currency,
            result.invoice.subtotal_minor,
            result.invoice.tax_minor,
            result.invoice.total_minor,
            contracts[contract_id].tax_rate_ppm,
            now,
        )
        for contract_id, result in assembled.items()
    ]
    inserted = _insert_invoices(connection, invoice_rows)
    if not inserted:
        return
    invoice_ids = {contract_id: invoice_id for invoice_id, contract_id in inserted}
    counts.invoices = len(invoice_ids)

    def tenant(contract_id: int) -> tuple[int, int]:
        return (context.partner_id, contracts[contract_id].customer_id)

    counts.lines = _insert_lines(
        connection,
        _LINE,
        "invoice_id",
        [
            (invoice_id, tenant(contract_id), assembled[contract_id].invoice.lines)
            for contract_id, invoice_id in invoice_ids.items()
        ],
    )
    credits = {
        invoice_id: assembled[contract_id].credit
        for contract_id, invoice_id in invoice_ids.items()
        if assembled[contract_id].credit is not None
    }
    if credits:
        contract_of = {invoice_id: contract_id for contract_id, invoice_id in invoice_ids.items()}
        credit_rows = [
            {
                "partner_id": context.partner_id,
                "customer_id": contracts[contract_of[invoice_id]].customer_id,
                "invoice_id": invoice_id,
                "kind": CreditNoteKind.REDUCTION,
                "state": CreditNoteState.DRAFT,
                "reason": "",
                "currency": credit.currency,
                "subtotal_minor": credit.subtotal_minor,
                "tax_minor": credit.tax_minor,
                "total_minor": credit.total_minor,
                "created_by": context.started_by,
                "created_at": now,
            }
            for invoice_id, credit in credits.items()
            if credit is not None
        ]
        credit_ids = connection.execute(
            insert(_CREDIT).values(credit_rows).returning(_CREDIT.c.id, _CREDIT.c.invoice_id)
        ).all()
        documents = []
        for credit_id, invoice_id in credit_ids:
            credit = credits[invoice_id]
            assert credit is not None
            documents.append((credit_id, tenant(contract_of[invoice_id]), credit.lines))
        _insert_lines(connection, _CREDIT_LINE, "credit_note_id", documents)
        counts.credit_notes = len(credit_ids)
    if not context.review:
        drafts = [
            Draft(
                invoice_id,
                contracts[contract_id].customer_id,
                contracts[contract_id].payment_terms_days,
            )
            for contract_id, invoice_id in invoice_ids.items()
        ]
        issue_drafts(
            session,
            context.partner_id,
            drafts,
            today=context.issue_on,
            by=context.started_by,
            settings=context.settings,
            app=context.app,
        )
