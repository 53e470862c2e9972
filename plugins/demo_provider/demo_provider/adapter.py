"""The demo licence provider: a :class:`~portal.integrations.providers.ProviderAdapter` that
keeps its subscriptions in its own tables and behaves like a real provider.

- ``set_quantity`` is idempotent by ``request_id``: the first final result is recorded and
  every repeat of the request returns it without a second effect.
- It takes a while (``DELAY_SECONDS``, default 2) before it answers a new request.
- A share of requests fails technically (``FAILURE_RATE``, default 0.1; the caller retries) and
  a share is refused by a business rule (``REJECTION_RATE``, default 0.05). Both are decided
  from the request id (and, for technical failures, the attempt number), so a run is
  reproducible and a retry of a technically-failed request can succeed.
- Quantities below 1 or above 10,000 are always refused, with the reason.
- Reading back (``get_subscription``) never fails at random.
- Renewals: a subscription bought here has a term; when it is read after its term ended it
  renews (the next term starts the day after, with the quantity scheduled for it, if one was)
  or, with auto-renew off, expires. ``set_auto_renew`` and ``schedule_renewal_quantity`` set
  absolute values, so a repeat has no second effect.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from dateutil.relativedelta import relativedelta
from sqlalchemy import Engine, Insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from demo_provider.models import DemoRequest, DemoSubscription
from portal.core.db import utcnow
from portal.integrations.providers import (
    AgreementAttestation,
    AgreementConfirmation,
    AgreementTemplate,
    AutoRenewSetting,
    NewSubscription,
    ProviderCustomer,
    ProviderSubscription,
    QuantityChange,
    RenewalQuantity,
)
from portal.integrations.registry import PluginError
from portal.integrations.results import (
    BusinessRejection,
    Result,
    Succeeded,
    TechnicalFailure,
)

log = logging.getLogger(__name__)

MIN_QUANTITY = 1
MAX_QUANTITY = 10_000
DEMO_OFFER_ID = "DEMO-OFFER-365"
ACTIVE = "active"
EXPIRED = "expired"
TERM_MONTHS = {"P1M": 1, "P1Y": 12, "P3Y": 36}
REJECTED_BY_RULE = BusinessRejection("Quantity not allowed by the demo rules", code="demo.rejected")
DEMO_AGREEMENT = AgreementTemplate(
    template_id="demo-mca-2026-11",
    link="https://www.microsoft.com/licensing/docs/customeragreement",
)


@dataclass(frozen=True)
class DemoProviderSettings:
    """``PORTAL_DEMO_PROVIDER_*`` settings, parsed and checked."""

    delay_seconds: float = 2.0
    failure_rate: float = 0.1
    rejection_rate: float = 0.05
    retry_after_seconds: float = 5.0

    @classmethod
    def from_settings(cls, raw: Mapping[str, Any]) -> DemoProviderSettings:
        def number(name: str, default: float, upper: float | None = None) -> float:
            value = raw.get(name)
            if value is None or value == "":
                return default
            try:
                parsed = float(value)
            except (TypeError, ValueError):
                parsed = -1.0
            if parsed < 0 or (upper is not None and parsed > upper):
                limit = f"between 0 and {upper:g}" if upper is not None else "0 or more"
                raise PluginError(
                    f"PORTAL_DEMO_PROVIDER_{name} must be a number {limit}, not {value!r}"
                )
            return parsed

        return cls(
            delay_seconds=number("DELAY_SECONDS", cls.delay_seconds),
            failure_rate=number("FAILURE_RATE", cls.failure_rate, 1.0),
            rejection_rate=number("REJECTION_RATE", cls.rejection_rate, 1.0),
            retry_after_seconds=number("RETRY_AFTER_SECONDS", cls.retry_after_seconds),
        )


def roll(*parts: str) -> float:
    """A number in [0, 1) fixed by ``parts``: the demo's reproducible dice."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def fails_technically(request_id: str, attempt: int, rate: float) -> bool:
    return roll(request_id, "attempt", str(attempt)) < rate


def rejected_by_rule(request_id: str, rate: float) -> bool:
    return roll(request_id, "rule") < rate


class DemoProvider:
    """The ``"demo"`` provider adapter."""

    key = "demo"
    display_name = "Demo provider"

    def __init__(
        self,
        engine: Engine,
        settings: DemoProviderSettings | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine = engine
        self.settings = settings or DemoProviderSettings()
        self._sleep = sleep
        self._clock = clock

    def __repr__(self) -> str:
        return f"<DemoProvider key={self.key!r}>"

    # -- the Protocol ------------------------------------------------------------------------

    def get_subscription(
        self, customer_tenant_id: str, subscription_ref: str
    ) -> Result[ProviderSubscription]:
        """Read one subscription back; an unknown one is a rejection coded ``demo.not_found``."""
        try:
            with Session(self.engine) as session, session.begin():
                row = session.scalars(
                    select(DemoSubscription).where(
                        DemoSubscription.customer_tenant_id == customer_tenant_id,
                        DemoSubscription.subscription_ref == subscription_ref,
                    )
                ).first()
                if row is None:
                    return BusinessRejection(
                        "The demo provider has no such subscription for this customer",
                        code="demo.not_found",
                    )
                _roll(row, self._clock().date())
                return Succeeded(_as_subscription(row))
        except SQLAlchemyError as error:
            return self._store_failure(error)

    def find_customers(self, query: str) -> Result[list[ProviderCustomer]]:
        """The demo provider knows every customer: a tenant id is found as itself, a domain as
        the tenant its name makes (the same domain always gives the same tenant id)."""
        text = query.strip().lower()
        if not text:
            return Succeeded([])
        try:
            tenant = str(uuid.UUID(text))
        except ValueError:
            domain = text if "." in text else f"{text}.onmicrosoft.com"
            company = domain.split(".")[0].replace("-", " ").title()
            tenant = str(uuid.uuid5(uuid.NAMESPACE_DNS, f"demo-tenant:{domain}"))
            return Succeeded([ProviderCustomer(tenant, company, domain)])
        return Succeeded([ProviderCustomer(tenant, f"Demo customer {tenant[:8]}")])

    def list_subscriptions(self, customer_tenant_id: str) -> Result[list[ProviderSubscription]]:
        """Every subscription the demo provider holds for the tenant, oldest first (none for a
        tenant it has never seen: the demo provider knows every customer)."""
        try:
            with Session(self.engine) as session, session.begin():
                rows = list(
                    session.scalars(
                        select(DemoSubscription)
                        .where(DemoSubscription.customer_tenant_id == customer_tenant_id)
                        .order_by(DemoSubscription.id)
                    )
                )
                today = self._clock().date()
                for row in rows:
                    _roll(row, today)
                return Succeeded([_as_subscription(row) for row in rows])
        except SQLAlchemyError as error:
            return self._store_failure(error)

    def set_quantity(self, change: QuantityChange) -> Result[ProviderSubscription]:
        """Set the subscription to ``change.target_quantity`` exactly once per request id.

        An unknown subscription is created (the demo provider sells anything).
        """
        return self._set(change, DEMO_OFFER_ID)

    def create_subscription(self, purchase: NewSubscription) -> Result[ProviderSubscription]:
        """Buy a subscription: its reference follows from the request id, so a repeated
        purchase request finds the subscription the first one made instead of a second one."""
        ref = f"demo-{uuid.uuid5(uuid.NAMESPACE_URL, 'demo-purchase:' + purchase.request_id)}"
        change = QuantityChange(
            purchase.request_id, purchase.customer_tenant_id, ref, purchase.quantity
        )
        return self._set(change, purchase.offer_id, purchase.term)

    def get_agreement_template(self) -> Result[AgreementTemplate]:
        return Succeeded(DEMO_AGREEMENT)

    def confirm_agreement(self, attestation: AgreementAttestation) -> Result[AgreementConfirmation]:
        """Every well-formed acceptance of the current agreement is confirmed (idempotently:
        the same acceptance again gets the same answer)."""
        if attestation.template_id != DEMO_AGREEMENT.template_id:
            return BusinessRejection(
                "That is not the current Microsoft Customer Agreement", code="demo.old_agreement"
            )
        if not (attestation.first_name.strip() and attestation.last_name.strip()):
            return BusinessRejection("The signer's name is missing", code="demo.invalid_contact")
        return Succeeded(
            AgreementConfirmation(
                template_id=attestation.template_id,
                reference=f"demo-agreement-{attestation.request_id}",
            )
        )

    def set_auto_renew(self, setting: AutoRenewSetting) -> Result[ProviderSubscription]:
        """Turn the renewal on or off (an absolute value: a repeat changes nothing)."""
        return self._instruct(
            setting.customer_tenant_id, setting.subscription_ref, auto_renew=setting.auto_renew
        )

    def schedule_renewal_quantity(self, renewal: RenewalQuantity) -> Result[ProviderSubscription]:
        """Schedule the next term's quantity (absolute: a repeat changes nothing)."""
        refusal = _check_quantity(renewal.quantity)
        if refusal is not None:
            return refusal
        return self._instruct(
            renewal.customer_tenant_id, renewal.subscription_ref, renewal_quantity=renewal.quantity
        )

    def _instruct(self, tenant: str, ref: str, **values: object) -> Result[ProviderSubscription]:
        try:
            with Session(self.engine) as session, session.begin():
                row = session.scalars(
                    select(DemoSubscription)
                    .where(
                        DemoSubscription.customer_tenant_id == tenant,
                        DemoSubscription.subscription_ref == ref,
                    )
                    .with_for_update()
                ).first()
                if row is None:
                    return BusinessRejection(
                        "The demo provider has no such subscription for this customer",
                        code="demo.not_found",
                    )
                _roll(row, self._clock().date())
                if row.status != ACTIVE:
                    return BusinessRejection(
                        "The subscription is no longer active", code="demo.not_active"
                    )
                if any(getattr(row, name) != value for name, value in values.items()):
                    for name, value in values.items():
                        setattr(row, name, value)
                    row.version += 1
                    row.updated_at = self._clock()
                return Succeeded(_as_subscription(row))
        except SQLAlchemyError as error:
            return self._store_failure(error)

    def _set(
        self, change: QuantityChange, offer_id: str, term: str | None = None
    ) -> Result[ProviderSubscription]:
        refusal = _check_quantity(change.target_quantity)
        if refusal is not None:
            return refusal
        try:
            recorded = self._recorded(change)
            if recorded is not None:
                return recorded
            if self.settings.delay_seconds:
                self._sleep(self.settings.delay_seconds)
            return self._attempt(change, offer_id, term)
        except SQLAlchemyError as error:
            return self._store_failure(error)

    # -- the work ------------------------------------------------------------------------------

    def _recorded(self, change: QuantityChange) -> Result[ProviderSubscription] | None:
        with Session(self.engine) as session:
            request = session.get(DemoRequest, change.request_id)
            if request is None:
                return None
            return _replay(request, change)

    def _attempt(
        self, change: QuantityChange, offer_id: str, term: str | None
    ) -> Result[ProviderSubscription]:
        settings = self.settings
        with Session(self.engine) as session, session.begin():
            # claim the request: the row (and, on PostgreSQL, its lock) serialises concurrent
            # deliveries of the same request, so only one of them can apply it
            session.execute(
                _insert_ignoring_duplicates(
                    self.engine,
                    DemoRequest,
                    {
                        "request_id": change.request_id,
                        "customer_tenant_id": change.customer_tenant_id,
                        "subscription_ref": change.subscription_ref,
                        "target_quantity": change.target_quantity,
                        "attempts": 0,
                        "created_at": self._clock(),
                    },
                )
            )
            claimed = session.execute(
                update(DemoRequest)
                .where(DemoRequest.request_id == change.request_id, DemoRequest.outcome.is_(None))
                .values(attempts=DemoRequest.attempts + 1)
            )
            request = session.get(DemoRequest, change.request_id, populate_existing=True)
            assert request is not None
            if getattr(claimed, "rowcount", 0) != 1:
                replayed = _replay(request, change)
                assert replayed is not None
                return replayed
            conflict = _conflict(request, change)
            if conflict is not None:
                return conflict
            if fails_technically(change.request_id, request.attempts, settings.failure_rate):
                return TechnicalFailure(
                    "The demo provider is temporarily unavailable (simulated)",
                    retry_after=timedelta(seconds=settings.retry_after_seconds),
                )
            if rejected_by_rule(change.request_id, settings.rejection_rate):
                request.outcome = "rejected"
                request.reason = REJECTED_BY_RULE.reason
                request.code = REJECTED_BY_RULE.code
                request.finished_at = self._clock()
                return REJECTED_BY_RULE
            subscription = self._apply(session, change, offer_id, term)
            request.outcome = "succeeded"
            request.result_quantity = subscription.quantity
            request.result_offer_id = subscription.offer_id
            request.result_status = subscription.status
            request.finished_at = self._clock()
            # what a repeat of the request answers too (``_replay``): the quantity's facts
            return Succeeded(
                ProviderSubscription(
                    subscription_ref=subscription.subscription_ref,
                    offer_id=subscription.offer_id,
                    quantity=subscription.quantity,
                    status=subscription.status,
                )
            )

    def _apply(
        self, session: Session, change: QuantityChange, offer_id: str, term: str | None
    ) -> DemoSubscription:
        now = self._clock()
        months = TERM_MONTHS.get(term or "")
        session.execute(
            _insert_ignoring_duplicates(
                self.engine,
                DemoSubscription,
                {
                    "customer_tenant_id": change.customer_tenant_id,
                    "subscription_ref": change.subscription_ref,
                    "offer_id": offer_id,
                    "quantity": change.target_quantity,
                    "status": ACTIVE,
                    "version": 0,
                    "updated_at": now,
                    "term": term if months else None,
                    "term_ends_on": _term_end(now.date(), months) if months else None,
                    "auto_renew": True,
                },
            )
        )
        session.execute(
            update(DemoSubscription)
            .where(
                DemoSubscription.customer_tenant_id == change.customer_tenant_id,
                DemoSubscription.subscription_ref == change.subscription_ref,
            )
            .values(
                quantity=change.target_quantity,
                version=DemoSubscription.version + 1,
                updated_at=now,
            )
        )
        subscription = session.scalars(
            select(DemoSubscription)
            .where(
                DemoSubscription.customer_tenant_id == change.customer_tenant_id,
                DemoSubscription.subscription_ref == change.subscription_ref,
            )
            .execution_options(populate_existing=True)
        ).one()
        return subscription

    def _store_failure(self, error: SQLAlchemyError) -> TechnicalFailure:
        log.warning("demo provider: its store failed (%s: %s)", type(error).__name__, error)
        return TechnicalFailure(
            "The demo provider could not reach its store",
            retry_after=timedelta(seconds=self.settings.retry_after_seconds),
        )


def _check_quantity(quantity: int) -> BusinessRejection | None:
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        return BusinessRejection(
            "The quantity must be a whole number", code="demo.invalid_quantity"
        )
    if quantity < MIN_QUANTITY:
        return BusinessRejection(
            f"The quantity must be at least {MIN_QUANTITY}", code="demo.quantity_too_low"
        )
    if quantity > MAX_QUANTITY:
        return BusinessRejection(
            f"The quantity cannot be more than {MAX_QUANTITY:,}", code="demo.quantity_too_high"
        )
    return None


def _conflict(request: DemoRequest, change: QuantityChange) -> BusinessRejection | None:
    if (request.customer_tenant_id, request.subscription_ref, request.target_quantity) != (
        change.customer_tenant_id,
        change.subscription_ref,
        change.target_quantity,
    ):
        return BusinessRejection(
            "This request id was already used for a different change",
            code="demo.request_id_reused",
        )
    return None


def _replay(request: DemoRequest, change: QuantityChange) -> Result[ProviderSubscription] | None:
    """The recorded result of a finished request; None while it is not final."""
    if request.outcome is None:
        return None
    conflict = _conflict(request, change)
    if conflict is not None:
        return conflict
    if request.outcome == "succeeded":
        assert request.result_quantity is not None
        return Succeeded(
            ProviderSubscription(
                subscription_ref=request.subscription_ref,
                offer_id=request.result_offer_id or DEMO_OFFER_ID,
                quantity=request.result_quantity,
                status=request.result_status or ACTIVE,
            )
        )
    return BusinessRejection(request.reason or REJECTED_BY_RULE.reason, code=request.code)


def _as_subscription(row: DemoSubscription) -> ProviderSubscription:
    """The subscription as read back; its term and renewal only when it has a term here (one
    it knows by its quantity alone reads as the answer to that quantity's request)."""
    months = TERM_MONTHS.get(row.term or "")
    if not months or row.term_ends_on is None:
        return ProviderSubscription(
            subscription_ref=row.subscription_ref,
            offer_id=row.offer_id,
            quantity=row.quantity,
            status=row.status,
        )
    return ProviderSubscription(
        subscription_ref=row.subscription_ref,
        offer_id=row.offer_id,
        quantity=row.quantity,
        status=row.status,
        term_ends_on=row.term_ends_on,
        term=row.term,
        term_started_on=row.term_ends_on + timedelta(days=1) - relativedelta(months=months),
        auto_renew=bool(row.auto_renew),
        renewal_quantity=row.renewal_quantity,
    )


def _term_end(first_day: date, months: int) -> date:
    """The last day of a term of ``months`` starting on ``first_day``."""
    return first_day + relativedelta(months=months) - timedelta(days=1)


def _roll(row: DemoSubscription, today: date) -> None:
    """Renew (or expire) a term that ended before ``today``, as a provider does at term end:
    the next term starts the day after, with the quantity scheduled for it."""
    months = TERM_MONTHS.get(row.term or "")
    while months and row.status == ACTIVE and row.term_ends_on is not None:
        if row.term_ends_on >= today:
            return
        if not row.auto_renew:
            row.status = EXPIRED
        else:
            row.term_ends_on = _term_end(row.term_ends_on + timedelta(days=1), months)
            if row.renewal_quantity is not None:
                row.quantity = row.renewal_quantity
                row.renewal_quantity = None
        row.version += 1


def _insert_ignoring_duplicates(engine: Engine, model: type[Any], values: dict[str, Any]) -> Insert:
    """``INSERT … ON CONFLICT DO NOTHING`` on the portal's two engines."""
    dialect = engine.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(model).values(**values).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(model).values(**values).on_conflict_do_nothing()
    raise PluginError(f"the demo provider supports SQLite and PostgreSQL, not {dialect}")
