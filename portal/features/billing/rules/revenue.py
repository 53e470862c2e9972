"""Revenue recognition: an invoice line's amount spread over the calendar months of its period.

An annual or quarterly line is billed at once but earned day by day: each calendar month
recognises the share of the amount for the period's days that fall in it. The shares are split
with :func:`portal.core.money.allocate`, so the months add up to the line exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from dateutil.relativedelta import relativedelta

from portal.core.money import allocate
from portal.core.proration import Period


@dataclass(frozen=True)
class MonthRevenue:
    """``amount_minor`` recognised in the calendar month starting ``month``, for ``days`` of
    the period's days."""

    month: date
    days: int
    amount_minor: int


def deferred_revenue(amount_minor: int, period: Period) -> tuple[MonthRevenue, ...]:
    """The recognition schedule of ``amount_minor`` over ``period``, by days, month by month.

    A 1 January to 1 January line gives 12 months in proportion to their days; a line from
    15 January gives 13 (part of January at each end). A negative amount (a credit) gives
    negative months. The months always sum to ``amount_minor``.
    """
    if period.days <= 0:
        raise ValueError("revenue is recognised over a period of at least one day")
    months: list[date] = []
    days: list[int] = []
    month = period.start.replace(day=1)
    while month < period.end:
        following = month + relativedelta(months=1)
        overlap = (min(following, period.end) - max(month, period.start)).days
        months.append(month)
        days.append(overlap)
        month = following
    parts = allocate(amount_minor, days)
    return tuple(
        MonthRevenue(month=start, days=count, amount_minor=part)
        for start, count, part in zip(months, days, parts, strict=True)
    )
