"""Notifiers: the Protocol and the message they carry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from portal.integrations.results import Result


@dataclass(frozen=True)
class Notification:
    """A message to one person; ``idempotency_key`` makes a repeated send harmless."""

    idempotency_key: str
    to: str
    subject: str
    text: str
    sender_name: str
    reply_to: str | None = None


@runtime_checkable
class Notifier(Protocol):
    key: str
    display_name: str

    def send(self, notification: Notification) -> Result[None]:
        """Deliver the notification (at most once per idempotency key)."""
        ...
