"""Billing run benchmark (issue 5): one run over 10,000 customers x 5 subscriptions on PostgreSQL.

Run from the repository root: ``.venv/bin/python bench/billing.py`` (``make bench``). It creates
a throw-away PostgreSQL database (``portal_bench_billing``), migrates it and seeds, with bulk
inserts: one partner, one monthly product, BENCH_CUSTOMERS (10,000) customers each with a
monthly contract anchored on 1 January 2026 and BENCH_SUBSCRIPTIONS (5) subscriptions of 10 seats
bought on 1 December 2025 (their purchases in the change log), and 10 % of the subscriptions
changed in January: four in five got seats added on a day of the month, one in five got seats
added and two days later some removed again, inside the reduction window (a credit note).

Then, timed: the billing run of 1 February 2026
(:func:`portal.features.billing.services.contracts.run_billing`,
the partner reviews, so the invoices stay drafts), reading the change log and writing every
invoice, line and credit note. Peak memory is the process's high-water mark (VmHWM) from the
start of the run, reset just before it. The same run again must create nothing. The baseline,
in the same process: the same lines computed in pure Python by
:func:`portal.features.billing.rules.invoicing.assemble` from the same inputs, with no database.

One line goes to stdout::

    bench: billing lines_per_s=… invoices=… peak_rss_mb=… rerun_new_invoices=…
    baseline_lines_per_s=… ratio=…

and the verdict against the target (>= 5,000 lines/s, < 500 MB, rerun 0) on a second line.
Progress goes to stderr. Exit code 0 when the run completed (target met or not), non-zero
when it broke (a check of the invoices failed).
"""

from __future__ import annotations

import os
import random
import secrets
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, insert, select, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATABASE = "portal_bench_billing"
SERVER_URL = os.environ.get("BENCH_PG_SERVER", "postgresql+psycopg://postgres@127.0.0.1:5432")
DATABASE_URL = f"{SERVER_URL}/{DATABASE}"
CUSTOMERS = int(os.environ.get("BENCH_CUSTOMERS", "10000"))
SUBSCRIPTIONS = int(os.environ.get("BENCH_SUBSCRIPTIONS", "5"))  # per customer
CHANGED_SHARE = 0.10
SEATS = 10
PRICE_MINOR = 1_250
ANCHOR = date(2026, 1, 1)
RUN_ON = date(2026, 2, 1)
BOUGHT = datetime(2025, 12, 1, 12, tzinfo=UTC)
SEED_BATCH = 5_000
TARGET_LINES_PER_S = 5_000
TARGET_PEAK_MB = 500


class BenchError(Exception):
    """The run broke: its numbers would mean nothing."""


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# --- database --------------------------------------------------------------------------------


def admin_sql(statement: str) -> None:
    engine = create_engine(f"{SERVER_URL}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(statement))
    finally:
        engine.dispose()


@contextmanager
def database() -> Iterator[None]:
    admin_sql(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    admin_sql(f'CREATE DATABASE "{DATABASE}"')
    try:
        from portal.cli import migrate

        migrate(DATABASE_URL)
        yield
    finally:
        admin_sql(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')


# --- what is billed ----------------------------------------------------------------------------


def changes_of(subscription_index: int) -> list[tuple[int, int, int]]:
    """(day of January, seats from, seats to) of one subscription's January changes, the same
    for the seed and the baseline. 10 % change; one in five of those also reduce, in window."""
    rng = random.Random(subscription_index)
    if rng.random() >= CHANGED_SHARE:
        return []
    day = rng.randint(1, 27)
    added = rng.randint(1, 5)
    if rng.random() < 0.2:
        return [(day, SEATS, SEATS + added), (day + 2, SEATS + added, SEATS + added - 1)]
    return [(day, SEATS, SEATS + added)]


def at_noon(day: date) -> datetime:
    return datetime.combine(day, clock(12), tzinfo=UTC)


# --- seeding -----------------------------------------------------------------------------------


def seed(app: Any) -> int:
    """Bulk inserts, in batches; returns the partner's id."""
    from portal.core.db import get_database
    from portal.features.billing.models import BillingContract
    from portal.features.billing.rules.invoicing import ContractFrequency
    from portal.features.catalogue.models import Product, ProductPrice
    from portal.features.catalogue.rules import (
        BillingFrequency,
        ProductClass,
        ReductionBehaviour,
        SubscriptionType,
        Term,
    )
    from portal.features.licences.models import LicenceChange, Subscription, SubscriptionStatus
    from portal.features.licences.rules import ChangeKind, ChangeState
    from portal.features.tenancy.models import Customer, Partner, PartnerHost

    engine = get_database(app).engine
    with engine.begin() as connection:
        partner_id = connection.execute(
            insert(Partner.__table__).returning(Partner.__table__.c.id),
            {
                "slug": "bench",
                "name": "Bench Cloud",
                "primary_colour": "#0b5cad",
                "secondary_colour": "#1b1f24",
                "support_email": "support@bench.example",
                "timezone": "UTC",
                "created_at": datetime.now(UTC),
            },
        ).scalar_one()
        connection.execute(
            insert(PartnerHost.__table__), {"partner_id": partner_id, "host": "bench.example"}
        )
        product_id = connection.execute(
            insert(Product.__table__).returning(Product.__table__.c.id),
            {
                "partner_id": partner_id,
                "name": "Microsoft 365 Business Standard",
                "description": "",
                "product_class": ProductClass.RESALE,
                "subscription_type": SubscriptionType.LICENCE,
                "provider_offer_id": "CFQ7TTC0LDPB:0001",
                "term": Term.P1Y,
                "billing_frequency": BillingFrequency.MONTHLY,
                "min_quantity": 1,
                "max_quantity": 10_000,
                "reduction": ReductionBehaviour.WITHIN_WINDOW,
                "window_hours": 168,
                "requires_mca": False,
                "active": True,
                "created_at": datetime.now(UTC),
            },
        ).scalar_one()
        connection.execute(
            insert(ProductPrice.__table__),
            {
                "partner_id": partner_id,
                "product_id": product_id,
                "currency": "USD",
                "price_minor": PRICE_MINOR,
                "cost_minor": PRICE_MINOR * 85 // 100,
            },
        )
    now = datetime.now(UTC)
    for first in range(0, CUSTOMERS, SEED_BATCH):
        count = min(SEED_BATCH, CUSTOMERS - first)
        with engine.begin() as connection:
            customer_ids = (
                connection.execute(
                    insert(Customer.__table__).returning(
                        Customer.__table__.c.id, sort_by_parameter_order=True
                    ),
                    [
                        {
                            "partner_id": partner_id,
                            "name": f"Customer {first + n}",
                            "default_currency": "USD",
                            "credit_hold": False,
                            "payment_terms_days": 30,
                            "created_at": now,
                        }
                        for n in range(count)
                    ],
                )
                .scalars()
                .all()
            )
            contract_ids = (
                connection.execute(
                    insert(BillingContract.__table__).returning(
                        BillingContract.__table__.c.id, sort_by_parameter_order=True
                    ),
                    [
                        {
                            "partner_id": partner_id,
                            "customer_id": customer_id,
                            "name": "Microsoft 365",
                            "currency": "USD",
                            "frequency": ContractFrequency.MONTHLY,
                            "anchor_on": ANCHOR,
                            "payment_terms_days": 30,
                            "discount_ppm": 0,
                            "prepaid_discount_ppm": 0,
                            "tax_rate_ppm": 200_000,
                            "autocharge": False,
                            "active": True,
                            "created_at": now,
                        }
                        for customer_id in customer_ids
                    ],
                )
                .scalars()
                .all()
            )
            subscriptions = []
            for n, (customer_id, contract_id) in enumerate(
                zip(customer_ids, contract_ids, strict=True)
            ):
                for k in range(SUBSCRIPTIONS):
                    index = (first + n) * SUBSCRIPTIONS + k
                    changes = changes_of(index)
                    subscriptions.append(
                        {
                            "partner_id": partner_id,
                            "customer_id": customer_id,
                            "product_id": product_id,
                            "provider_key": "demo",
                            "provider_ref": f"bench-{index}",
                            "status": SubscriptionStatus.ACTIVE,
                            "quantity": changes[-1][2] if changes else SEATS,
                            "term": Term.P1Y,
                            "billing_frequency": BillingFrequency.MONTHLY,
                            "currency": "USD",
                            "term_started_at": BOUGHT,
                            "term_ends_on": date(2026, 11, 30),
                            "auto_renew": True,
                            "billing_contract_id": contract_id,
                            "version": 0,
                            "created_at": BOUGHT,
                        }
                    )
            subscription_ids = (
                connection.execute(
                    insert(Subscription.__table__).returning(
                        Subscription.__table__.c.id, sort_by_parameter_order=True
                    ),
                    subscriptions,
                )
                .scalars()
                .all()
            )
            log_rows = []
            for n, subscription_id in enumerate(subscription_ids):
                index = first * SUBSCRIPTIONS + n
                history = [(0, 0, SEATS), *changes_of(index)]
                for sequence, (day, seats_from, seats_to) in enumerate(history, start=1):
                    at = BOUGHT if day == 0 else at_noon(date(2026, 1, day))
                    log_rows.append(
                        {
                            "partner_id": partner_id,
                            "customer_id": subscriptions[n]["customer_id"],
                            "subscription_id": subscription_id,
                            "sequence": sequence,
                            "request_id": f"{index:08d}-{sequence:04d}-0000-0000-000000000000",
                            "kind": ChangeKind.PURCHASE if day == 0 else ChangeKind.QUANTITY,
                            "state": ChangeState.PROVISIONED,
                            "quantity_from": seats_from,
                            "quantity_to": seats_to,
                            "amount_minor": 0,
                            "currency": "USD",
                            "requested_by": "bench",
                            "requested_at": at - timedelta(minutes=1),
                            "attempts": 1,
                            "effective_at": at,
                            "finished_at": at,
                        }
                    )
            connection.execute(insert(LicenceChange.__table__), log_rows)
        log(f"seeded {first + count} customers")
    with engine.connect() as connection:
        connection.execute(text("ANALYZE"))
        connection.commit()
    return int(partner_id)


# --- measuring -------------------------------------------------------------------------------


def reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark of this process's memory (Linux)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def baseline(lines_expected: int) -> float:
    """Lines per second of the pure computation: the same inputs, the domain's ``assemble``,
    no database (inputs are built per contract inside the timing, as the run builds them)."""
    from portal.core.proration import Period
    from portal.features.billing.rules.invoicing import (
        BilledSubscription,
        ContractTerms,
        QuantityChange,
        assemble,
    )

    january = Period(ANCHOR, RUN_ON)
    february = Period(RUN_ON, date(2026, 3, 1))
    terms = ContractTerms("USD", Decimal(0), Decimal("0.2"))
    lines = 0
    started = time.perf_counter()
    for customer in range(CUSTOMERS):
        billed = []
        for k in range(SUBSCRIPTIONS):
            index = customer * SUBSCRIPTIONS + k
            changes = changes_of(index)
            billed.append(
                BilledSubscription(
                    subscription_id=index,
                    description="Microsoft 365 Business Standard",
                    period=february,
                    unit_price_minor=PRICE_MINOR,
                    upfront_discount=Decimal(0),
                    quantity=changes[-1][2] if changes else SEATS,
                    bill_in_advance=True,
                    previous_period=january,
                    changes=[
                        QuantityChange(date(2026, 1, day), seats_from, seats_to, True)
                        for day, seats_from, seats_to in changes
                    ],
                )
            )
        result = assemble(terms, billed, ())
        lines += len(result.invoice.lines) + (len(result.credit.lines) if result.credit else 0)
    elapsed = time.perf_counter() - started
    if lines != lines_expected:
        raise BenchError(f"the baseline computed {lines} lines, the run wrote {lines_expected}")
    return lines / elapsed


def check(app: Any, partner_id: int) -> tuple[int, int]:
    """Invoices and lines written; every invoice's lines add up to its subtotal."""
    from portal.core.db import get_database
    from portal.features.billing.models import CreditNote, CreditNoteLine, Invoice, InvoiceLine

    with get_database(app).sessions() as session:
        invoices = session.scalar(select(func.count(Invoice.id))) or 0
        lines = session.scalar(select(func.count(InvoiceLine.id))) or 0
        credit_lines = session.scalar(select(func.count(CreditNoteLine.id))) or 0
        wrong = session.scalar(
            select(func.count())
            .select_from(Invoice)
            .where(
                Invoice.subtotal_minor
                != select(func.coalesce(func.sum(InvoiceLine.amount_minor), 0))
                .where(InvoiceLine.invoice_id == Invoice.id)
                .scalar_subquery()
            )
        )
        credits = session.scalar(select(func.count(CreditNote.id))) or 0
    if invoices != CUSTOMERS:
        raise BenchError(f"{invoices} invoices for {CUSTOMERS} contracts")
    if wrong:
        raise BenchError(f"{wrong} invoices whose lines do not add up to their subtotal")
    log(f"{invoices} invoices, {lines} lines, {credits} credit notes ({credit_lines} lines)")
    return invoices, lines + credit_lines


def main() -> int:
    os.environ.update(
        {
            "PORTAL_ENV": "production",
            "PORTAL_SECRET_KEY": secrets.token_urlsafe(48),
            "PORTAL_DATABASE_URL": DATABASE_URL,
            "PORTAL_BROKER_URL": "memory://",
            "PORTAL_MAIL_BACKEND": "console",
        }
    )
    try:
        with database():
            from portal import create_app
            from portal.features.billing.services.run import run_billing

            app = create_app()
            with app.app_context():
                seed_started = time.perf_counter()
                partner_id = seed(app)
                log(
                    f"seeded {CUSTOMERS} customers x {SUBSCRIPTIONS} subscriptions in "
                    f"{time.perf_counter() - seed_started:.1f} s"
                )
                resettable = reset_peak_rss()
                started = time.perf_counter()
                (run,) = run_billing(RUN_ON, "bench", partner_id=partner_id)
                elapsed = time.perf_counter() - started
                peak = peak_rss_mb()
                if not resettable:
                    log("could not reset the memory high-water mark: peak includes seeding")
                invoices, lines = check(app, partner_id)
                if run.lines_created + _credit_lines(app) != lines:
                    raise BenchError("the run's counts disagree with the rows written")
                log(f"run: {elapsed:.2f} s, {run.state.value}")
                (again,) = run_billing(RUN_ON, "bench", partner_id=partner_id)
                rerun_new = again.invoices_created
                log(f"rerun: {again.contracts_skipped} contracts already invoiced")
            rate = lines / elapsed
            base = baseline(lines)
    except BenchError as error:
        log(f"FAILED: {error}")
        return 1
    ratio = rate / base
    print(
        f"bench: billing lines_per_s={rate:.0f} invoices={invoices} peak_rss_mb={peak:.0f} "
        f"rerun_new_invoices={rerun_new} baseline_lines_per_s={base:.0f} ratio={ratio:.2f}"
    )
    met = rate >= TARGET_LINES_PER_S and peak < TARGET_PEAK_MB and rerun_new == 0
    print(
        f"bench: target lines_per_s>={TARGET_LINES_PER_S} peak_rss_mb<{TARGET_PEAK_MB} "
        f"rerun_new_invoices=0 {'met' if met else 'NOT met'}"
    )
    return 0


def _credit_lines(app: Any) -> int:
    from portal.core.db import get_database
    from portal.features.billing.models import CreditNoteLine

    with get_database(app).sessions() as session:
        return session.scalar(select(func.count(CreditNoteLine.id))) or 0


if __name__ == "__main__":
    with suppress(KeyboardInterrupt):
        sys.exit(main())
