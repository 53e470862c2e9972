"""Money as integer minor units of an ISO 4217 currency; Decimal only, never float.

The billing issue extends this module (rounding, allocation); this part converts amounts for
display.
"""

from __future__ import annotations

from decimal import Decimal

from babel.numbers import get_currency_precision


def exponent(currency: str) -> int:
    """Decimal places of the currency's minor unit (JPY 0, USD 2, KWD 3)."""
    return int(get_currency_precision(currency.upper()))


def to_major(amount_minor: int, currency: str) -> Decimal:
    return Decimal(amount_minor).scaleb(-exponent(currency))
