"""Core default hook implementations, registered in every app (``CORE_PLUGINS``).

They give every deployment the periodic jobs it needs whatever plugins are loaded: the outbox
sweep (which re-sends work the broker lost or a dead worker abandoned), the daily purge of
expired sign-in sessions and each partner's daily billing run; the core's outbox kinds; and
``core.noop``, a heartbeat that proves the whole path (enqueue, broker, worker, database) works.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from celery.schedules import crontab  # type: ignore[import-untyped]
from flask import current_app, has_app_context

from portal import config
from portal.hookspecs import hookimpl
from portal.tasks.celery_app import (
    BILLING_SCHEDULE_TASK,
    PAYMENTS_RECONCILE_TASK,
    PURGE_SESSIONS_TASK,
    SWEEP_TASK,
)
from portal.tasks.handlers import Done, Outcome

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from portal.models.outbox import OutboxItem
    from portal.tasks.handlers import OutboxHandler


def noop(item: OutboxItem, session: Session) -> Outcome:
    """Does nothing and succeeds: a heartbeat, and the unit of the outbox benchmark."""
    return Done()


def _sweep_seconds() -> int:
    # the hook has no app argument and runs while the app is being built: read the app's
    # setting when there is one, else the environment the app reads it from
    settings = current_app.config if has_app_context() else config.load()
    return int(settings.get("PORTAL_OUTBOX_SWEEP_SECONDS") or 30)


@hookimpl
def portal_beat_schedule() -> dict[str, dict[str, Any]]:
    return {
        "portal.outbox.sweep": {
            "task": SWEEP_TASK,
            "schedule": timedelta(seconds=_sweep_seconds()),
        },
        "portal.sessions.purge": {
            "task": PURGE_SESSIONS_TASK,
            "schedule": crontab(hour=3, minute=17),  # daily, at a quiet hour (UTC)
        },
        # hourly: each partner's day starts at its own midnight; a day already run is skipped
        "portal.billing.schedule": {
            "task": BILLING_SCHEDULE_TASK,
            "schedule": crontab(minute=7),
        },
        # daily: payments that no webhook announced (payment_events.reconcile)
        "portal.payments.reconcile": {
            "task": PAYMENTS_RECONCILE_TASK,
            "schedule": crontab(hour=4, minute=41),
        },
    }


@hookimpl
def portal_outbox_handlers() -> dict[str, OutboxHandler]:
    from portal.services import (
        agreements,
        billing,
        licences,
        payment_events,
        payments,
        provisioning,
    )

    return {
        "core.noop": noop,
        billing.RUN_KIND: billing.run_queued,
        billing.ISSUED_KIND: billing.notify_issued,
        licences.PROVISION_KIND: provisioning.provision,
        provisioning.NOTIFY_KIND: provisioning.notify,
        agreements.ATTEST_KIND: agreements.attest,
        payment_events.RECEIPT_KIND: payment_events.send_receipt,
        payment_events.RECORDED_KIND: payment_events.announce_recorded,
        payments.AUTOPAY_KIND: payments.autopay,
        payments.AUTOPAY_FAILED_KIND: payments.notify_autopay_failed,
    }
