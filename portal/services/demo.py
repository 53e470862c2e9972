"""Demo data: one partner brand, three customers with a user in each role, and staff.

Idempotent: running it again finds the brand and leaves everything as it is. Later features
add their own demo rows here.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from portal.db import get_database
from portal.domain.roles import CustomerRole, StaffRole
from portal.models import Customer, Membership, Partner, PartnerHost, StaffUser, User
from portal.services.passwords import hash_password

DEMO_PASSWORD = "demo-portal-2026"  # noqa: S105  (published in the README on purpose)
DEMO_PARTNER_SLUG = "contoso-cloud"


@dataclass(frozen=True)
class DemoCustomer:
    name: str
    tenant_id: str
    currency: str
    domain: str
    credit_hold: bool = False


DEMO_CUSTOMERS = (
    DemoCustomer("Fabrikam Ltd", "6f1c2b0e-7d5a-4c3e-9b1a-2d4e6f8a0b1c", "USD", "fabrikam.example"),
    DemoCustomer(
        "Northwind Traders", "0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d", "EUR", "northwind.example"
    ),
    DemoCustomer(
        "Tailspin Toys",
        "3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f",
        "GBP",
        "tailspin.example",
        credit_hold=True,
    ),
)
ROLE_LOGINS = (
    ("admin", "Alex Admin", CustomerRole.ADMINISTRATOR),
    ("subs", "Sam Subscriptions", CustomerRole.SUBSCRIPTION_MANAGER),
    ("finance", "Fran Finance", CustomerRole.FINANCE_MANAGER),
)
STAFF_LOGINS = (
    ("admin@contoso-cloud.example", "Ada Admin", StaffRole.ADMIN),
    ("service@contoso-cloud.example", "Sid Service", StaffRole.SERVICE),
    ("finance@contoso-cloud.example", "Fiona Finance", StaffRole.FINANCE),
    ("sales@contoso-cloud.example", "Sal Sales", StaffRole.SALES),
)


def create_demo_data() -> bool:
    """Create the demo rows if the demo partner is missing; True when something was created."""
    with get_database().sessions() as db_session:
        if db_session.scalars(select(Partner).where(Partner.slug == DEMO_PARTNER_SLUG)).first():
            return False
        password_hash = hash_password(DEMO_PASSWORD)
        partner = Partner(
            slug=DEMO_PARTNER_SLUG,
            name="Contoso Cloud",
            primary_colour="#0b5cad",
            secondary_colour="#1b1f24",
            support_email="support@contoso-cloud.example",
            support_phone="+1 425 555 0100",
            terms_url="https://contoso-cloud.example/terms",
            privacy_url="https://contoso-cloud.example/privacy",
            timezone="America/New_York",
            hosts=[PartnerHost(host="127.0.0.1"), PartnerHost(host="localhost")],
        )
        db_session.add(partner)
        db_session.flush()
        for demo in DEMO_CUSTOMERS:
            customer = Customer(
                partner_id=partner.id,
                name=demo.name,
                ms_tenant_id=demo.tenant_id,
                default_currency=demo.currency,
                credit_hold=demo.credit_hold,
                credit_limit_minor=2_500_000,
                payment_terms_days=30,
            )
            db_session.add(customer)
            db_session.flush()
            for local, name, role in ROLE_LOGINS:
                user = User(
                    partner_id=partner.id,
                    email=f"{local}@{demo.domain}",
                    name=name,
                    password_hash=password_hash,
                )
                db_session.add(user)
                db_session.flush()
                db_session.add(Membership(customer_id=customer.id, user_id=user.id, role=role))
        for email, name, staff_role in STAFF_LOGINS:
            db_session.add(
                StaffUser(
                    partner_id=partner.id,
                    email=email,
                    name=name,
                    role=staff_role,
                    password_hash=password_hash,
                )
            )
        db_session.commit()
    return True
