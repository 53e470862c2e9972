"""The three ways a call to the outside world can end.

- :class:`Succeeded`: it worked; ``value`` is what came back.
- :class:`TechnicalFailure`: it may work later (timeout, 5xx, 429); retry, honouring
  ``retry_after`` when the other side gave one.
- :class:`BusinessRejection`: the other side said no for a reason that will not change by
  retrying (quantity below minimum, card declined); never retried, the reason is shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Succeeded(Generic[T]):
    value: T


@dataclass(frozen=True)
class TechnicalFailure:
    message: str
    retry_after: timedelta | None = None


@dataclass(frozen=True)
class BusinessRejection:
    reason: str
    code: str | None = None


Result = Succeeded[T] | TechnicalFailure | BusinessRejection
