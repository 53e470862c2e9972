"""The core's outbox kinds, each mapped to its capability's handler, and ``core.noop``.

``core.noop`` is a heartbeat that proves the whole path (enqueue, broker, worker, database)
works, and the unit of the outbox benchmark.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from portal.features.billing.services import documents, holds, purchases, schedule
from portal.features.licences.services import agreements, provisioning, renewals, subscriptions
from portal.features.payments.services import events, pay
from portal.hookspecs import hookimpl
from portal.integrations import delivery
from portal.outbox.handlers import Done, Outcome

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from portal.outbox.handlers import OutboxHandler
    from portal.outbox.models import OutboxItem


def noop(item: OutboxItem, session: Session) -> Outcome:
    """Does nothing and succeeds: a heartbeat, and the unit of the outbox benchmark."""
    return Done()


@hookimpl
def portal_outbox_handlers() -> dict[str, OutboxHandler]:
    return {
        "core.noop": noop,
        schedule.RUN_KIND: schedule.run_queued,
        purchases.PURCHASE_KIND: purchases.bill_purchase,
        documents.ISSUED_KIND: documents.notify_issued,
        subscriptions.PROVISION_KIND: provisioning.provision,
        provisioning.NOTIFY_KIND: provisioning.notify,
        agreements.ATTEST_KIND: agreements.attest,
        events.RECEIPT_KIND: events.send_receipt,
        events.RECORDED_KIND: events.announce_recorded,  # pending before the upgrade
        delivery.DELIVER_KIND: delivery.deliver,
        documents.AUTOPAY_KIND: pay.autopay,
        pay.AUTOPAY_FAILED_KIND: pay.notify_autopay_failed,
        documents.REVIEW_KIND: holds.review_hold,
        holds.NOTICE_KIND: holds.tell,
        renewals.RENEW_KIND: renewals.renew,
        renewals.INSTRUCT_KIND: renewals.instruct,
        renewals.REMIND_KIND: renewals.remind,
    }
