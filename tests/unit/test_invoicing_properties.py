"""Property tests of the billing domain (reliability-security.md block C: C1, C2, C3).

C1: for any sequence of changes in a period, the prorated lines add up to what charging the
    seats day by day would cost, within one minor unit per line (half a unit, in fact: each
    line is rounded once), and no line is negative unless it is a credit or the discount.
C2: the printed lines always add up to the printed total, to the minor unit, on the invoice and
    on the credit note, and the tax is the rate of the printed subtotal rounded once.
C3: exponents round-trip (and JPY is never x100): see also tests/unit/test_money.py.

The reference figures here are computed with exact fractions (:class:`fractions.Fraction`),
day by day, not with the formula the code uses.

Examples per property: the ``billing-ci`` Hypothesis profile runs 5,000 (CI=true), a developer
run 500 (``billing-dev``), and ``BILLING_EXAMPLES=100000`` the nightly 100,000.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction

from dateutil.relativedelta import relativedelta
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portal.core.money import exponent, to_major, to_minor
from portal.core.proration import Period
from portal.features.billing.rules.invoicing import (
    BilledSubscription,
    ContractTerms,
    DraftDocument,
    LineKind,
    QuantityChange,
    UsageCharge,
    assemble,
    credit_for_void,
)
from portal.features.billing.rules.revenue import deferred_revenue

settings.register_profile(
    "billing-dev",
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("billing-ci", settings.get_profile("billing-dev"), max_examples=5000)
settings.register_profile(
    "billing-nightly",
    settings.get_profile("billing-dev"),
    max_examples=int(os.environ.get("BILLING_EXAMPLES", "100000")),
)


def billing_profile() -> settings:
    if os.environ.get("BILLING_EXAMPLES"):
        return settings.get_profile("billing-nightly")
    ci = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
    return settings.get_profile("billing-ci" if ci else "billing-dev")


BILLING = billing_profile()
HALF = Fraction(1, 2)

CURRENCIES = ["USD", "EUR", "JPY", "KRW", "KWD", "BHD", "CLF", "IQD"]

# periods of 28 to 31 days (and some quarters and years) starting on any day of 2019-2031,
# so every kind of February, leap day and month end is drawn
FIRST_DAY = date(2019, 1, 1)
# a day offset rather than st.dates, which is slower to draw
period_starts = st.integers(0, (date(2031, 12, 31) - FIRST_DAY).days).map(
    lambda offset: FIRST_DAY + timedelta(days=offset)
)
period_months = st.sampled_from([1, 1, 1, 1, 3, 12])
prices = st.integers(min_value=0, max_value=10**6)
quantities = st.integers(min_value=1, max_value=10_000)


def scaled(low: int, high: int, places: int) -> st.SearchStrategy[Decimal]:
    """Decimals with ``places`` decimals between low and high * 10^-places (faster to draw
    than ``st.decimals``)."""
    return st.integers(low, high).map(lambda units: Decimal(units).scaleb(-places))


fractions = st.one_of(
    st.just(Decimal(0)),
    st.sampled_from([Decimal("0.05"), Decimal("0.1"), Decimal("0.15"), Decimal("0.2")]),
    scaled(0, 10_000, 4),
)
tax_rates = st.one_of(
    st.sampled_from([Decimal(0), Decimal("0.05"), Decimal("0.2"), Decimal("0.21")]),
    scaled(0, 3_000, 4),
)


@st.composite
def periods(draw: st.DrawFn) -> Period:
    start = draw(period_starts)
    return Period(start, start + relativedelta(months=draw(period_months)))


PERIODS = periods()


@functools.cache
def change_days(days: int, most: int) -> st.SearchStrategy[list[int]]:
    """Up to ``most`` days (0-based) of a period of ``days`` days."""
    return st.lists(st.integers(0, days - 1), max_size=most)


@st.composite
def subscriptions(
    draw: st.DrawFn, subscription_id: int = 1, most_changes: int = 6
) -> BilledSubscription:
    previous = draw(PERIODS)
    new = Period(previous.end, previous.end + relativedelta(months=1))
    offsets = sorted(draw(change_days(previous.days, most_changes)))
    seats = draw(quantities)
    changes = []
    for offset in offsets:
        target = draw(quantities)
        if target == seats:  # a change changes something (no filter: it slows drawing)
            target = seats % 10_000 + 1
        day = previous.start + timedelta(days=offset)
        changes.append(QuantityChange(day, seats, target, draw(st.booleans())))
        seats = target
    return BilledSubscription(
        subscription_id=subscription_id,
        description=f"Subscription {subscription_id}",
        period=new,
        unit_price_minor=draw(prices),
        upfront_discount=draw(fractions),
        quantity=seats,
        bill_in_advance=draw(st.booleans()),
        previous_period=previous,
        changes=changes,
    )


@st.composite
def usage_charges(draw: st.DrawFn, currency: str) -> UsageCharge:
    return UsageCharge(
        subscription_id=None,
        description="Azure plan",
        period=draw(PERIODS),
        quantity=draw(scaled(0, 10**12, 6)),
        unit_price=draw(scaled(0, 10**10, 7)),
        currency=currency,
    )


@dataclass
class Pools:
    """The seats the customer has paid for on a day: paid upfront (at the discounted price) and
    added during the period (at list price)."""

    upfront: int
    added: int = 0


def day_by_day_change_charge(subscription: BilledSubscription) -> Fraction:
    """What the period's changes are worth, charging the paid-for seats day by day, less the
    seats billed in advance at its start (exact)."""
    previous = subscription.previous_period
    assert previous is not None
    list_price = Fraction(subscription.unit_price_minor)
    upfront_price = list_price * (1 - Fraction(subscription.upfront_discount))
    changes = sorted(subscription.changes, key=lambda change: change.day)
    at_start = changes[0].quantity_from if changes else 0
    pools = Pools(upfront=at_start)
    # seat-days of each pool, counted one day at a time
    upfront_seat_days = added_seat_days = 0
    pending = list(changes)
    day = previous.start
    while day < previous.end:
        while pending and pending[0].day <= day:
            change = pending.pop(0)
            if change.delta > 0:
                pools.added += change.delta
            elif change.credit_allowed:
                removed = -change.delta
                from_added = min(removed, pools.added)
                pools.added -= from_added
                pools.upfront -= removed - from_added
        upfront_seat_days += pools.upfront
        added_seat_days += pools.added
        day += timedelta(days=1)
    total = (upfront_seat_days * upfront_price + added_seat_days * list_price) / previous.days
    return total - at_start * upfront_price


def prorated(document: DraftDocument | None, kind: LineKind) -> list[int]:
    if document is None:
        return []
    return [line.amount_minor for line in document.lines if line.kind is kind]


@BILLING
@given(subscriptions())
def test_c1_prorated_lines_add_up_to_the_day_by_day_charge(
    subscription: BilledSubscription,
) -> None:
    assembled = assemble(ContractTerms("USD", Decimal(0), Decimal(0)), [subscription], [])
    additions = prorated(assembled.invoice, LineKind.ADDITION)
    credits = prorated(assembled.credit, LineKind.REDUCTION_CREDIT)
    lines = len(additions) + len(credits)
    exact = day_by_day_change_charge(subscription)
    assert abs(sum(additions) - sum(credits) - exact) <= HALF * lines
    for document in (assembled.invoice, assembled.credit):
        for line in () if document is None else document.lines:
            # no negative line unless the discount; credits are positive amounts on the note
            assert line.amount_minor >= 0
            if line.days is not None:
                assert line.total_days == subscription.previous_period.days  # type: ignore[union-attr]
                exact_line = (
                    Fraction(line.quantity)
                    * Fraction(line.unit_price)
                    * 10 ** exponent("USD")
                    * line.days
                    / line.total_days
                )
                assert abs(line.amount_minor - exact_line) <= HALF


# built once: a strategy built inside a draw is validated again at every example
CONTRACT_SUBSCRIPTIONS = [subscriptions(index, most_changes=3) for index in (1, 2, 3)]
USAGE = {currency: st.lists(usage_charges(currency), max_size=2) for currency in CURRENCIES}
CONTRACT_CURRENCIES = st.sampled_from(CURRENCIES)
SUBSCRIPTION_COUNTS = st.integers(min_value=0, max_value=3)


@st.composite
def contracts(
    draw: st.DrawFn,
) -> tuple[ContractTerms, list[BilledSubscription], list[UsageCharge]]:
    currency = draw(CONTRACT_CURRENCIES)
    terms = ContractTerms(currency, draw(fractions), draw(tax_rates))
    count = draw(SUBSCRIPTION_COUNTS)
    billed = [draw(strategy) for strategy in CONTRACT_SUBSCRIPTIONS[:count]]
    usage = draw(USAGE[currency])
    return terms, billed, usage


def half_up(value: Fraction) -> int:
    """Round half away from zero, the reference way: floor(|x| + 1/2) with the sign."""
    magnitude = int(abs(value) + HALF)
    return magnitude if value >= 0 else -magnitude


def assert_printed_figures_agree(document: DraftDocument, terms: ContractTerms) -> None:
    amounts = [line.amount_minor for line in document.lines]
    assert document.subtotal_minor == sum(amounts)
    assert document.tax_minor == half_up(Fraction(terms.tax_rate) * document.subtotal_minor)
    assert document.total_minor == document.subtotal_minor + document.tax_minor
    # as printed, in major units: the lines and the tax add up to the total, digit for digit
    currency = document.currency
    printed = [to_major(amount, currency) for amount in amounts]
    assert sum(printed, Decimal(0)) == to_major(document.subtotal_minor, currency)
    assert to_major(document.subtotal_minor, currency) + to_major(
        document.tax_minor, currency
    ) == to_major(document.total_minor, currency)
    for line in document.lines:
        if line.kind is LineKind.DISCOUNT:
            assert line.amount_minor <= 0
        else:
            assert line.amount_minor >= 0
    charges = sum(line.amount_minor for line in document.lines if line.kind != LineKind.DISCOUNT)
    discounts = [line for line in document.lines if line.kind is LineKind.DISCOUNT]
    expected_discount = half_up(Fraction(terms.discount) * charges)
    assert sum(line.amount_minor for line in discounts) == -expected_discount
    assert len(discounts) <= 1
    assert document.subtotal_minor >= 0


@BILLING
@given(contracts())
def test_c2_printed_lines_always_add_up_to_the_printed_total(
    contract: tuple[ContractTerms, list[BilledSubscription], list[UsageCharge]],
) -> None:
    terms, billed, usage = contract
    assembled = assemble(terms, billed, usage)
    assert_printed_figures_agree(assembled.invoice, terms)
    if assembled.credit is not None:
        assert_printed_figures_agree(assembled.credit, terms)
        assert {line.kind for line in assembled.credit.lines} <= {
            LineKind.REDUCTION_CREDIT,
            LineKind.DISCOUNT,
        }
    assert all(line.kind != LineKind.REDUCTION_CREDIT for line in assembled.invoice.lines)
    void = credit_for_void(assembled.invoice)
    assert void.total_minor == assembled.invoice.total_minor
    assert void.lines == assembled.invoice.lines
    # each usage line is rounded once from its exact price
    usage_lines = [line for line in assembled.invoice.lines if line.kind is LineKind.USAGE]
    for line, charge in zip(usage_lines, usage, strict=True):
        exact = (
            Fraction(charge.quantity) * Fraction(charge.unit_price) * 10 ** exponent(terms.currency)
        )
        assert line.amount_minor == half_up(exact)


@settings(BILLING, max_examples=min(BILLING.max_examples, 1000))
@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_c3_jpy_is_never_times_100(amount: int) -> None:
    assert to_minor(Decimal(amount), "JPY") == amount
    assert to_major(amount, "JPY") == amount


@settings(BILLING, max_examples=min(BILLING.max_examples, 1000))
@given(st.integers(min_value=-(10**12), max_value=10**12), PERIODS)
def test_deferred_revenue_months_sum_exactly_to_the_line(amount: int, period: Period) -> None:
    months = deferred_revenue(amount, period)
    assert sum(month.amount_minor for month in months) == amount
    assert sum(month.days for month in months) == period.days
    assert [month.month for month in months] == sorted({month.month for month in months})
    for month in months:
        assert month.month.day == 1
        assert abs(month.amount_minor - Fraction(amount * month.days, period.days)) < 1
