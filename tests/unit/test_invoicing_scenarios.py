"""Billing scenarios worked by hand and checked exactly (issue 5; DESIGN §4, Billing).

Each row's comment is the arithmetic done by hand (or with ``bc``), never by the code under
test. Prices are per seat per billing period, in minor units; "p" is the previous period the
changes are prorated over, "n" the new period billed in advance.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import pytest

from portal.core.proration import Period
from portal.features.billing.rules.invoicing import (
    BilledSubscription,
    ContractTerms,
    DraftDocument,
    DraftLine,
    LineKind,
    QuantityChange,
    UsageCharge,
    assemble,
    credit_for_void,
    price_document,
)
from portal.features.billing.rules.revenue import MonthRevenue, deferred_revenue

ADVANCE = LineKind.ADVANCE
ADDITION = LineKind.ADDITION
CREDIT = LineKind.REDUCTION_CREDIT
USAGE = LineKind.USAGE
DISCOUNT = LineKind.DISCOUNT

# a printed line: kind, amount in minor units, "days/total days" on prorated lines
Printed = tuple[LineKind, int, str | None]


@dataclass(frozen=True)
class Totals:
    lines: list[Printed]
    subtotal: int
    tax: int
    total: int


@dataclass(frozen=True)
class Scenario:
    terms: ContractTerms
    subscriptions: list[BilledSubscription]
    invoice: Totals
    credit: Totals | None = None
    usage: tuple[UsageCharge, ...] = ()


def usd(discount: str = "0", tax: str = "0", currency: str = "USD") -> ContractTerms:
    return ContractTerms(currency, Decimal(discount), Decimal(tax))


def month(year: int, number: int) -> Period:
    start = date(year, number, 1)
    end = date(year + number // 12, number % 12 + 1, 1)
    return Period(start, end)


def seats(
    price: int,
    quantity: int,
    new: Period,
    previous: Period | None,
    *changes: tuple[date, int, int, bool],
    upfront: str = "0",
    advance: bool = True,
    description: str = "Microsoft 365 Business Standard",
    children: tuple[str, ...] = (),
    subscription_id: int = 1,
) -> BilledSubscription:
    return BilledSubscription(
        subscription_id=subscription_id,
        description=description,
        period=new,
        unit_price_minor=price,
        upfront_discount=Decimal(upfront),
        quantity=quantity,
        bill_in_advance=advance,
        previous_period=previous,
        changes=[
            QuantityChange(day, before, after, credit) for day, before, after, credit in changes
        ],
        children=children,
    )


SCENARIOS = {
    # p = March 2025 (31 days); 10 -> 12 on 10 March: 22 days left (10..31 March).
    # addition 2 x 1000 x 22/31 = 1419.35 -> 1419; advance 12 x 1000 = 12000.
    # subtotal 13419, no tax.
    "31-day month, seats added mid-period": Scenario(
        usd(),
        [seats(1000, 12, month(2025, 4), month(2025, 3), (date(2025, 3, 10), 10, 12, False))],
        Totals([(ADVANCE, 12000, None), (ADDITION, 1419, "22/31")], 13419, 0, 13419),
    ),
    # p = February 2025 (28 days); 5 -> 8 on 15 February: 14 days left.
    # addition 3 x 1000 x 14/28 = 1500 exactly; advance 8 x 1000 = 8000.
    "28-day February": Scenario(
        usd(),
        [seats(1000, 8, month(2025, 3), month(2025, 2), (date(2025, 2, 15), 5, 8, False))],
        Totals([(ADVANCE, 8000, None), (ADDITION, 1500, "14/28")], 9500, 0, 9500),
    ),
    # p = February 2024 (29 days, a leap year); 4 -> 5 on the leap day itself: 1 day left,
    # the day of the change counts. 1 x 2999 x 1/29 = 103.41 -> 103; advance 5 x 2999 = 14995.
    "29-day February, change on the leap day": Scenario(
        usd(),
        [seats(2999, 5, month(2024, 3), month(2024, 2), (date(2024, 2, 29), 4, 5, False))],
        Totals([(ADVANCE, 14995, None), (ADDITION, 103, "1/29")], 15098, 0, 15098),
    ),
    # p = April 2025 (30 days); 10 -> 7 on 19 April inside the window: 12 days left.
    # credit 3 x 1500 x 12/30 = 1800 on a credit note; advance 7 x 1500 = 10500.
    "30-day month, reduction inside the window is credited": Scenario(
        usd(),
        [seats(1500, 7, month(2025, 5), month(2025, 4), (date(2025, 4, 19), 10, 7, True))],
        Totals([(ADVANCE, 10500, None)], 10500, 0, 10500),
        credit=Totals([(CREDIT, 1800, "12/30")], 1800, 0, 1800),
    ),
    # the same reduction after its window closed: no refund, no line, no credit note.
    "reduction outside the window is not refunded": Scenario(
        usd(),
        [seats(1500, 7, month(2025, 5), month(2025, 4), (date(2025, 4, 19), 10, 7, False))],
        Totals([(ADVANCE, 10500, None)], 10500, 0, 10500),
    ),
    # p = January 2025 (31 days), price 1000:
    #   5 Jan  10 -> 15: +5 x 1000 x 27/31 = 4354.84 -> 4355
    #   12 Jan 15 -> 13 in window: the 2 seats come off those added, at list price,
    #          2 x 1000 x 20/31 = 1290.32 -> 1290 (credit note)
    #   20 Jan 13 -> 16: +3 x 1000 x 12/31 = 1161.29 -> 1161
    #   31 Jan 16 -> 14 outside the window: nothing
    # advance February 14 x 1000 = 14000; invoice 14000 + 4355 + 1161 = 19516.
    "several changes in one period": Scenario(
        usd(),
        [
            seats(
                1000,
                14,
                month(2025, 2),
                month(2025, 1),
                (date(2025, 1, 5), 10, 15, False),
                (date(2025, 1, 12), 15, 13, True),
                (date(2025, 1, 20), 13, 16, False),
                (date(2025, 1, 31), 16, 14, False),
            )
        ],
        Totals(
            [(ADVANCE, 14000, None), (ADDITION, 4355, "27/31"), (ADDITION, 1161, "12/31")],
            19516,
            0,
            19516,
        ),
        credit=Totals([(CREDIT, 1290, "20/31")], 1290, 0, 1290),
    ),
    # annual, 1200.00 a seat a year, 5 % upfront discount. p = 1 Jul 2024 - 1 Jul 2025
    # (365 days); 10 -> 12 on 1 Oct 2024: 273 days left. Added seats at list price:
    # 2 x 120000 x 273/365 = 179506.85 -> 179507. Advance for the new year, upfront discount:
    # 12 x 120000 x 0.95 = 1368000. Subtotal 1547507.
    "annual with upfront discount, seats added mid-term at list price": Scenario(
        usd(),
        [
            seats(
                120000,
                12,
                Period(date(2025, 7, 1), date(2026, 7, 1)),
                Period(date(2024, 7, 1), date(2025, 7, 1)),
                (date(2024, 10, 1), 10, 12, False),
                upfront="0.05",
            )
        ],
        Totals([(ADVANCE, 1368000, None), (ADDITION, 179507, "273/365")], 1547507, 0, 1547507),
    ),
    # annual, 100.00 a seat a year, 20 % upfront (80.00 paid). p = 15 Jan 2024 - 15 Jan 2025,
    # 366 days (29 Feb 2024 inside).
    #   18 Jan 2024 10 -> 8 in the renewal window: seats paid upfront,
    #          2 x 8000 x 363/366 = 15868.85 -> 15869 (credit)
    #   1 Jun 2024 8 -> 11: +3 at list, 3 x 10000 x 228/366 = 18688.52 -> 18689
    #   5 Jun 2024 11 -> 7 in the addition's window: the 3 added seats at list,
    #          3 x 10000 x 224/366 = 18360.66 -> 18361, and 1 paid upfront,
    #          1 x 8000 x 224/366 = 4896.17 -> 4896 (credit)
    # advance 7 x 10000 x 0.8 = 56000; invoice 56000 + 18689 = 74689;
    # credit note 15869 + 18361 + 4896 = 39126.
    "annual reductions credited at the price the seats were billed at": Scenario(
        usd(),
        [
            seats(
                10000,
                7,
                Period(date(2025, 1, 15), date(2026, 1, 15)),
                Period(date(2024, 1, 15), date(2025, 1, 15)),
                (date(2024, 1, 18), 10, 8, True),
                (date(2024, 6, 1), 8, 11, False),
                (date(2024, 6, 5), 11, 7, True),
                upfront="0.2",
            )
        ],
        Totals([(ADVANCE, 56000, None), (ADDITION, 18689, "228/366")], 74689, 0, 74689),
        credit=Totals(
            [(CREDIT, 15869, "363/366"), (CREDIT, 18361, "224/366"), (CREDIT, 4896, "224/366")],
            39126,
            0,
            39126,
        ),
    ),
    # a bundle parent, 3 x 5700 = 17100: one line, its children named, never lines.
    "bundle: the parent only": Scenario(
        usd(),
        [
            seats(
                5700,
                3,
                month(2025, 6),
                None,
                description="Microsoft 365 E5 bundle",
                children=("Teams Phone", "Audio Conferencing"),
            )
        ],
        Totals([(ADVANCE, 17100, None)], 17100, 0, 17100),
    ),
    # two subscriptions, 3 x 1999 = 5997 and 1 x 4999 = 4999; charges 10996;
    # contract discount 10 %: 1099.6 -> 1100, one negative line; subtotal 9896.
    "contract discount": Scenario(
        usd(discount="0.1"),
        [
            seats(1999, 3, month(2025, 6), None),
            seats(4999, 1, month(2025, 6), None, subscription_id=2),
        ],
        Totals(
            [(ADVANCE, 5997, None), (ADVANCE, 4999, None), (DISCOUNT, -1100, None)], 9896, 0, 9896
        ),
    ),
    # Lago #4313: 200.00 a month, p = June 2025 (30 days), +1 seat on 2 June: 29 days,
    # 20000 x 29/30 = 19333.33 -> 19333; the subscription then ended (no advance line).
    # Tax 25 % of the printed subtotal: 4833.25 -> 4833; total 24166 (193.33 + 48.33 = 241.66,
    # printed lines and total agree).
    "tax on the printed subtotal": Scenario(
        usd(tax="0.25"),
        [
            seats(
                20000,
                1,
                month(2025, 7),
                month(2025, 6),
                (date(2025, 6, 2), 0, 1, False),
                advance=False,
            )
        ],
        Totals([(ADDITION, 19333, "29/30")], 19333, 4833, 24166),
    ),
    # EUR, discount 10 %, tax 21 %, 10.00 a month. p = April 2025 (30 days),
    # 10 -> 6 on 3 April in the window: 28 days, 4 x 1000 x 28/30 = 3733.33 -> 3733.
    # invoice: advance 6 x 1000 = 6000, discount -600, subtotal 5400, tax 1134, total 6534.
    # credit note: 3733, discount 373.3 -> -373, subtotal 3360, tax 705.6 -> 706, total 4066.
    "credit note with the contract discount and tax": Scenario(
        usd(discount="0.1", tax="0.21", currency="EUR"),
        [seats(1000, 6, month(2025, 5), month(2025, 4), (date(2025, 4, 3), 10, 6, True))],
        Totals([(ADVANCE, 6000, None), (DISCOUNT, -600, None)], 5400, 1134, 6534),
        credit=Totals([(CREDIT, 3733, "28/30"), (DISCOUNT, -373, None)], 3360, 706, 4066),
    ),
    # JPY has no decimals: 1500 yen a seat. p = February 2023 (28 days), 3 -> 5 on 10 Feb:
    # 19 days, 2 x 1500 x 19/28 = 2035.71 -> 2036 yen (not 203571). Advance 5 x 1500 = 7500.
    # Tax 10 % of 9536 = 953.6 -> 954; total 10490 yen.
    "JPY, no decimals": Scenario(
        usd(tax="0.1", currency="JPY"),
        [seats(1500, 5, month(2023, 3), month(2023, 2), (date(2023, 2, 10), 3, 5, False))],
        Totals([(ADVANCE, 7500, None), (ADDITION, 2036, "19/28")], 9536, 954, 10490),
    ),
    # KWD has 3 decimals: 12.345 KWD = 12345 fils a seat. p = August 2025 (31 days),
    # 1 -> 4 on 20 Aug: 12 days, 3 x 12345 x 12/31 = 14336.13 -> 14336.
    # Advance 4 x 12345 = 49380. Tax 5 % of 63716 = 3185.8 -> 3186; total 66902.
    "KWD, three decimals": Scenario(
        usd(tax="0.05", currency="KWD"),
        [seats(12345, 4, month(2025, 9), month(2025, 8), (date(2025, 8, 20), 1, 4, False))],
        Totals([(ADVANCE, 49380, None), (ADDITION, 14336, "12/31")], 63716, 3186, 66902),
    ),
    # usage in arrears, unit prices with more decimals, each line rounded once:
    # 1234.5678 x 0.0123456 = 15.24148023168 -> 15.24 = 1524;
    # 0.5 x 0.0150 = 0.0075 -> 0.01 = 1 (half up at the cent). Subtotal 1525.
    "usage in arrears with a many-decimal unit price": Scenario(
        usd(),
        [],
        Totals([(USAGE, 1524, None), (USAGE, 1, None)], 1525, 0, 1525),
        usage=(
            UsageCharge(
                7, "Azure plan", month(2025, 5), Decimal("1234.5678"), Decimal("0.0123456"), "USD"
            ),
            UsageCharge(
                7, "Azure storage", month(2025, 5), Decimal("0.5"), Decimal("0.0150"), "USD"
            ),
        ),
    ),
    # a change dated before the previous period counts as the whole period (31 days):
    # 1 x 3100 x 31/31 = 3100; advance 2 x 3100 = 6200.
    "a change before the period counts as the whole period": Scenario(
        usd(),
        [seats(3100, 2, month(2025, 2), month(2025, 1), (date(2024, 12, 20), 1, 2, False))],
        Totals([(ADVANCE, 6200, None), (ADDITION, 3100, "31/31")], 9300, 0, 9300),
    ),
}


def printed(document: DraftDocument) -> list[Printed]:
    return [
        (
            line.kind,
            line.amount_minor,
            None if line.days is None else f"{line.days}/{line.total_days}",
        )
        for line in document.lines
    ]


def totals(document: DraftDocument) -> Totals:
    return Totals(
        printed(document), document.subtotal_minor, document.tax_minor, document.total_minor
    )


@pytest.mark.parametrize("scenario", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_scenario(scenario: Scenario) -> None:
    assembled = assemble(scenario.terms, scenario.subscriptions, scenario.usage)
    assert totals(assembled.invoice) == scenario.invoice
    assert (None if assembled.credit is None else totals(assembled.credit)) == scenario.credit
    currency = scenario.terms.currency
    assert assembled.invoice.currency == currency
    assert assembled.credit is None or assembled.credit.currency == currency


def test_the_table_covers_what_the_issue_asks() -> None:
    assert len(SCENARIOS) >= 12


def test_bundle_children_are_named_on_the_parent_line() -> None:
    (line,) = assemble(usd(), SCENARIOS["bundle: the parent only"].subscriptions, ()).invoice.lines
    assert line.description == "Microsoft 365 E5 bundle (Teams Phone, Audio Conferencing)"
    assert line.children == ("Teams Phone", "Audio Conferencing")
    # and on its prorated lines
    bundle = seats(
        5700,
        3,
        month(2025, 6),
        month(2025, 5),
        (date(2025, 5, 20), 2, 3, False),
        description="Microsoft 365 E5 bundle",
        children=("Teams Phone",),
    )
    lines = assemble(usd(), [bundle], ()).invoice.lines
    assert [line.description for line in lines] == ["Microsoft 365 E5 bundle (Teams Phone)"] * 2
    assert [line.children for line in lines] == [("Teams Phone",)] * 2


def test_prorated_lines_show_their_period_and_list_price() -> None:
    scenario = SCENARIOS["annual with upfront discount, seats added mid-term at list price"]
    advance, addition = assemble(scenario.terms, scenario.subscriptions, ()).invoice.lines
    assert advance.unit_price == Decimal("1140.0000")  # 1200.00 less 5 %
    assert advance.unit_price_minor == 120000
    assert advance.upfront_discount == Decimal("0.05")
    assert addition.unit_price == Decimal("1200.00")
    assert addition.upfront_discount == 0
    assert addition.period == Period(date(2024, 10, 1), date(2025, 7, 1))
    assert addition.quantity == 2


def test_a_void_credit_note_cancels_the_invoice_exactly() -> None:
    scenario = SCENARIOS["credit note with the contract discount and tax"]
    invoice = assemble(scenario.terms, scenario.subscriptions, ()).invoice
    credit = credit_for_void(invoice)
    assert (credit.subtotal_minor, credit.tax_minor, credit.total_minor) == (5400, 1134, 6534)
    assert credit.currency == "EUR"
    assert credit.lines == invoice.lines


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: usd(discount="1.5"), "contract discount must be a fraction"),
        (lambda: usd(tax="-0.1"), "tax rate must be a fraction"),
        (lambda: usd(currency="XYZ"), "not an ISO 4217 currency"),
        (lambda: seats(-1, 1, month(2025, 1), None), "unit price must not be negative"),
        (lambda: seats(100, -1, month(2025, 1), None), "quantity must not be negative"),
        (lambda: seats(100, 1, month(2025, 1), None, upfront="2"), "upfront discount"),
        (
            lambda: seats(100, 1, month(2025, 2), None, (date(2025, 1, 5), 1, 2, False)),
            "need the previous period",
        ),
        (lambda: QuantityChange(date(2025, 1, 1), -1, 2, False), "0 or more"),
        (
            lambda: UsageCharge(None, "Azure", month(2025, 1), Decimal(-1), Decimal(1), "USD"),
            "quantity must be a Decimal >= 0",
        ),
        (
            lambda: assemble(
                usd(),
                [],
                [UsageCharge(None, "Azure", month(2025, 1), Decimal(1), Decimal(1), "EUR")],
            ),
            "is in EUR, the contract in USD",
        ),
        (
            lambda: DraftDocument("USD", (), 1, 0, 1),
            "not the sum of the lines",
        ),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(build: object, message: str) -> None:
    assert callable(build)
    with pytest.raises(ValueError, match=message):
        build()


# deferred revenue: a line billed for a year is recognised month by month, by days


def test_a_year_is_recognised_over_12_months_by_days() -> None:
    # 1000.00 over 2025 (365 days): 100000 x days/365 is 8493.15 for a 31-day month, 7671.23
    # for February, 8219.18 for a 30-day month. The whole parts add up to 99998; the 2 left go
    # to the largest remainders: February (.23), then the first 30-day month, April (.18).
    months = deferred_revenue(100000, Period(date(2025, 1, 1), date(2026, 1, 1)))
    assert [month.month for month in months] == [date(2025, number, 1) for number in range(1, 13)]
    assert [month.amount_minor for month in months] == [
        8493, 7672, 8493, 8220, 8493, 8219, 8493, 8493, 8219, 8493, 8219, 8493
    ]  # fmt: skip
    assert sum(month.amount_minor for month in months) == 100000


def test_an_even_amount_per_day_is_recognised_exactly() -> None:
    # 10.00 a day for the 365 days of 2025: each month is its days x 1000
    months = deferred_revenue(365000, Period(date(2025, 1, 1), date(2026, 1, 1)))
    assert [month.amount_minor for month in months] == [month.days * 1000 for month in months]


def test_a_year_from_mid_month_spans_13_calendar_months() -> None:
    # 15 Jan 2024 - 15 Jan 2025, 366 days (29 Feb inside): 17 days of January 2024 (15..31),
    # then whole months, then 14 days of January 2025
    months = deferred_revenue(366 * 7, Period(date(2024, 1, 15), date(2025, 1, 15)))
    assert [month.days for month in months] == [17, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31, 14]
    assert [month.amount_minor for month in months] == [month.days * 7 for month in months]
    assert (months[0].month, months[-1].month) == (date(2024, 1, 1), date(2025, 1, 1))


def test_a_credit_is_recognised_negative() -> None:
    # -100.00 over a quarter of 90 days (Jan 31, Feb 28, Mar 31): -10000 x 31/90 = -3444.44,
    # x 28/90 = -3111.11; whole parts -9999, the last unit to the largest remainder (.44,
    # January first)
    months = deferred_revenue(-10000, Period(date(2025, 1, 1), date(2025, 4, 1)))
    assert [month.amount_minor for month in months] == [-3445, -3111, -3444]


def test_a_one_day_line_is_one_month() -> None:
    (only,) = deferred_revenue(-250, Period(date(2025, 2, 28), date(2025, 3, 1)))
    assert only == MonthRevenue(date(2025, 2, 1), 1, -250)


def test_revenue_needs_a_period() -> None:
    with pytest.raises(ValueError, match="at least one day"):
        deferred_revenue(100, Period(date(2025, 1, 1), date(2025, 1, 1)))


# the lines in full, and the edges


APRIL = month(2025, 4)  # 30 days


def test_credits_take_the_seats_added_in_the_period_first() -> None:
    # 30.00 a seat, 40 % upfront (18.00 paid). April (30 days):
    #   1 Apr  10 -> 12: +2 x 3000 x 30/30 = 6000
    #   11 Apr 12 -> 14: +2 x 3000 x 20/30 = 4000 (4 seats added so far)
    #   16 Apr 14 -> 11: 3 of the added seats, at list: 3 x 3000 x 15/30 = 4500 (1 left)
    #   21 Apr 11 -> 8: the last added seat at list, 1 x 3000 x 10/30 = 1000, and 2 paid
    #          upfront, 2 x 1800 x 10/30 = 1200
    # advance May: 8 x 1800 = 14400
    subscription = seats(
        3000,
        8,
        month(2025, 5),
        APRIL,
        (date(2025, 4, 1), 10, 12, False),
        (date(2025, 4, 11), 12, 14, False),
        (date(2025, 4, 16), 14, 11, True),
        (date(2025, 4, 21), 11, 8, True),
        upfront="0.4",
        subscription_id=5,
        description="Office",
    )
    assembled = assemble(usd(), [subscription], [])
    assert assembled.credit is not None

    def line(
        kind: LineKind, start: int, quantity: int, price: str, days: int | None, amount: int
    ) -> DraftLine:
        upfront = Decimal("0.4") if price == "18" else Decimal(0)
        return DraftLine(
            kind=kind,
            subscription_id=5,
            description="Office",
            period=month(2025, 5) if days is None else Period(date(2025, 4, start), APRIL.end),
            quantity=Decimal(quantity),
            unit_price_minor=3000,
            unit_price=Decimal(price),
            days=days,
            total_days=None if days is None else 30,
            amount_minor=amount,
            upfront_discount=upfront,
        )

    assert assembled.invoice.lines == (
        line(ADVANCE, 1, 8, "18", None, 14400),
        line(ADDITION, 1, 2, "30", 30, 6000),
        line(ADDITION, 11, 2, "30", 20, 4000),
    )
    assert assembled.credit.lines == (
        line(CREDIT, 16, 3, "30", 15, 4500),
        line(CREDIT, 21, 1, "30", 10, 1000),
        line(CREDIT, 21, 2, "18", 10, 1200),
    )


def test_without_an_upfront_discount_a_reduction_is_one_line() -> None:
    # 30.00 a seat, April (30 days). Subscription 1:
    #   11 Apr 10 -> 12: +2 x 3000 x 20/30 = 4000
    #   16 Apr 12 -> 9: 3 seats (2 added, 1 from the start, same price): 3 x 3000 x 15/30 = 4500
    #   21 Apr 9 -> 8: 1 x 3000 x 10/30 = 1000
    # Subscription 2: 26 Apr 5 -> 4: 1 x 3000 x 5/30 = 500. One credit note for both.
    first = seats(
        3000,
        8,
        month(2025, 5),
        APRIL,
        (date(2025, 4, 11), 10, 12, False),
        (date(2025, 4, 16), 12, 9, True),
        (date(2025, 4, 21), 9, 8, True),
    )
    second = seats(
        3000, 4, month(2025, 5), APRIL, (date(2025, 4, 26), 5, 4, True), subscription_id=2
    )
    credit = assemble(usd(), [first, second], []).credit
    assert credit is not None
    assert [(line.subscription_id, line.quantity, line.amount_minor) for line in credit.lines] == [
        (1, 3, 4500),
        (1, 1, 1000),
        (2, 1, 500),
    ]


def test_nothing_to_bill_gives_no_line() -> None:
    # no seats at the period start; a change that changes nothing; a change on the period's
    # end; a contract discount that rounds to nothing (10 % of 0.01)
    subscription = seats(
        1,
        0,
        month(2025, 5),
        APRIL,
        (date(2025, 4, 10), 3, 3, True),
        (date(2025, 5, 1), 3, 4, False),
        (date(2025, 5, 1), 4, 3, True),
    )
    assembled = assemble(usd(discount="0.1"), [subscription], [])
    assert assembled.invoice.lines == ()
    assert assembled.credit is None
    one_cent = seats(1, 1, month(2025, 5), None)
    (line,) = assemble(usd(discount="0.1"), [one_cent], []).invoice.lines
    assert line.amount_minor == 1


def test_usage_and_discount_lines_in_full() -> None:
    # usage 2.5 x 1.234 = 3.085 -> 3.09 (309); advance 1 x 1000 for June.
    # discount 10 % of 1309 = 130.9 -> 131, one line over both lines' periods.
    usage = UsageCharge(9, "Azure plan", month(2025, 5), Decimal("2.5"), Decimal("1.234"), "usd")
    assembled = assemble(usd(discount="0.1"), [seats(1000, 1, month(2025, 6), None)], [usage])
    *_, usage_line, discount = assembled.invoice.lines
    assert usage_line == DraftLine(
        kind=USAGE,
        subscription_id=9,
        description="Azure plan",
        period=month(2025, 5),
        quantity=Decimal("2.5"),
        unit_price_minor=None,
        unit_price=Decimal("1.234"),
        days=None,
        total_days=None,
        amount_minor=309,
    )
    assert discount == DraftLine(
        kind=DISCOUNT,
        subscription_id=None,
        description="",
        period=Period(date(2025, 5, 1), date(2025, 7, 1)),
        quantity=Decimal("0.1"),
        unit_price_minor=None,
        unit_price=Decimal("-13.09"),
        days=None,
        total_days=None,
        amount_minor=-131,
    )


def test_edges_that_are_allowed() -> None:
    # free seats, no seats, changes to and from 0 seats, one-day periods, usage of nothing
    one_day = Period(date(2025, 4, 30), date(2025, 5, 1))
    subscription = seats(
        0,
        0,
        Period(date(2025, 5, 1), date(2025, 5, 2)),
        one_day,
        (date(2025, 4, 30), 0, 1, False),
        (date(2025, 4, 30), 1, 0, True),
    )
    assert isinstance(subscription.changes, tuple)
    bundle = BilledSubscription(1, "Bundle", APRIL, 100, Decimal(0), 1, True, None, [], ["A"])
    assert bundle.children == ("A",)
    nothing = UsageCharge(None, "Azure", one_day, Decimal(0), Decimal(0), "USD")
    assembled = assemble(usd(currency="usd"), [subscription], [nothing])
    assert assembled.invoice.currency == "USD"
    assert [line.amount_minor for line in assembled.invoice.lines] == [0, 0]
    document = DraftDocument("USD", [], 0, 0, 0)  # type: ignore[arg-type]
    assert document.lines == ()


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: seats(1, 1, Period(date(2025, 5, 1), date(2025, 5, 1)), None),
            "billing period must be at least one day",
        ),
        (
            lambda: seats(
                1,
                1,
                month(2025, 5),
                Period(date(2025, 4, 1), date(2025, 4, 1)),
            ),
            "previous period must be at least one day",
        ),
        (lambda: QuantityChange(date(2025, 1, 1), 1, -1, False), "0 or more, not 1 to -1"),
        (
            lambda: UsageCharge(None, "Azure", APRIL, Decimal(1), Decimal("-0.1"), "USD"),
            "unit_price must be a Decimal >= 0",
        ),
        (
            lambda: UsageCharge(None, "Azure", APRIL, Decimal("NaN"), Decimal(1), "USD"),
            "quantity must be a Decimal >= 0",
        ),
        (lambda: price_document("USD", [], Decimal(2)), "the tax rate must be a fraction"),
        (lambda: DraftDocument("USD", (), 0, 1, 2), "total 2 is not subtotal 0 plus tax 1"),
        (lambda: seats(-5, 1, APRIL, None, subscription_id=42), "subscription 42: the unit"),
    ],
)
def test_more_bad_input(build: object, message: str) -> None:
    assert callable(build)
    with pytest.raises(ValueError, match=message):
        build()
