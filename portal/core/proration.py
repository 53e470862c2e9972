"""Billing periods and proration by day (DESIGN §4, Billing).

A change that took effect on day *c* of a period [*s*, *e*) is charged or credited
(*e* - *c*) / (*e* - *s*) of the period price per seat; the day of the change counts. The
amount is rounded once, half up, to the currency's minor unit. Dates are in the partner's time
zone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal, localcontext

from dateutil.relativedelta import relativedelta

from portal.core.money import MONEY_CONTEXT, round_minor


@dataclass(frozen=True)
class Period:
    """The days [start, end): ``end`` is the first day of the next period."""

    start: date
    end: date

    @property
    def days(self) -> int:
        return (self.end - self.start).days


def billing_period(anchor: date, months: int, on: date) -> Period:
    """The period of ``months`` months, counted from ``anchor``, that contains ``on``.

    Periods are anniversaries of the anchor (a subscription bought on 31 January bills from
    the 28th or 29th of February, then from 31 March), computed from the anchor every time so
    short months never shift later periods.
    """
    if months < 1:
        raise ValueError("a billing period is at least one month")
    if on < anchor:
        return Period(anchor, anchor + relativedelta(months=months))
    elapsed = (on.year - anchor.year) * 12 + (on.month - anchor.month)
    index = max(elapsed // months - 1, 0)
    while True:
        start = anchor + relativedelta(months=index * months)
        end = anchor + relativedelta(months=(index + 1) * months)
        if start <= on < end:
            return Period(start, end)
        index += 1


def remaining_days(period: Period, change_day: date) -> int:
    """The days from ``change_day`` (which counts) to the period's end, within the period:
    the whole period for a day before it, 0 for a day on or after its end."""
    return min(max((period.end - change_day).days, 0), period.days)


def prorated_minor(
    unit_price_minor: int | Decimal, seats: int, period: Period, change_day: date
) -> int:
    """The prorated amount, in minor units, for ``seats`` seats from ``change_day`` to the
    period's end: unit price * seats * (e - c) / (e - s), rounded half up once.

    ``unit_price_minor`` may be a Decimal with a fraction of a minor unit (a price after an
    upfront discount); it is not rounded before the line is. A change before the period counts
    as the whole period; on or after its end, nothing.
    """
    if seats < 0 or unit_price_minor < 0:
        raise ValueError("prorate a non-negative price for a non-negative number of seats")
    if period.days <= 0:
        raise ValueError("a billing period is at least one day")
    with localcontext(MONEY_CONTEXT):
        amount = (
            Decimal(unit_price_minor)
            * seats
            * Decimal(remaining_days(period, change_day))
            / Decimal(period.days)
        )
    return round_minor(amount)
