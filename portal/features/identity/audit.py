"""Audit events, written in the same transaction as the change they describe."""

from __future__ import annotations

from typing import Any, cast

from flask import Flask, has_request_context, request
from sqlalchemy import Table
from sqlalchemy.orm import Session

from portal.features.identity.models import AuditEvent


def record(
    db_session: Session,
    *,
    partner_id: int,
    actor: str,
    action: str,
    customer_id: int | None = None,
    **detail: Any,
) -> AuditEvent:
    event = AuditEvent(
        partner_id=partner_id,
        customer_id=customer_id,
        actor=actor,
        action=action,
        detail={key: _plain(value) for key, value in detail.items()},
        ip=request.remote_addr if has_request_context() else None,
    )
    db_session.add(event)
    return event


_AUDIT = cast(Table, AuditEvent.__table__)


def insert_row(
    db_session: Session,
    *,
    partner_id: int,
    actor: str,
    action: str,
    customer_id: int | None = None,
    **detail: Any,
) -> None:
    """:func:`record` as one Core INSERT sent now, for hot paths that need no ORM object back
    (a payment webhook): the same row, in the same transaction, without the unit of work."""
    db_session.connection().execute(
        _AUDIT.insert(),
        {
            "partner_id": partner_id,
            "customer_id": customer_id,
            "actor": actor,
            "action": action,
            "detail": {key: _plain(value) for key, value in detail.items()},
            "ip": request.remote_addr if has_request_context() else None,
        },
    )


def _plain(value: Any) -> Any:
    if isinstance(value, str | int | bool | float) or value is None:
        return value
    return str(value)


def init_app(app: Flask) -> None:
    """Hand the recorder to the capabilities below identity, which cannot import it (tenancy's
    settings: :func:`portal.features.tenancy.settings.set_audit_recorder`)."""
    from portal.features.tenancy.settings import set_audit_recorder

    set_audit_recorder(app, record)
