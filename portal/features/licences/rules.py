"""Licence change rules: states, the reduction window, and what a requested quantity may be.

Pure: no Flask, no database. The service (:mod:`portal.features.licences.services.subscriptions`)
gathers the facts
(the subscription's current target, its change history, the product's limits) and asks here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from portal.features.catalogue.rules import ReductionBehaviour


class ChangeState(StrEnum):
    AWAITING = "awaiting"  # held: credit hold, or an earlier change not yet done
    QUEUED = "queued"  # waiting for a worker
    PROVISIONING = "provisioning"  # a worker is talking to the provider
    PROVISIONED = "provisioned"
    RETRYING = "retrying"  # a technical failure; will be tried again
    FAILED = "failed"  # retries exhausted: staff must act
    REJECTED = "rejected"  # the provider refused by a business rule; final
    NOT_APPLICABLE = "not_applicable"  # the change came from the provider's side


class ChangeKind(StrEnum):
    PURCHASE = "purchase"
    QUANTITY = "quantity"
    PROVIDER_SYNC = "provider_sync"
    IMPORT = "import"  # a subscription bought before the portal, brought in from the provider
    RENEWAL = "renewal"  # a new term began (with the scheduled quantity, if one was)


# a change in one of these states holds back every later change of its subscription
HOLDING_STATES = frozenset(
    {
        ChangeState.AWAITING,
        ChangeState.QUEUED,
        ChangeState.PROVISIONING,
        ChangeState.RETRYING,
        ChangeState.FAILED,
    }
)
FINAL_STATES = frozenset(
    {ChangeState.PROVISIONED, ChangeState.REJECTED, ChangeState.NOT_APPLICABLE}
)
# the quantity it asks for counts as what the customer will have
PENDING_STATES = HOLDING_STATES


class HoldReason(StrEnum):
    CREDIT_HOLD = "credit_hold"
    EARLIER_CHANGE = "earlier_change"


@dataclass(frozen=True)
class SeatEvent:
    """Seats added (positive) or removed (negative) at ``at``."""

    at: datetime
    delta: int


@dataclass(frozen=True)
class ReducibleSeats:
    """``quantity`` seats that can still be reduced until ``until``."""

    quantity: int
    until: datetime


def reducible_seats(
    base_quantity: int,
    base_at: datetime,
    events: Iterable[SeatEvent],
    now: datetime,
    window: timedelta,
) -> list[ReducibleSeats]:
    """Seats still inside their reduction window, soonest-closing first.

    The window opens for all seats at ``base_at`` (purchase or renewal) and for each added batch
    at its addition; a reduction removes the newest seats first (they have the most window
    left, and that is what Microsoft refunds against).
    """
    batches = [_Batch(base_quantity, base_at + window)]
    for event in sorted(events, key=lambda e: e.at):
        if event.delta > 0:
            batches.append(_Batch(event.delta, event.at + window))
        else:
            _remove_newest(batches, -event.delta)
    return sorted(
        (ReducibleSeats(b.quantity, b.until) for b in batches if b.quantity > 0 and b.until > now),
        key=lambda seats: seats.until,
    )


@dataclass
class _Batch:
    quantity: int
    until: datetime


def _remove_newest(batches: Sequence[_Batch], seats: int) -> None:
    for batch in reversed(batches):
        taken = min(seats, batch.quantity)
        batch.quantity -= taken
        seats -= taken
        if not seats:
            return


# -- what a requested quantity may be ---------------------------------------------------------


class Refusal(StrEnum):
    """Why a requested quantity is refused; the web layer words each one for the customer."""

    NOT_POSITIVE = "not_positive"
    UNCHANGED = "unchanged"
    BELOW_MINIMUM = "below_minimum"
    ABOVE_MAXIMUM = "above_maximum"
    REDUCTION_NOT_ALLOWED = "reduction_not_allowed"
    OUTSIDE_WINDOW = "outside_window"


class PriceEffect(StrEnum):
    CHARGE = "charge"  # added seats: prorated charge to the end of the period
    CREDIT = "credit"  # reduced inside the window: prorated credit
    NO_REFUND = "no_refund"  # reduced, allowed, but the period already paid is not refunded


@dataclass(frozen=True)
class QuantityLimits:
    minimum: int
    maximum: int
    reduction: ReductionBehaviour


@dataclass(frozen=True)
class QuantityDecision:
    """The verdict on a requested quantity: refused (with why), or allowed with its effect."""

    requested: int
    current: int
    refusal: Refusal | None = None
    effect: PriceEffect | None = None
    # for OUTSIDE_WINDOW: how many seats could be reduced now, and until when
    reducible: int = 0
    reducible_until: datetime | None = None

    @property
    def allowed(self) -> bool:
        return self.refusal is None

    @property
    def seats(self) -> int:
        """Seats added (positive) or removed (negative)."""
        return self.requested - self.current


def decide_quantity(
    current: int,
    requested: int,
    limits: QuantityLimits,
    reducible: Sequence[ReducibleSeats] = (),
) -> QuantityDecision:
    """May the quantity go from ``current`` (what the customer has or has asked for) to
    ``requested``? ``reducible`` is what :func:`reducible_seats` says is inside its window."""

    def refuse(why: Refusal) -> QuantityDecision:
        return QuantityDecision(requested, current, refusal=why)

    if requested < 1:
        return refuse(Refusal.NOT_POSITIVE)
    if requested == current:
        return refuse(Refusal.UNCHANGED)
    if requested < limits.minimum:
        return refuse(Refusal.BELOW_MINIMUM)
    if requested > limits.maximum:
        return refuse(Refusal.ABOVE_MAXIMUM)
    if requested > current:
        return QuantityDecision(requested, current, effect=PriceEffect.CHARGE)
    if limits.reduction is ReductionBehaviour.DISALLOWED:
        return refuse(Refusal.REDUCTION_NOT_ALLOWED)
    if limits.reduction is ReductionBehaviour.ALLOWED:
        return QuantityDecision(requested, current, effect=PriceEffect.NO_REFUND)
    open_seats = sum(batch.quantity for batch in reducible)
    if current - requested > open_seats:
        return QuantityDecision(
            requested,
            current,
            refusal=Refusal.OUTSIDE_WINDOW,
            reducible=open_seats,
            # the soonest-closing batch: until then, all of the open seats can go
            reducible_until=reducible[0].until if reducible else None,
        )
    return QuantityDecision(requested, current, effect=PriceEffect.CREDIT)
