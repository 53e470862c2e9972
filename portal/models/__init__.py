"""The typed ORM models, one module per aggregate. Importing this package registers them all."""

from portal.models.agreements import AgreementAcceptance, AttestationState
from portal.models.billing import BillingContract, Invoice  # the billing tables (import from there)
from portal.models.catalog import Product, ProductPrice
from portal.models.identity import PasswordResetToken, WebSession
from portal.models.outbox import OutboxItem, OutboxState
from portal.models.payment_profiles import PaymentProfile as PaymentProfile  # saved cards
from portal.models.payments import PaymentWebhookEvent as PaymentWebhookEvent  # payment tables
from portal.models.scoped import CustomerScoped, PartnerScoped
from portal.models.subscriptions import LicenceChange, Subscription, SubscriptionStatus
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
    "AgreementAcceptance",
    "AttestationState",
    "AuditEvent",
    "BillingContract",
    "Customer",
    "CustomerScoped",
    "Invitation",
    "Invoice",
    "LicenceChange",
    "Membership",
    "OutboxItem",
    "OutboxState",
    "Partner",
    "PartnerHost",
    "PartnerScoped",
    "PasswordResetToken",
    "Product",
    "ProductPrice",
    "StaffUser",
    "Subscription",
    "SubscriptionStatus",
    "User",
    "WebSession",
]
