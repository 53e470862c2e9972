"""Amounts on pages show exactly the currency's ISO 4217 decimals, in the reader's language,
also where CLDR (Babel) disagrees with ISO 4217."""

from __future__ import annotations

import pytest
from flask import Flask

from portal.core.extensions import rendering_in
from portal.core.formatting import money


@pytest.mark.parametrize(
    ("amount_minor", "currency", "locale", "shown"),
    [
        (123456, "USD", "en", "$1,234.56"),
        (123456, "JPY", "en", "¥123,456"),
        (1234567, "KWD", "en", "KWD1,234.567"),
        # CLDR gives IQD and LAK no decimals; ISO 4217 gives IQD 3 and LAK 2
        (1234567, "IQD", "en", "IQD1,234.567"),
        (123456, "LAK", "en", "LAK1,234.56"),
        (1234567, "IQD", "es", "1.234,567\xa0IQD"),
        (-500, "LAK", "en", "-LAK5.00"),
    ],
)
def test_money_shows_the_iso_decimals(
    app: Flask, amount_minor: int, currency: str, locale: str, shown: str
) -> None:
    with app.test_request_context(), rendering_in(locale):
        assert money(amount_minor, currency) == shown


def test_no_amount_is_a_dash(app: Flask) -> None:
    with app.test_request_context():
        assert money(None, "USD") == "—"
