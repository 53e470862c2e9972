"""What a product in the catalogue is: its class, type, terms and reduction behaviour."""

from __future__ import annotations

from enum import StrEnum


class ProductClass(StrEnum):
    RESALE = "resale"  # Microsoft or another vendor's product, resold
    IP = "ip"  # the partner's own intellectual property (software, managed offers)
    SERVICES = "services"  # the partner's services (support, consulting)


class SubscriptionType(StrEnum):
    LICENCE = "licence"  # seats, billed in advance
    USAGE = "usage"  # consumption (Azure), billed in arrears
    SERVICE = "service"


class Term(StrEnum):
    """ISO 8601 durations, as Partner Center writes them."""

    P1M = "P1M"
    P1Y = "P1Y"
    P3Y = "P3Y"

    @property
    def months(self) -> int:
        return {"P1M": 1, "P1Y": 12, "P3Y": 36}[self.value]


class BillingFrequency(StrEnum):
    MONTHLY = "monthly"
    ANNUAL = "annual"
    TRIENNIAL = "triennial"

    @property
    def months(self) -> int:
        return {"monthly": 1, "annual": 12, "triennial": 36}[self.value]


class ReductionBehaviour(StrEnum):
    ALLOWED = "allowed"  # seats can be reduced at any time (no refund for the period)
    DISALLOWED = "disallowed"  # never reduced during the term
    WITHIN_WINDOW = "within_window"  # reduced only inside the window after purchase/addition


# Microsoft new commerce: P1M bills monthly; P1Y monthly or annually; P3Y any of the three
BILLING_FREQUENCIES: dict[Term, tuple[BillingFrequency, ...]] = {
    Term.P1M: (BillingFrequency.MONTHLY,),
    Term.P1Y: (BillingFrequency.MONTHLY, BillingFrequency.ANNUAL),
    Term.P3Y: (BillingFrequency.MONTHLY, BillingFrequency.ANNUAL, BillingFrequency.TRIENNIAL),
}

DEFAULT_WINDOW_HOURS = 168  # Microsoft new commerce: 7 days after purchase, renewal, addition


def frequency_fits_term(term: Term, frequency: BillingFrequency) -> bool:
    return frequency in BILLING_FREQUENCIES[term]
