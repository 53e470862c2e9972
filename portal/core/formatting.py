"""Amounts and dates in the reader's language: the one place money is formatted.

Services (mail) and templates (through :mod:`portal.web.filters`) both use these.
"""

from __future__ import annotations

import re
from datetime import date, datetime

from babel.numbers import get_currency_precision
from flask_babel import format_currency, format_date, format_datetime, get_locale

from portal.core.money import exponent, to_major


def money(amount_minor: int | None, currency: str) -> str:
    """An amount in the reader's language with exactly the currency's ISO 4217 decimals."""
    if amount_minor is None:
        return "—"
    amount = to_major(amount_minor, currency)
    digits = exponent(currency)
    if digits == get_currency_precision(currency.upper()):
        return str(format_currency(amount, currency))
    # CLDR (Babel) disagrees with ISO 4217 on a dozen currencies (IQD, LAK, RSD...): the
    # locale's own pattern, with the ISO number of decimals, so no minor unit is hidden
    pattern = _with_decimals(get_locale().currency_formats["standard"].pattern, digits)
    return str(format_currency(amount, currency, format=pattern, currency_digits=False))


def _with_decimals(pattern: str, digits: int) -> str:
    decimals = "." + "0" * digits if digits else ""
    return re.sub(r"\.0+|(?<=0)(?=[^0#,.]|$)", decimals, pattern, count=1)


def when(value: datetime | None, style: str = "medium") -> str:
    """A moment in the reader's language and the partner's time zone, with the zone named."""
    if value is None:
        return "—"
    return f"{format_datetime(value, style)} {format_datetime(value, 'zzz')}"


def day(value: date | None, style: str = "medium") -> str:
    """A calendar day in the reader's language (no time zone: a day is the partner's day)."""
    return "—" if value is None else str(format_date(value, style))
