"""Billing periods and proration by day (DESIGN §4, Billing): the building blocks of invoices."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from portal.core.proration import Period, billing_period, prorated_minor, remaining_days

MARCH = Period(date(2025, 3, 1), date(2025, 4, 1))  # 31 days


@pytest.mark.parametrize(
    ("anchor", "months", "on", "expected"),
    [
        # anniversaries of 31 January: the end of February, then 31 March again
        (date(2025, 1, 31), 1, date(2025, 2, 10), Period(date(2025, 1, 31), date(2025, 2, 28))),
        (date(2025, 1, 31), 1, date(2025, 3, 1), Period(date(2025, 2, 28), date(2025, 3, 31))),
        (date(2024, 1, 31), 1, date(2024, 2, 28), Period(date(2024, 1, 31), date(2024, 2, 29))),
        (date(2024, 1, 31), 1, date(2024, 2, 29), Period(date(2024, 2, 29), date(2024, 3, 31))),
        # quarterly and annual
        (date(2025, 1, 15), 3, date(2025, 5, 1), Period(date(2025, 4, 15), date(2025, 7, 15))),
        (date(2024, 2, 29), 12, date(2025, 3, 1), Period(date(2025, 2, 28), date(2026, 2, 28))),
        # the first period for a day before the anchor
        (date(2025, 6, 1), 1, date(2025, 5, 1), Period(date(2025, 6, 1), date(2025, 7, 1))),
        # the period's first day is in it, its end is not
        (date(2025, 1, 1), 1, date(2025, 2, 1), Period(date(2025, 2, 1), date(2025, 3, 1))),
    ],
)
def test_billing_period(anchor: date, months: int, on: date, expected: Period) -> None:
    assert billing_period(anchor, months, on) == expected


def test_a_billing_period_is_at_least_a_month() -> None:
    with pytest.raises(ValueError, match="at least one month"):
        billing_period(date(2025, 1, 1), 0, date(2025, 1, 1))


@pytest.mark.parametrize(
    ("day", "days"),
    [
        (date(2025, 2, 1), 31),  # before the period: all of it
        (date(2025, 3, 1), 31),  # its first day
        (date(2025, 3, 10), 22),  # the day of the change counts
        (date(2025, 3, 31), 1),  # the last day
        (date(2025, 4, 1), 0),  # its end: nothing
        (date(2025, 5, 1), 0),
    ],
)
def test_remaining_days(day: date, days: int) -> None:
    assert remaining_days(MARCH, day) == days


@pytest.mark.parametrize(
    ("price", "seats", "day", "amount"),
    [
        (1000, 2, date(2025, 3, 10), 1419),  # 2000 x 22/31 = 1419.35
        (1000, 1, date(2025, 3, 17), 484),  # 1000 x 15/31 = 483.87
        (31, 1, date(2025, 3, 16), 16),  # 31 x 16/31 = 16 exactly
        (1, 1, date(2025, 3, 16), 1),  # 16/31 = 0.516: half up
        (1, 1, date(2025, 3, 17), 0),  # 15/31 = 0.48
        (62, 1, date(2025, 3, 16), 32),
        (Decimal("849.15"), 3, date(2025, 3, 10), 1808),  # 2547.45 x 22/31 = 1807.87
        (1000, 0, date(2025, 3, 10), 0),
        (1000, 5, date(2025, 4, 1), 0),
        (1000, 5, date(2025, 2, 1), 5000),
        (10**6, 10_000, date(2025, 3, 2), 9677419355),  # 10^10 x 30/31 = 9677419354.84
    ],
)
def test_prorated_minor(price: int | Decimal, seats: int, day: date, amount: int) -> None:
    assert prorated_minor(price, seats, MARCH, day) == amount


def test_a_tie_is_rounded_up() -> None:
    # 1 x 1 x 15/30 = 0.5 -> 1 (not to even)
    april = Period(date(2025, 4, 1), date(2025, 5, 1))
    assert prorated_minor(1, 1, april, date(2025, 4, 16)) == 1
    assert prorated_minor(5, 1, april, date(2025, 4, 16)) == 3  # 2.5 -> 3


@pytest.mark.parametrize(("price", "seats"), [(-1, 1), (1, -1)])
def test_negative_prices_and_seats_are_refused(price: int, seats: int) -> None:
    with pytest.raises(ValueError, match="non-negative"):
        prorated_minor(price, seats, MARCH, date(2025, 3, 10))


def test_an_empty_period_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one day"):
        prorated_minor(1, 1, Period(date(2025, 3, 1), date(2025, 3, 1)), date(2025, 3, 1))


def test_free_seats_and_one_day_periods_are_fine() -> None:
    assert prorated_minor(0, 5, MARCH, date(2025, 3, 10)) == 0
    one_day = Period(date(2025, 3, 1), date(2025, 3, 2))
    assert prorated_minor(1000, 2, one_day, date(2025, 3, 1)) == 2000


def test_large_figures_keep_every_digit() -> None:
    # (10^25 + 1) x 10^4 x 22/31: 31 digits before the division, more than the default
    # Decimal context's 28; the exact half-up answer by integers
    price, seats = 10**25 + 1, 10_000
    exact = (price * seats * 22 * 2 + 31) // 62
    assert prorated_minor(price, seats, MARCH, date(2025, 3, 10)) == exact


@pytest.mark.parametrize(
    ("anchor", "months", "on", "expected"),
    [
        # the anchor's month later in the year than the day's
        (date(2024, 11, 15), 1, date(2025, 2, 20), Period(date(2025, 2, 15), date(2025, 3, 15))),
        # years after the anchor, the end of the month
        (date(2020, 1, 31), 1, date(2025, 3, 5), Period(date(2025, 2, 28), date(2025, 3, 31))),
        # found two periods after the first guess
        (date(2025, 1, 10), 1, date(2025, 3, 20), Period(date(2025, 3, 10), date(2025, 4, 10))),
        (date(2019, 5, 20), 12, date(2025, 5, 19), Period(date(2024, 5, 20), date(2025, 5, 20))),
    ],
)
def test_billing_period_far_from_the_anchor(
    anchor: date, months: int, on: date, expected: Period
) -> None:
    assert billing_period(anchor, months, on) == expected
