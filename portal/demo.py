"""Demo data: one partner brand, three customers with a user in each role, and staff.

Idempotent: running it again finds the brand and leaves everything as it is. Later features
add their own demo rows here.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from dateutil.relativedelta import relativedelta
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.core.db import get_database, utcnow
from portal.core.roles import CustomerRole, StaffRole
from portal.features.billing.demo import create_demo_billing
from portal.features.catalogue.models import Product, ProductPrice
from portal.features.catalogue.rules import (
    BillingFrequency,
    ProductClass,
    ReductionBehaviour,
    SubscriptionType,
    Term,
)
from portal.features.identity.models import Membership, StaffUser, User
from portal.features.identity.passwords import hash_password
from portal.features.licences.models import (
    AgreementAcceptance,
    AttestationState,
    LicenceChange,
    Subscription,
    SubscriptionStatus,
)
from portal.features.licences.rules import ChangeKind, ChangeState
from portal.features.tenancy.models import Customer, Partner, PartnerHost

DEMO_PASSWORD = "demo-portal-2026"  # noqa: S105  (published in the README on purpose)
DEMO_PARTNER_SLUG = "contoso-cloud"


@dataclass(frozen=True)
class DemoCustomer:
    name: str
    tenant_id: str
    currency: str
    domain: str
    credit_hold: bool = False
    mca_accepted: bool = True


DEMO_CUSTOMERS = (
    DemoCustomer("Fabrikam Ltd", "6f1c2b0e-7d5a-4c3e-9b1a-2d4e6f8a0b1c", "USD", "fabrikam.example"),
    DemoCustomer(
        "Northwind Traders",
        "0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d",
        "EUR",
        "northwind.example",
        mca_accepted=False,
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
    """Create the demo rows that are missing; True when something was created."""
    with get_database().sessions() as db_session:
        partner = db_session.scalars(
            select(Partner).where(Partner.slug == DEMO_PARTNER_SLUG)
        ).first()
        if partner is not None:
            return create_demo_licences(db_session, partner) | create_demo_billing(partner.id)
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
        db_session.flush()
        create_demo_licences(db_session, partner)
        db_session.commit()
    create_demo_billing(partner.id)
    return True


@dataclass(frozen=True)
class DemoProduct:
    key: str
    name: str
    offer_id: str
    term: Term
    frequency: BillingFrequency
    reduction: ReductionBehaviour
    usd_minor: int  # per seat per billing period; EUR and GBP follow at fixed ratios
    components: tuple[tuple[str, str], ...] = ()


DEMO_PRODUCTS = (
    DemoProduct(
        "premium",
        "Microsoft 365 Business Premium",
        "CFQ7TTC0LCHC:0002",
        Term.P1Y,
        BillingFrequency.MONTHLY,
        ReductionBehaviour.WITHIN_WINDOW,
        2200,
    ),
    DemoProduct(
        "e3",
        "Microsoft 365 E3 (monthly term)",
        "CFQ7TTC0LF8Q:0001",
        Term.P1M,
        BillingFrequency.MONTHLY,
        ReductionBehaviour.WITHIN_WINDOW,
        4320,
    ),
    DemoProduct(
        "teams",
        "Microsoft Teams Essentials",
        "CFQ7TTC0QW5P:0001",
        Term.P1Y,
        BillingFrequency.ANNUAL,
        ReductionBehaviour.DISALLOWED,
        4800,
    ),
    DemoProduct(
        "bundle",
        "Secure Mail bundle",
        "CONTOSO-SECURE-MAIL",
        Term.P1Y,
        BillingFrequency.MONTHLY,
        ReductionBehaviour.WITHIN_WINDOW,
        1300,
        components=(
            ("Exchange Online (Plan 1)", "CFQ7TTC0LH16:0001"),
            ("Microsoft Defender for Office 365 (Plan 1)", "CFQ7TTC0LHBK:0001"),
        ),
    ),
)
# (customer index, product key, seats, bought this many days ago)
DEMO_SUBSCRIPTIONS = (
    (0, "premium", 25, 2),
    (0, "e3", 10, 40),
    (0, "bundle", 5, 90),
    (1, "premium", 12, 100),
    (2, "premium", 8, 20),
)
CURRENCY_RATIOS = {"USD": (1, 1), "EUR": (93, 100), "GBP": (79, 100)}


def create_demo_licences(db_session: Session, partner: Partner) -> bool:
    """The catalogue, the customers' subscriptions and their agreements, once."""
    if db_session.scalars(select(Product).where(Product.partner_id == partner.id)).first():
        return False
    products = {demo.key: _demo_product(partner, demo) for demo in DEMO_PRODUCTS}
    db_session.add_all(products.values())
    db_session.flush()
    customers = list(
        db_session.scalars(
            select(Customer).where(Customer.partner_id == partner.id).order_by(Customer.id)
        )
    )
    now = utcnow()
    for index, key, seats, days_ago in DEMO_SUBSCRIPTIONS:
        if index < len(customers):
            bought = now - timedelta(days=days_ago)
            _demo_subscription(db_session, customers[index], products[key], seats, bought)
    for demo, customer in zip(DEMO_CUSTOMERS, customers, strict=False):
        if demo.mca_accepted:
            db_session.add(_demo_acceptance(customer, now - timedelta(days=120)))
    db_session.commit()
    return True


def _demo_product(partner: Partner, demo: DemoProduct) -> Product:
    product = Product(
        partner_id=partner.id,
        name=demo.name,
        description="",
        product_class=ProductClass.RESALE,
        subscription_type=SubscriptionType.LICENCE,
        provider_offer_id=demo.offer_id,
        term=demo.term,
        billing_frequency=demo.frequency,
        min_quantity=1,
        max_quantity=300,
        reduction=demo.reduction,
        requires_mca=True,
        active=True,
        prices=[
            ProductPrice(
                partner_id=partner.id,
                currency=currency,
                price_minor=demo.usd_minor * num // den,
                cost_minor=demo.usd_minor * num * 85 // (den * 100),
            )
            for currency, (num, den) in CURRENCY_RATIOS.items()
        ],
    )
    product.components = [
        Product(
            partner_id=partner.id,
            name=name,
            description="",
            product_class=ProductClass.RESALE,
            subscription_type=SubscriptionType.LICENCE,
            provider_offer_id=offer_id,
            term=demo.term,
            billing_frequency=demo.frequency,
            min_quantity=1,
            max_quantity=300,
            reduction=demo.reduction,
            requires_mca=True,
            active=True,
        )
        for name, offer_id in demo.components
    ]
    return product


def _demo_subscription(
    db_session: Session, customer: Customer, product: Product, seats: int, bought: datetime
) -> Subscription:
    def subscription(of: Product) -> Subscription:
        return Subscription(
            partner_id=customer.partner_id,
            customer_id=customer.id,
            product=of,
            provider_key="demo",
            provider_ref=f"demo-{uuid.uuid4()}",
            status=SubscriptionStatus.ACTIVE,
            quantity=seats,
            term=of.term,
            billing_frequency=of.billing_frequency,
            currency=customer.default_currency,
            term_started_at=bought,
            term_ends_on=(bought + relativedelta(months=of.term.months)).date() - timedelta(days=1),
            version=0,
            created_at=bought,
        )

    parent = subscription(product)
    parent.children = [subscription(component) for component in product.components]
    db_session.add(parent)
    db_session.flush()
    db_session.add(
        LicenceChange(
            partner_id=customer.partner_id,
            customer_id=customer.id,
            subscription_id=parent.id,
            sequence=1,
            request_id=str(uuid.uuid4()),
            kind=ChangeKind.PURCHASE,
            state=ChangeState.PROVISIONED,
            quantity_from=0,
            quantity_to=seats,
            amount_minor=_shown_amount(product, customer.default_currency, seats),
            currency=customer.default_currency,
            requested_by="demo data",
            requested_at=bought,
            attempts=1,
            provider_answer=f"{parent.provider_ref}: {seats} seats, active",
            effective_at=bought,
            finished_at=bought,
        )
    )
    return parent


def _shown_amount(product: Product, currency: str, seats: int) -> int:
    """What the customer was shown for a purchase's first period: billed as shown."""
    price = product.price_in(currency)
    return 0 if price is None else price.price_minor * seats


def _demo_acceptance(customer: Customer, accepted_at: datetime) -> AgreementAcceptance:
    return AgreementAcceptance(
        partner_id=customer.partner_id,
        customer_id=customer.id,
        provider_key="demo",
        template_id="demo-mca-2026-11",
        agreement_link="https://www.microsoft.com/licensing/docs/customeragreement",
        first_name="Alex",
        last_name="Admin",
        email="admin@" + customer.name.split()[0].lower() + ".example",
        phone=None,
        accepted_at=accepted_at,
        request_id=str(uuid.uuid4()),
        state=AttestationState.CONFIRMED,
        confirmed_at=accepted_at,
        provider_reference="demo-agreement",
    )


def request_demo_changes(count: int) -> tuple[int, list[str]]:
    """Add a seat to the demo subscriptions, round robin, as each customer's Administrator,
    through the same use case as the portal's page; returns how many were recorded and the
    refusals ("Northwind Traders: Accept the Microsoft Customer Agreement …")."""
    from portal.core.errors import ServiceError
    from portal.features.licences.services import subscriptions as licences

    queued, refusals = 0, []
    with get_database().sessions() as session:
        ids = list(
            session.scalars(
                select(Subscription.id)
                .join(Partner, Partner.id == Subscription.partner_id)
                .where(
                    Partner.slug == DEMO_PARTNER_SLUG,
                    Subscription.parent_id.is_(None),
                    Subscription.status == SubscriptionStatus.ACTIVE,
                )
                .order_by(Subscription.id)
            )
        )
        if not ids:
            raise ServiceError("no demo subscriptions: run `flask portal demo` first")
        for number in range(count):
            subscription = session.get_one(Subscription, ids[number % len(ids)])
            customer = session.get_one(Customer, subscription.customer_id)
            partner = session.get_one(Partner, customer.partner_id)
            target = licences.target_quantity(session, subscription) + 1
            try:
                licences.request_quantity(
                    session,
                    partner,
                    customer,
                    subscription,
                    target,
                    subscription.version,
                    _administrator(session, customer),
                )
            except ServiceError as refused:
                session.rollback()
                refusals.append(f"{customer.name}: {refused.message}")
                continue
            session.commit()
            queued += 1
    return queued, refusals


def _administrator(session: Session, customer: Customer) -> User:
    return session.scalars(
        select(User)
        .join(Membership, Membership.user_id == User.id)
        .where(
            Membership.customer_id == customer.id,
            Membership.role == CustomerRole.ADMINISTRATOR,
        )
        .order_by(User.id)
        .limit(1)
    ).one()
