"""The periodic jobs every deployment needs, whatever plugins are loaded, and when they run.

The outbox sweep (which re-sends work the broker lost or a dead worker abandoned), the daily
purge of expired sign-in sessions, each partner's daily billing run, the daily payments
reconciliation, the hourly review of automatic credit holds and the hourly renewals (terms that
ended renew or expire; renewal reminders). The jobs reach the worker
through ``portal_periodic_tasks`` like any plugin's: the outbox knows their names, not the
capabilities they call.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, Final

from celery.schedules import crontab  # type: ignore[import-untyped]
from flask import Flask, current_app, has_app_context

from portal.core import config
from portal.features.billing.services.holds import review_credit_holds
from portal.features.billing.services.schedule import schedule_due_runs
from portal.features.identity.session_store import purge_expired
from portal.features.licences.services.renewals import run_renewals
from portal.features.licences.services.subscriptions import sweep_awaiting
from portal.features.payments.services.events import reconcile
from portal.hookspecs import hookimpl
from portal.outbox.broker import SWEEP_TASK
from portal.outbox.handlers import PeriodicJob

log = logging.getLogger(__name__)

PURGE_SESSIONS_TASK: Final = "portal.sessions.purge"
BILLING_SCHEDULE_TASK: Final = "portal.billing.schedule"
PAYMENTS_RECONCILE_TASK: Final = "portal.payments.reconcile"
LICENCES_SWEEP_TASK: Final = "portal.licences.sweep_awaiting"
CREDIT_HOLDS_TASK: Final = "portal.billing.credit_holds"
RENEWALS_TASK: Final = "portal.licences.renewals"


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
        # daily: payments that no webhook announced (payments.services.events.reconcile)
        "portal.payments.reconcile": {
            "task": PAYMENTS_RECONCILE_TASK,
            "schedule": crontab(hour=4, minute=41),
        },
        # every 5 minutes: licence changes left awaiting after their reason went (a race)
        "portal.licences.sweep_awaiting": {
            "task": LICENCES_SWEEP_TASK,
            "schedule": timedelta(minutes=5),
        },
        # hourly: automatic credit holds (each partner's day starts at its own midnight)
        "portal.billing.credit_holds": {
            "task": CREDIT_HOLDS_TASK,
            "schedule": crontab(minute=23),
        },
        # hourly: terms that ended (each partner's day starts at its own midnight) renew or
        # expire, once each; renewal reminders go once per term and threshold
        "portal.licences.renewals": {
            "task": RENEWALS_TASK,
            "schedule": crontab(minute=3),
        },
    }


def purge_sessions(app: Flask) -> int:
    return purge_expired(
        app,
        timedelta(minutes=app.config["PORTAL_SESSION_IDLE_MINUTES"]),
        timedelta(hours=app.config["PORTAL_SESSION_ABSOLUTE_HOURS"]),
    )


def billing_schedule(app: Flask) -> int:
    return len(schedule_due_runs(app))  # queues outbox items: the runs are workers' work


def credit_holds(app: Flask) -> int:
    counts = review_credit_holds(app)
    log.info("credit holds: %s", counts)
    return sum(counts.get(key, 0) for key in ("on", "off"))


def renewals(app: Flask) -> int:
    return run_renewals(app)  # queues outbox items: the provider is read by workers


def payments_reconcile(app: Flask) -> int:
    report = reconcile(app)
    log.info("payments reconciliation %s", report.line())
    return report.recorded


@hookimpl
def portal_periodic_tasks() -> dict[str, PeriodicJob]:
    return {
        PURGE_SESSIONS_TASK: purge_sessions,
        BILLING_SCHEDULE_TASK: billing_schedule,
        PAYMENTS_RECONCILE_TASK: payments_reconcile,
        LICENCES_SWEEP_TASK: sweep_awaiting,
        CREDIT_HOLDS_TASK: credit_holds,
        RENEWALS_TASK: renewals,
    }
