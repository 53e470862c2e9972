"""Audit events, written in the same transaction as the change they describe."""

from __future__ import annotations

from typing import Any

from flask import has_request_context, request
from sqlalchemy.orm import Session

from portal.models import AuditEvent


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


def _plain(value: Any) -> Any:
    if isinstance(value, str | int | bool | float) or value is None:
        return value
    return str(value)
