"""The typed ORM models, one module per aggregate. Importing this package registers them all."""

from portal.models.identity import PasswordResetToken, WebSession
from portal.models.outbox import OutboxItem, OutboxState
from portal.models.scoped import CustomerScoped, PartnerScoped
from portal.models.tenancy import (
    AuditEvent,
    Customer,
    Invitation,
    Membership,
    Partner,
    PartnerHost,
    StaffUser,
    User,
)

__all__ = [
    "AuditEvent",
    "Customer",
    "CustomerScoped",
    "Invitation",
    "Membership",
    "OutboxItem",
    "OutboxState",
    "Partner",
    "PartnerHost",
    "PartnerScoped",
    "PasswordResetToken",
    "StaffUser",
    "User",
    "WebSession",
]
