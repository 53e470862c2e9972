"""A contract's invoice for a billing period, from its subscriptions, changes and usage.

Pure: no Flask, no database. The billing service
(:mod:`portal.features.billing.services.contracts`) gathers the
facts (each subscription's own billing period and price, the licence changes of its previous
period converted to days in the partner's time zone, usage lines) and :func:`assemble` turns
them into the lines and totals of one invoice and, when seats were reduced inside their window,
one credit note (DESIGN §4, Billing and Money; rounding: :mod:`portal.core.money`).

What each subscription contributes:

- **advance**: ``quantity`` seats for its new period ``period`` at the list price less the
  upfront discount (annual prepaid), when it is billed in advance;
- **addition**: for each change of its previous period that added seats, the added seats at
  the list price (never the upfront discount: it is for seats paid upfront) for
  (e - c) / (e - s) of that period, the day of the change counting;
- **reduction_credit** (on the credit note): for each reduction inside its window
  (``credit_allowed``), the removed seats for (e - c) / (e - s) of the period, at the price they
  were billed at: the seats added during that period are taken off first (they are the ones
  still in their window), at the list price; any further seats were paid in advance, at the
  discounted price. A reduction outside the window gives no line (no refund).

Then **usage** in arrears (a many-decimal unit price, rounded once per line), and the contract's
**discount**: one negative line, the discount rate of the sum of the charge lines, rounded once
(the credit note gets the same discount of its credits, so a credit never refunds more than was
paid). Each line is rounded once; a document's subtotal is the sum of its printed lines, its
tax the tax rate of that subtotal rounded once, its total their sum.

Changes apply in the order of their day, and in the given order within a day. Each change is
priced on its own: a reduction with no refund leaves the seats paid for, so seats added back
later in the same period are charged again (the rule is "no refund", not "seat swap").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, localcontext
from enum import StrEnum

from portal.core.money import (
    MONEY_CONTEXT,
    apply_rate,
    exponent,
    require_fraction,
    round_minor,
    to_minor,
)
from portal.core.proration import Period, prorated_minor, remaining_days
from portal.features.billing.rules.revenue import MonthRevenue, deferred_revenue

__all__ = [
    "Assembled",
    "BilledSubscription",
    "ContractFrequency",
    "ContractTerms",
    "DraftDocument",
    "DraftLine",
    "LineKind",
    "MonthRevenue",
    "QuantityChange",
    "UsageCharge",
    "assemble",
    "credit_for_void",
    "deferred_revenue",
    "price_document",
]


class ContractFrequency(StrEnum):
    """How often a billing contract is invoiced (a product's own frequency is separate)."""

    MONTHLY = "monthly"
    QUARTERLY = "quarterly"
    ANNUAL = "annual"

    @property
    def months(self) -> int:
        return {"monthly": 1, "quarterly": 3, "annual": 12}[self.value]


class LineKind(StrEnum):
    ADVANCE = "advance"  # seats for the new period, billed in advance
    ADDITION = "addition"  # seats added during the previous period, prorated
    REDUCTION_CREDIT = "reduction_credit"  # seats removed inside their window, prorated credit
    USAGE = "usage"  # consumption, billed in arrears
    DISCOUNT = "discount"  # the contract's discount, negative


@dataclass(frozen=True)
class QuantityChange:
    """Seats went from ``quantity_from`` to ``quantity_to`` at the provider on ``day`` (the
    partner's time zone). ``credit_allowed``: a reduction inside its window, credited pro rata;
    outside it there is no refund."""

    day: date
    quantity_from: int
    quantity_to: int
    credit_allowed: bool

    def __post_init__(self) -> None:
        if self.quantity_from < 0 or self.quantity_to < 0:
            raise ValueError(
                f"a quantity change is between seat counts of 0 or more, not "
                f"{self.quantity_from} to {self.quantity_to}"
            )

    @property
    def delta(self) -> int:
        return self.quantity_to - self.quantity_from


@dataclass(frozen=True)
class BilledSubscription:
    """One subscription's charge for its own billing period ``period``.

    ``unit_price_minor`` is the list price of one seat for one billing period;
    ``upfront_discount`` (a fraction) applies to the ``quantity`` seats billed in advance
    only. ``changes`` took effect in ``previous_period`` and are prorated over it.
    ``bill_in_advance`` False: no charge for ``period`` (the subscription does not go on into
    it, e.g. it was cancelled); its previous period's changes are still settled. A bundle
    parent names its ``children``; they are never lines of their own.
    """

    subscription_id: int
    description: str
    period: Period
    unit_price_minor: int
    upfront_discount: Decimal
    quantity: int
    bill_in_advance: bool
    previous_period: Period | None
    changes: Sequence[QuantityChange]
    children: Sequence[str] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "changes", tuple(self.changes))
        object.__setattr__(self, "children", tuple(self.children))
        what = f"subscription {self.subscription_id}"
        if self.unit_price_minor < 0:
            raise ValueError(f"{what}: the unit price must not be negative")
        if self.quantity < 0:
            raise ValueError(f"{what}: the quantity must not be negative")
        if self.period.days <= 0:
            raise ValueError(f"{what}: its billing period must be at least one day")
        require_fraction(self.upfront_discount, f"{what}: the upfront discount")
        if self.changes and self.previous_period is None:
            raise ValueError(f"{what}: changes need the previous period they took effect in")
        if self.previous_period is not None and self.previous_period.days <= 0:
            raise ValueError(f"{what}: its previous period must be at least one day")


@dataclass(frozen=True)
class UsageCharge:
    """Consumption in arrears: ``quantity`` units at ``unit_price`` major units each (more
    decimals than the currency has are kept until the line is rounded)."""

    subscription_id: int | None
    description: str
    period: Period
    quantity: Decimal
    unit_price: Decimal
    currency: str

    def __post_init__(self) -> None:
        for name in ("quantity", "unit_price"):
            value = getattr(self, name)
            if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
                raise ValueError(f"usage {self.description!r}: {name} must be a Decimal >= 0")
        exponent(self.currency)


@dataclass(frozen=True)
class ContractTerms:
    """``discount`` and ``tax_rate`` are fractions: ``Decimal("0.2")`` is 20 %."""

    currency: str
    discount: Decimal
    tax_rate: Decimal

    def __post_init__(self) -> None:
        object.__setattr__(self, "currency", self.currency.strip().upper())
        exponent(self.currency)
        require_fraction(self.discount, "the contract discount")
        require_fraction(self.tax_rate, "the tax rate")


@dataclass(frozen=True)
class DraftLine:
    """A printed line. ``amount_minor`` is already rounded, once.

    ``unit_price`` is what one unit costs on this line, in major units, exactly (after the
    upfront discount; a usage price keeps its decimals); ``unit_price_minor`` is a licence
    line's list price per seat (None for usage and discount lines). ``days``/``total_days``
    are set on prorated lines ("12/30 days"). A discount line's ``quantity`` is the discount
    rate and its ``unit_price`` the (negative) amount discounted, and its description is empty:
    the page names it in the reader's language. A bundle parent's description already names
    its ``children``.
    """

    kind: LineKind
    subscription_id: int | None
    description: str
    period: Period
    quantity: Decimal
    unit_price_minor: int | None
    unit_price: Decimal
    days: int | None
    total_days: int | None
    amount_minor: int
    upfront_discount: Decimal = Decimal(0)
    children: tuple[str, ...] = ()


@dataclass(frozen=True)
class DraftDocument:
    """An invoice or credit note before it is stored. Its figures always agree: the
    subtotal is the sum of the printed lines and the total is subtotal plus tax."""

    currency: str
    lines: tuple[DraftLine, ...]
    subtotal_minor: int
    tax_minor: int
    total_minor: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "lines", tuple(self.lines))
        printed = sum(line.amount_minor for line in self.lines)
        if self.subtotal_minor != printed:
            raise ValueError(
                f"the subtotal {self.subtotal_minor} is not the sum of the lines, {printed}"
            )
        if self.total_minor != self.subtotal_minor + self.tax_minor:
            raise ValueError(
                f"the total {self.total_minor} is not subtotal {self.subtotal_minor} "
                f"plus tax {self.tax_minor}"
            )


@dataclass(frozen=True)
class Assembled:
    """One period's invoice and, for reductions inside their window, its credit note (issued
    by the service and applied to the invoice)."""

    invoice: DraftDocument
    credit: DraftDocument | None = field(default=None)


def price_document(currency: str, lines: Sequence[DraftLine], tax_rate: Decimal) -> DraftDocument:
    """The document with these lines: subtotal their sum, tax the rate of it rounded once."""
    subtotal = sum(line.amount_minor for line in lines)
    tax = apply_rate(subtotal, require_fraction(tax_rate, "the tax rate"))
    return DraftDocument(currency, tuple(lines), subtotal, tax, subtotal + tax)


def assemble(
    terms: ContractTerms,
    subscriptions: Sequence[BilledSubscription],
    usage: Sequence[UsageCharge],
) -> Assembled:
    """The invoice (charges, then the discount) and the credit note (or None) for one period."""
    charges: list[DraftLine] = []
    credits: list[DraftLine] = []
    for subscription in subscriptions:
        charged, credited = _subscription_lines(subscription, terms.currency)
        charges += charged
        credits += credited
    charges += [_usage_line(charge, terms.currency) for charge in usage]
    invoice = price_document(terms.currency, _discounted(charges, terms), terms.tax_rate)
    credit = (
        price_document(terms.currency, _discounted(credits, terms), terms.tax_rate)
        if credits
        else None
    )
    return Assembled(invoice, credit)


def credit_for_void(invoice: DraftDocument) -> DraftDocument:
    """The credit note that cancels ``invoice`` exactly: the same lines, subtotal, tax and
    total (copied, not recomputed, so no rounding can make them differ)."""
    return DraftDocument(
        invoice.currency,
        invoice.lines,
        invoice.subtotal_minor,
        invoice.tax_minor,
        invoice.total_minor,
    )


def _subscription_lines(
    subscription: BilledSubscription, currency: str
) -> tuple[list[DraftLine], list[DraftLine]]:
    line = _LineMaker(subscription, currency)
    charges: list[DraftLine] = []
    credits: list[DraftLine] = []
    if subscription.bill_in_advance and subscription.quantity > 0:
        charges.append(line.advance())
    previous = subscription.previous_period
    if previous is None:
        return charges, credits
    # seats added this period and not yet removed: a credited reduction takes these first
    added_in_period = 0
    for change in sorted(subscription.changes, key=lambda change: change.day):
        if change.delta > 0:
            added_in_period += change.delta
            charges += line.prorated(LineKind.ADDITION, change, previous, change.delta, False)
        elif change.delta < 0 and change.credit_allowed:
            removed = -change.delta
            at_list_price = min(removed, added_in_period)
            added_in_period -= at_list_price
            paid_upfront = removed - at_list_price
            credit = LineKind.REDUCTION_CREDIT
            if subscription.upfront_discount == 0:
                credits += line.prorated(credit, change, previous, removed, False)
                continue
            credits += line.prorated(credit, change, previous, at_list_price, False)
            credits += line.prorated(credit, change, previous, paid_upfront, True)
    return charges, credits


class _LineMaker:
    """Lines of one subscription: its description, list and discounted prices."""

    def __init__(self, subscription: BilledSubscription, currency: str) -> None:
        self.subscription = subscription
        self.places = exponent(currency)
        self.description = subscription.description
        if subscription.children:
            self.description += f" ({', '.join(subscription.children)})"
        with localcontext(MONEY_CONTEXT):
            self.discounted_minor = Decimal(subscription.unit_price_minor) * (
                1 - subscription.upfront_discount
            )

    def _unit_price(self, discounted: bool) -> Decimal:
        minor = self.discounted_minor if discounted else Decimal(self.subscription.unit_price_minor)
        with localcontext(MONEY_CONTEXT):
            return minor.scaleb(-self.places)

    def advance(self) -> DraftLine:
        subscription = self.subscription
        with localcontext(MONEY_CONTEXT):
            amount = round_minor(self.discounted_minor * subscription.quantity)
        return DraftLine(
            kind=LineKind.ADVANCE,
            subscription_id=subscription.subscription_id,
            description=self.description,
            period=subscription.period,
            quantity=Decimal(subscription.quantity),
            unit_price_minor=subscription.unit_price_minor,
            unit_price=self._unit_price(discounted=True),
            days=None,
            total_days=None,
            amount_minor=amount,
            upfront_discount=subscription.upfront_discount,
            children=tuple(subscription.children),
        )

    def prorated(
        self,
        kind: LineKind,
        change: QuantityChange,
        period: Period,
        seats: int,
        discounted: bool,
    ) -> list[DraftLine]:
        """The line for ``seats`` seats from the change's day to the period's end, or none
        when there are no seats or no days left."""
        days = remaining_days(period, change.day)
        if seats == 0 or days == 0:
            return []
        price = self.discounted_minor if discounted else self.subscription.unit_price_minor
        subscription = self.subscription
        return [
            DraftLine(
                kind=kind,
                subscription_id=subscription.subscription_id,
                description=self.description,
                period=Period(max(change.day, period.start), period.end),
                quantity=Decimal(seats),
                unit_price_minor=subscription.unit_price_minor,
                unit_price=self._unit_price(discounted),
                days=days,
                total_days=period.days,
                amount_minor=prorated_minor(price, seats, period, change.day),
                upfront_discount=subscription.upfront_discount if discounted else Decimal(0),
                children=tuple(subscription.children),
            )
        ]


def _usage_line(charge: UsageCharge, currency: str) -> DraftLine:
    if charge.currency.strip().upper() != currency:
        raise ValueError(
            f"usage {charge.description!r} is in {charge.currency}, the contract in {currency}"
        )
    with localcontext(MONEY_CONTEXT):
        amount = to_minor(charge.quantity * charge.unit_price, currency)
    return DraftLine(
        kind=LineKind.USAGE,
        subscription_id=charge.subscription_id,
        description=charge.description,
        period=charge.period,
        quantity=charge.quantity,
        unit_price_minor=None,
        unit_price=charge.unit_price,
        days=None,
        total_days=None,
        amount_minor=amount,
    )


def _discounted(lines: list[DraftLine], terms: ContractTerms) -> list[DraftLine]:
    """``lines`` and, with a contract discount, the negative line that takes it off them."""
    base = sum(line.amount_minor for line in lines)
    amount = apply_rate(base, terms.discount)
    if amount == 0:  # no discount, or one that rounds to nothing: no line
        return lines
    discount = DraftLine(
        kind=LineKind.DISCOUNT,
        subscription_id=None,
        description="",
        period=Period(
            min(line.period.start for line in lines), max(line.period.end for line in lines)
        ),
        quantity=terms.discount,
        unit_price_minor=None,
        unit_price=-Decimal(base).scaleb(-exponent(terms.currency)),
        days=None,
        total_days=None,
        amount_minor=-amount,
    )
    return [*lines, discount]
