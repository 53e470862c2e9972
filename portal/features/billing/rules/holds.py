"""When an account goes on credit hold by itself, and when it comes off (DESIGN §4, Gates).

Pure: the caller reads the customer's overdue invoices and settings; nothing here touches a
database or a clock.

- **On**: the overdue balance (issued invoices past their due date, what is left to pay, in
  the customer's currency) is above the credit limit, or an invoice is overdue by more days
  than the grace period. A limit or grace period of None is no rule.
- **Off**: only a hold the rules put (never one staff put by hand), once nothing is overdue
  any more: paying the overdue balance lifts it, whatever the rule that put it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum


class Cause(StrEnum):
    OVER_LIMIT = "over_limit"  # the overdue balance is above the credit limit
    PAST_GRACE = "past_grace"  # an invoice is overdue past the grace period


@dataclass(frozen=True)
class Overdue:
    """A customer's overdue invoices in its currency: what is left to pay, and the oldest due
    date among them (None when nothing is overdue)."""

    balance_minor: int = 0
    oldest_due_on: date | None = None


@dataclass(frozen=True)
class HoldRules:
    """The customer's own settings, else its partner's (None: that rule is off)."""

    limit_minor: int | None
    grace_days: int | None


@dataclass(frozen=True)
class Verdict:
    cause: Cause
    overdue_minor: int
    limit_minor: int | None = None
    days_overdue: int | None = None
    grace_days: int | None = None


def effective_rules(
    *,
    customer_limit_minor: int | None,
    customer_grace_days: int | None,
    customer_currency: str,
    partner_limit_minor: int | None,
    partner_grace_days: int | None,
    partner_currency: str,
) -> HoldRules:
    """The customer's limit and grace period, each falling back to the partner's; the
    partner's limit is in the partner's currency, so it applies to customers in it only."""
    limit = customer_limit_minor
    if limit is None and customer_currency == partner_currency:
        limit = partner_limit_minor
    grace = customer_grace_days if customer_grace_days is not None else partner_grace_days
    return HoldRules(limit, grace)


def hold_verdict(overdue: Overdue, rules: HoldRules, today: date) -> Verdict | None:
    """Why the account must go on hold now, or None. The limit is tested first: when both
    apply, the larger amount is what the customer is told about."""
    if overdue.balance_minor <= 0 or overdue.oldest_due_on is None:
        return None
    if rules.limit_minor is not None and overdue.balance_minor > rules.limit_minor:
        return Verdict(Cause.OVER_LIMIT, overdue.balance_minor, limit_minor=rules.limit_minor)
    days = (today - overdue.oldest_due_on).days
    if rules.grace_days is not None and days > rules.grace_days:
        return Verdict(
            Cause.PAST_GRACE, overdue.balance_minor, days_overdue=days, grace_days=rules.grace_days
        )
    return None


def may_lift(automatic: bool, overdue: Overdue) -> bool:
    """An automatic hold comes off once nothing is overdue; a hold staff put stays."""
    return automatic and overdue.balance_minor <= 0
