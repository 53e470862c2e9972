"""Money as integer minor units of an ISO 4217 currency; Decimal only, never float.

Amounts are stored and passed around as ``int`` minor units (cents, yen, fils) with a currency
code. Intermediate amounts (a prorated share, a rate applied, usage priced with a many-decimal
unit price) are exact :class:`~decimal.Decimal` values computed in :data:`MONEY_CONTEXT`.

The rounding rule (DESIGN §4, Money), in this one place:

    An amount becomes printable minor units exactly once, by :func:`round_minor` (or
    :func:`to_minor`, which calls it): round half up, i.e. to the nearest minor unit, a tie
    going away from zero (0.5 → 1, -0.5 → -1), at the currency's ISO 4217 exponent.

Every invoice line is rounded once; the invoice's subtotal is the sum of the rounded lines,
its tax is the rate applied to that subtotal and rounded once, its total their sum, so the
printed lines always add up to the printed total. Splitting an amount over several parts
(revenue per month) is :func:`allocate`, which never rounds each part on its own and so never
loses or invents a minor unit.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import (
    ROUND_HALF_UP,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
    localcontext,
)

# 60 significant digits: far more than any amount here needs (10^6 minor units x 10^4 seats x
# 366 days is 13 digits), so a quotient is rounded at its 60th digit, which can never turn
# an exact value into a tie at the minor unit; trapping makes a bad operation loud.
MONEY_CONTEXT = Context(
    prec=60,
    rounding=ROUND_HALF_UP,
    traps=[InvalidOperation, DivisionByZero, Overflow],
)


def _each(codes: str, places: int) -> dict[str, int]:
    return dict.fromkeys(codes.split(), places)


# ISO 4217 list one (published 2026-01-01): the decimals of each currency's minor unit.
# Babel's CLDR data is not used for this: CLDR gives 0 for AFN, ALL, IQD, IRR, KPW, LAK, LBP,
# MGA, MMK, RSD, SOS, SYP and YER, where ISO 4217 (and the banks) use 2, or 3 for IQD.
_ISO_4217_EXPONENTS: dict[str, int] = {
    **_each("BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF", 0),
    **_each(
        "AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BMD BND BOB BOV BRL BSD BTN BWP BYN"
        " BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD"
        " FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW"
        " KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR"
        " MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG"
        " SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD"
        " USN UYU UZS VED VES WST XAD XCD XCG YER ZAR ZMW ZWG",
        2,
    ),
    **_each("BHD IQD JOD KWD LYD OMR TND", 3),
    **_each("CLF UYW", 4),
    # withdrawn from list one on 2026-01-01 (Bulgaria joined the euro) but still a tender
    # currency in Babel's data, so the catalogue may hold BGN prices
    "BGN": 2,
}

SUPPORTED_CURRENCIES: frozenset[str] = frozenset(_ISO_4217_EXPONENTS)


def exponent(currency: str) -> int:
    """Decimal places of the currency's minor unit (JPY 0, USD 2, KWD 3), per ISO 4217."""
    code = currency.strip().upper()
    try:
        return _ISO_4217_EXPONENTS[code]
    except KeyError:
        raise ValueError(
            f"{currency!r} is not an ISO 4217 currency with a minor unit (like USD, JPY, KWD)"
        ) from None


def round_minor(amount_minor: Decimal) -> int:
    """THE rounding rule: an exact amount of minor units to a whole number of them, half up."""
    _require_decimal(amount_minor)
    with localcontext(MONEY_CONTEXT):
        return int(amount_minor.to_integral_value(rounding=ROUND_HALF_UP))


def to_minor(amount: Decimal, currency: str) -> int:
    """An amount in major units (``Decimal("12.345")`` USD) to minor units (1235), rounded once
    by :func:`round_minor`."""
    _require_decimal(amount)
    with localcontext(MONEY_CONTEXT):
        return round_minor(amount.scaleb(exponent(currency)))


def parse_major(text: str, currency: str) -> int:
    """An amount typed in major units (``"2500.50"``) as minor units (250050): plain digits
    with at most the currency's decimals, 0 or more. Anything else (a word, a sign, more
    decimals than the currency has, infinity) raises ValueError; nothing is rounded."""
    try:
        amount = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"{text!r} is not an amount") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"{text!r} is not an amount of 0 or more")
    minor = amount.scaleb(exponent(currency))
    if minor != minor.to_integral_value():
        raise ValueError(f"{text!r} has more decimals than {currency}")
    return int(minor)


def to_major(amount_minor: int, currency: str) -> Decimal:
    """Minor units to major units, exactly: 1234 USD is ``Decimal("12.34")``, 1234 JPY 1234."""
    return Decimal(amount_minor).scaleb(-exponent(currency))


def apply_rate(amount_minor: int, rate: Decimal) -> int:
    """``rate`` (a fraction: ``Decimal("0.2")`` is 20 %) of an amount, rounded once."""
    _require_decimal(rate)
    with localcontext(MONEY_CONTEXT):
        return round_minor(Decimal(amount_minor) * rate)


def require_fraction(rate: Decimal, what: str) -> Decimal:
    """``rate`` itself when it is a Decimal between 0 and 1 (0 % to 100 %); ValueError if not."""
    _require_decimal(rate)
    if not rate.is_finite() or not Decimal(0) <= rate <= Decimal(1):
        raise ValueError(f"{what} must be a fraction between 0 and 1, not {rate}")
    return rate


def allocate(total_minor: int, weights: Sequence[int]) -> list[int]:
    """Split ``total_minor`` in proportion to ``weights`` so the parts add up to it exactly.

    Largest remainder: each part gets the whole minor units of its exact share, and the units
    left over go one each to the parts with the largest fractional remainders, the earlier
    part first on a tie (so the result is the same every time).

    - A negative total is split like its absolute value and every part negated: the parts of
      -100 are the parts of 100 with the sign changed.
    - A zero weight always gets 0. Weights must be non-negative integers (days, seats, minor
      units). If every weight is zero, only a zero total can be split (all parts 0); an empty
      list of weights likewise takes only a zero total.
    """
    if any(isinstance(weight, bool) or not isinstance(weight, int) for weight in weights):
        raise TypeError("allocate weights must be whole numbers (int)")
    if any(weight < 0 for weight in weights):
        raise ValueError("allocate weights must not be negative")
    weight_sum = sum(weights)
    if weight_sum == 0:
        if total_minor != 0:
            raise ValueError(f"cannot split {total_minor} over weights that are all zero")
        return [0] * len(weights)
    sign = -1 if total_minor < 0 else 1
    magnitude = abs(total_minor)
    # integer arithmetic: exact shares without any rounding
    floors = [magnitude * weight // weight_sum for weight in weights]
    remainders = [magnitude * weight % weight_sum for weight in weights]
    left = magnitude - sum(floors)
    by_remainder = sorted(range(len(weights)), key=lambda index: (-remainders[index], index))
    for index in by_remainder[:left]:
        floors[index] += 1
    return [sign * part for part in floors]


def _require_decimal(value: object) -> None:
    # a float here would already have lost the exact amount: refuse it rather than guess
    if not isinstance(value, Decimal):
        raise TypeError(f"money arithmetic takes Decimal, not {type(value).__name__}")
