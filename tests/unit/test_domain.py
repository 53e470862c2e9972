"""Pure rules: roles, colours and contrast, password policy, money display."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portal.core.money import exponent, to_major
from portal.core.roles import (
    CUSTOMER_PERMISSIONS,
    CustomerRole,
    Permission,
    StaffRole,
    customer_may,
    staff_may,
)
from portal.features.identity.rules import PasswordProblem, password_problems
from portal.features.tenancy.rules import contrast_ratio, is_hex_colour, readable_button

hex_colours = st.from_regex(r"\A#[0-9a-f]{6}\Z")


def test_role_permissions_follow_the_design() -> None:
    assert customer_may(CustomerRole.ADMINISTRATOR, Permission.MANAGE_USERS)
    assert not customer_may(CustomerRole.SUBSCRIPTION_MANAGER, Permission.VIEW_INVOICES)
    assert customer_may(CustomerRole.SUBSCRIPTION_MANAGER, Permission.VIEW_USAGE)
    assert not customer_may(CustomerRole.FINANCE_MANAGER, Permission.VIEW_SUBSCRIPTIONS)
    assert customer_may(CustomerRole.FINANCE_MANAGER, Permission.VIEW_INVOICES)
    assert staff_may(StaffRole.FINANCE, Permission.SET_CREDIT_HOLD)
    assert not staff_may(StaffRole.SALES, Permission.SET_CREDIT_HOLD)
    assert not staff_may(StaffRole.SERVICE, Permission.SET_CREDIT_HOLD)
    # the Administrator can do everything any customer role can
    everything = set().union(*CUSTOMER_PERMISSIONS.values())
    assert CUSTOMER_PERMISSIONS[CustomerRole.ADMINISTRATOR] == everything


@pytest.mark.parametrize(
    ("colour", "ok"),
    [
        ("#0b5cad", True),
        ("#FFFFFF", True),
        ("red", False),
        ("#12345", False),
        ("#1234567", False),
        ("#gg0000", False),
        ("#0b5cad\n", False),
    ],
)
def test_hex_colours_are_validated(colour: str, ok: bool) -> None:
    assert is_hex_colour(colour) is ok


def test_known_contrast_ratios() -> None:
    assert contrast_ratio("#000000", "#ffffff") == pytest.approx(21.0)
    assert contrast_ratio("#ffffff", "#ffffff") == pytest.approx(1.0)
    assert contrast_ratio("#0b5cad", "#ffffff") == pytest.approx(6.6, abs=0.1)


@given(hex_colours)
def test_every_brand_colour_gets_aa_readable_buttons(colour: str) -> None:
    button = readable_button(colour)
    assert button.ratio >= 4.5
    assert contrast_ratio(button.background, button.text) == pytest.approx(button.ratio)


@pytest.mark.parametrize(
    ("password", "problems"),
    [
        ("short", [PasswordProblem.TOO_SHORT]),
        ("x" * 129, [PasswordProblem.TOO_LONG]),
        ("Password1234", [PasswordProblem.TOO_COMMON]),
        ("alexander-likes-tea", [PasswordProblem.CONTAINS_EMAIL]),
        ("correct horse battery staple", []),
        ("ünïcödé passwörds are fine", []),
    ],
)
def test_password_policy(password: str, problems: list[str]) -> None:
    assert password_problems(password, "alexander@example.com") == problems


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        (123456, "USD", Decimal("1234.56")),
        (123456, "JPY", Decimal("123456")),
        (123456, "KWD", Decimal("123.456")),
        (-5, "EUR", Decimal("-0.05")),
    ],
)
def test_minor_units_to_major(amount: int, currency: str, expected: Decimal) -> None:
    assert to_major(amount, currency) == expected
    assert exponent(currency) == {"USD": 2, "JPY": 0, "KWD": 3, "EUR": 2}[currency]


@given(st.integers(min_value=-(10**15), max_value=10**15), st.sampled_from(["USD", "JPY", "KWD"]))
def test_minor_units_round_trip(amount: int, currency: str) -> None:
    assert to_major(amount, currency).scaleb(exponent(currency)) == amount
