"""When billing runs happen: the daily schedule, the staff button, the queued run (outbox)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from flask import Flask, current_app
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal.core.db import get_database, utcnow
from portal.core.errors import ServiceError, _
from portal.features.billing.models import (
    BillingRun,
    BillingRunState,
)
from portal.features.billing.services.run import (
    run_billing_for_partner,
)
from portal.features.identity import audit
from portal.features.tenancy.models import Partner
from portal.features.tenancy.services import local_today
from portal.outbox.handlers import Done, GiveUp, Outcome
from portal.outbox.items import enqueue
from portal.outbox.models import OutboxItem

RUN_KIND = "billing.run"


SCHEDULE_ACTOR = "schedule"


CATCH_UP_DAYS = 7  # days a stopped scheduler (or broker) is caught up on when it comes back


RUN_MAX_ATTEMPTS = 3


def request_billing_run(
    db_session: Session, partner: Partner, on: date, started_by: str
) -> BillingRun:
    """The staff button: a queued run for ``on`` (a day in the partner's time zone) and the
    outbox item a worker runs it from, both committed by the caller. A run for a day in the
    future is refused: its changes are not all known yet."""
    today = local_today(partner, utcnow())
    if on > today:
        raise ServiceError(
            _("A billing run can be for today or an earlier day, not a later one."), "on"
        )
    run = BillingRun(
        partner_id=partner.id, run_on=on, state=BillingRunState.QUEUED, started_by=started_by
    )
    db_session.add(run)
    db_session.flush()
    enqueue(
        db_session,
        RUN_KIND,
        {"run_id": run.id},
        partner_id=partner.id,
        max_attempts=RUN_MAX_ATTEMPTS,
    )
    audit.record(
        db_session,
        partner_id=partner.id,
        actor=started_by,
        action="billing.run_requested",
        run=run.id,
        run_on=on.isoformat(),
    )
    return run


def run_queued(item: OutboxItem, session: Session) -> Outcome:
    """Outbox handler for ``billing.run``: run the queued billing run.

    The run commits chunk by chunk in sessions of its own (a long transaction would hold back
    progress and locks); it is idempotent, so a worker that dies part-way through and the
    attempt that takes over bill each contract once. A run that already finished is not run
    again. A failure raises, and the outbox retries it.
    """
    run_id = int(str(item.payload["run_id"]))
    run = session.scalars(select(BillingRun).where(BillingRun.id == run_id)).first()
    if run is None:
        return GiveUp(f"billing run {run_id} does not exist")
    if run.state is BillingRunState.DONE:
        return Done({"skipped": "done"})
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    finished = run_billing_for_partner(
        run.partner_id, run.run_on, run.started_by, run_id=run.id, app=app
    )
    return Done(
        {
            "state": finished.state.value,
            "invoices": finished.invoices_created,
            "lines": finished.lines_created,
        }
    )


def schedule_due_runs(app: Flask, now: datetime | None = None) -> list[int]:
    """The daily schedule (called hourly by Celery beat): for each partner, queue a run for
    each day, up to today in its time zone, that has no scheduled run yet, going back at most
    :data:`CATCH_UP_DAYS` (a scheduler that was down catches up). Returns the runs queued.

    Two schedulers at once could queue the same day twice: harmless, as the second run finds
    every invoice made (the guarantee is the invoice's constraint, not this check).
    """
    now = now or utcnow()
    queued: list[int] = []
    with app.app_context(), get_database(app).sessions() as session:
        partners = list(session.scalars(select(Partner).order_by(Partner.id)))
        for partner in partners:
            today = now.astimezone(ZoneInfo(partner.timezone or "UTC")).date()
            last = session.scalar(
                select(func.max(BillingRun.run_on)).where(
                    BillingRun.partner_id == partner.id, BillingRun.started_by == SCHEDULE_ACTOR
                )
            )
            first = today - timedelta(days=CATCH_UP_DAYS - 1)
            if last is not None:
                first = max(first, last + timedelta(days=1))
            day = first
            while day <= today:
                run = BillingRun(
                    partner_id=partner.id,
                    run_on=day,
                    state=BillingRunState.QUEUED,
                    started_by=SCHEDULE_ACTOR,
                )
                session.add(run)
                session.flush()
                enqueue(
                    session,
                    RUN_KIND,
                    {"run_id": run.id},
                    partner_id=partner.id,
                    max_attempts=RUN_MAX_ATTEMPTS,
                    app=app,
                )
                queued.append(run.id)
                day += timedelta(days=1)
        session.commit()
    return queued


def runs_in_progress(db_session: Session) -> int:
    return (
        db_session.scalar(
            select(func.count(BillingRun.id)).where(
                BillingRun.state.in_((BillingRunState.QUEUED, BillingRunState.RUNNING))
            )
        )
        or 0
    )
