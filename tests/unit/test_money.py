"""Money: ISO 4217 exponents, the one rounding rule, rates, allocation (C3 and allocate)."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portal.core.money import (
    SUPPORTED_CURRENCIES,
    allocate,
    apply_rate,
    exponent,
    require_fraction,
    round_minor,
    to_major,
    to_minor,
)

currencies = st.sampled_from(sorted(SUPPORTED_CURRENCIES))


@pytest.mark.parametrize(
    ("currency", "places"),
    [
        ("USD", 2),
        ("eur", 2),
        ("JPY", 0),
        ("KRW", 0),
        ("KWD", 3),
        ("BHD", 3),
        ("CLF", 4),
        # where Babel's CLDR data says 0 and ISO 4217 does not
        ("IQD", 3),
        ("LAK", 2),
        ("RSD", 2),
        ("BGN", 2),
    ],
)
def test_exponent_is_iso_4217(currency: str, places: int) -> None:
    assert exponent(currency) == places


@pytest.mark.parametrize("code", ["XYZ", "DEM", "XAU", "", "US"])
def test_an_unknown_currency_is_refused_clearly(code: str) -> None:
    with pytest.raises(ValueError, match="not an ISO 4217 currency"):
        exponent(code)


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        (Decimal("12.345"), "USD", 1235),  # a tie goes up
        (Decimal("12.344999"), "USD", 1234),
        (Decimal("-12.345"), "USD", -1235),  # and away from zero below it
        (Decimal("1"), "JPY", 1),  # JPY is never x100
        (Decimal("1499.5"), "JPY", 1500),
        (Decimal("0.0005"), "KWD", 1),
        (Decimal("0.0004999"), "KWD", 0),
        (Decimal("7"), "KWD", 7000),
    ],
)
def test_to_minor_rounds_half_up_at_the_currency_exponent(
    amount: Decimal, currency: str, minor: int
) -> None:
    assert to_minor(amount, currency) == minor


@pytest.mark.parametrize(
    ("amount", "rounded"),
    [
        (Decimal("0.5"), 1),
        (Decimal("1.5"), 2),
        (Decimal("2.5"), 3),  # not banker's rounding
        (Decimal("-0.5"), -1),
        (Decimal("2.4999999999999999999999999"), 2),
        (Decimal("123456789012345678901234567890.5"), 123456789012345678901234567891),
    ],
)
def test_round_minor_is_half_up_once(amount: Decimal, rounded: int) -> None:
    assert round_minor(amount) == rounded


def test_floats_are_refused() -> None:
    with pytest.raises(TypeError, match="Decimal"):
        to_minor(0.1, "USD")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Decimal"):
        round_minor(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Decimal"):
        apply_rate(100, 0.2)  # type: ignore[arg-type]


def test_apply_rate_rounds_the_product_once() -> None:
    assert apply_rate(19333, Decimal("0.25")) == 4833  # 4833.25
    assert apply_rate(10, Decimal("0.25")) == 3  # 2.5 rounds up
    assert apply_rate(-10, Decimal("0.25")) == -3


@pytest.mark.parametrize("rate", [Decimal(0), Decimal("0.2"), Decimal(1)])
def test_rates_from_zero_to_one_are_fractions(rate: Decimal) -> None:
    assert require_fraction(rate, "the discount") == rate


@pytest.mark.parametrize("rate", [Decimal("-0.01"), Decimal("1.01"), Decimal("NaN")])
def test_rates_outside_zero_to_one_are_refused(rate: Decimal) -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        require_fraction(rate, "the tax rate")


@pytest.mark.parametrize(
    ("total", "weights", "parts"),
    [
        (100, [1, 1, 1], [34, 33, 33]),  # the tie goes to the earlier part
        (1, [1, 1], [1, 0]),
        (-100, [1, 1, 1], [-34, -33, -33]),
        (10, [0, 3, 0, 1], [0, 8, 0, 2]),  # 7.5 and 2.5: tie, the earlier gets the unit
        (0, [0, 0], [0, 0]),
        (0, [], []),
        (5, [31, 28, 31], [2, 1, 2]),
    ],
)
def test_allocate_examples(total: int, weights: list[int], parts: list[int]) -> None:
    assert allocate(total, weights) == parts


def test_allocate_refuses_what_it_cannot_split() -> None:
    with pytest.raises(ValueError, match="all zero"):
        allocate(1, [0, 0])
    with pytest.raises(ValueError, match="all zero"):
        allocate(1, [])
    with pytest.raises(ValueError, match="negative"):
        allocate(10, [1, -1])
    with pytest.raises(TypeError, match="whole numbers"):
        allocate(10, [Decimal(1), 2])  # type: ignore[list-item]


@given(currencies, st.integers(min_value=-(10**15), max_value=10**15))
def test_every_currency_round_trips_minor_major_minor(currency: str, amount: int) -> None:
    major = to_major(amount, currency)
    assert to_minor(major, currency) == amount
    assert major == Decimal(amount) / Decimal(10) ** exponent(currency)


@given(
    st.integers(min_value=-(10**12), max_value=10**12),
    st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=40).filter(any),
)
def test_allocate_never_loses_or_invents_a_unit(total: int, weights: list[int]) -> None:
    parts = allocate(total, weights)
    assert sum(parts) == total
    assert len(parts) == len(weights)
    weight_sum = sum(weights)
    for part, weight in zip(parts, weights, strict=True):
        exact = Fraction(total * weight, weight_sum)
        assert abs(part - exact) < 1
        if weight == 0:
            assert part == 0
        # every part has the total's sign (or is 0)
        assert part * total >= 0
    assert allocate(total, weights) == parts


@pytest.mark.parametrize("currency", sorted(SUPPORTED_CURRENCIES))
def test_each_supported_currency_round_trips(currency: str) -> None:
    places = exponent(currency)
    for amount in (0, 1, -1, 5, 99, 100, 12345, 10**15 + 7):
        major = to_major(amount, currency)
        assert major.as_tuple().exponent == -places
        assert to_minor(major, currency) == amount
    # one whole unit of the currency is 10^exponent minor units: 1 JPY is 1, 1 KWD is 1000
    assert to_minor(Decimal(1), currency) == 10**places


def test_large_amounts_keep_every_digit() -> None:
    # 31 significant digits: more than Python's default Decimal context (28) keeps
    assert to_minor(Decimal("123456789012345678901234567890.125"), "USD") == (
        12345678901234567890123456789013
    )
    assert apply_rate(10**30 + 1, Decimal("0.2")) == 2 * 10**29
    assert apply_rate(10**30 + 3, Decimal("0.5")) == 5 * 10**29 + 2  # ...1.5 -> 2
