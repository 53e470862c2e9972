"""Test helpers: seeding tenants, signing in through the real forms, reading CSRF tokens."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from portal.core.db import get_database, utcnow
from portal.core.roles import CustomerRole, StaffRole
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

PASSWORD = "correct horse battery staple"
CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


class HttpsClient(FlaskClient):
    """A test client on https://<host>, so __Host- cookies behave as in a browser."""

    host = "portal-a.test"

    def open(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        kwargs.setdefault("base_url", f"https://{self.host}")
        # browsers send a same-origin Referer; Flask-WTF checks it on https (SSL strict)
        headers = dict(kwargs.pop("headers", None) or {})
        headers.setdefault("Referer", f"https://{self.host}/")
        kwargs["headers"] = headers
        return super().open(*args, **kwargs)


def csrf_token(html: str | bytes) -> str:
    text = html.decode() if isinstance(html, bytes) else html
    match = CSRF.search(text)
    assert match, "no CSRF token in the page"
    return match.group(1)


def post_form(
    client: FlaskClient, url: str, data: dict[str, str], page: str | None = None, **kwargs: object
) -> TestResponse:
    """POST like a browser: fetch the page (``page`` or ``url``) for its CSRF token first."""
    token = csrf_token(client.get(page or url).data)
    return client.post(url, data={"csrf_token": token, **data}, **kwargs)


def sign_in(
    client: FlaskClient, email: str, password: str = PASSWORD, staff: bool = False
) -> TestResponse:
    url = "/staff/login" if staff else "/login"
    return post_form(client, url, {"email": email, "password": password})


@dataclass
class Tenant:
    partner: Partner
    host: str
    customers: dict[str, Customer] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)
    memberships: dict[str, Membership] = field(default_factory=dict)
    staff: dict[str, StaffUser] = field(default_factory=dict)
    # filled by seed_licences: "a", "b" (bought 30 days ago), "a:new" (bought 1 day ago)
    products: dict[str, int] = field(default_factory=dict)
    subscriptions: dict[str, int] = field(default_factory=dict)
    changes: dict[str, int] = field(default_factory=dict)


def seed_partner(app: Flask, slug: str, host: str, colour: str = "#0b5cad") -> Tenant:
    """A partner with customers "a" and "b", a user per role in each, and one staff per role.

    Emails: ``<role>@<customer>.<slug>.example`` and ``<staffrole>@staff.<slug>.example``.
    """
    with app.app_context(), get_database(app).sessions() as s:
        password_hash = hash_password(PASSWORD)
        partner = Partner(
            slug=slug,
            name=f"{slug.title()} Cloud",
            primary_colour=colour,
            support_email=f"help@{slug}.example",
            hosts=[PartnerHost(host=host)],
        )
        s.add(partner)
        s.flush()
        tenant = Tenant(partner=partner, host=host)
        for key in ("a", "b"):
            customer = Customer(
                partner_id=partner.id,
                name=f"{slug} customer {key}",
                ms_tenant_id=str(uuid.uuid4()),
                default_currency="USD",
                credit_limit_minor=100_000,
            )
            s.add(customer)
            s.flush()
            tenant.customers[key] = customer
            for role in CustomerRole:
                user = User(
                    partner_id=partner.id,
                    email=f"{role.value}@{key}.{slug}.example",
                    name=f"{role.value.title()} {key.upper()}",
                    password_hash=password_hash,
                )
                s.add(user)
                s.flush()
                membership = Membership(customer_id=customer.id, user_id=user.id, role=role)
                s.add(membership)
                s.flush()
                tenant.users[f"{key}:{role.value}"] = user
                tenant.memberships[f"{key}:{role.value}"] = membership
        for staff_role in StaffRole:
            staff = StaffUser(
                partner_id=partner.id,
                email=f"{staff_role.value}@staff.{slug}.example",
                name=f"Staff {staff_role.value}",
                role=staff_role,
                password_hash=password_hash,
            )
            s.add(staff)
            s.flush()
            tenant.staff[staff_role.value] = staff
        s.commit()
    return tenant


PRICE_MINOR = 1_000  # 10.00 USD per seat and month


def seed_licences(
    app: Flask, tenant: Tenant, provider_key: str = "demo", reduction: str = "within_window"
) -> Tenant:
    """A product (monthly billing, 1-year term, MCA needed) and subscriptions: customers "a"
    and "b" have 10 seats bought 30 days ago; "a:new" has 5 seats bought a day ago. Both
    customers have accepted the MCA (confirmed)."""
    now = utcnow()
    with app.app_context(), get_database(app).sessions() as s:
        product = Product(
            partner_id=tenant.partner.id,
            name="Microsoft 365 Business Standard",
            description="",
            product_class=ProductClass.RESALE,
            subscription_type=SubscriptionType.LICENCE,
            provider_offer_id="CFQ7TTC0LDPB:0001",
            term=Term.P1Y,
            billing_frequency=BillingFrequency.MONTHLY,
            min_quantity=1,
            max_quantity=50,
            reduction=ReductionBehaviour(reduction),
            window_hours=168,
            requires_mca=True,
            active=True,
            prices=[
                ProductPrice(
                    partner_id=tenant.partner.id,
                    currency="USD",
                    price_minor=PRICE_MINOR,
                    cost_minor=800,
                )
            ],
        )
        s.add(product)
        s.flush()
        tenant.products["standard"] = product.id
        for key, customer_key, seats, bought in (
            ("a", "a", 10, now - timedelta(days=30)),
            ("b", "b", 10, now - timedelta(days=30)),
            ("a:new", "a", 5, now - timedelta(days=1)),
        ):
            customer = tenant.customers[customer_key]
            subscription, change = _bought(product, customer, provider_key, seats, bought)
            s.add(subscription)
            s.flush()
            change.subscription_id = subscription.id
            s.add(change)
            s.flush()
            tenant.subscriptions[key] = subscription.id
            tenant.changes[key] = change.id
        for customer in tenant.customers.values():
            s.add(confirmed_acceptance(customer, provider_key, now - timedelta(days=60)))
        s.commit()
    return tenant


def _bought(
    product: Product, customer: Customer, provider_key: str, seats: int, bought: datetime
) -> tuple[Subscription, LicenceChange]:
    subscription = Subscription(
        partner_id=customer.partner_id,
        customer_id=customer.id,
        product_id=product.id,
        provider_key=provider_key,
        provider_ref=f"sub-{uuid.uuid4()}",
        status=SubscriptionStatus.ACTIVE,
        quantity=seats,
        term=product.term,
        billing_frequency=product.billing_frequency,
        currency="USD",
        term_started_at=bought,
        term_ends_on=(bought + timedelta(days=364)).date(),
        version=0,
        created_at=bought,
    )
    change = LicenceChange(
        partner_id=customer.partner_id,
        customer_id=customer.id,
        sequence=1,
        request_id=str(uuid.uuid4()),
        kind=ChangeKind.PURCHASE,
        state=ChangeState.PROVISIONED,
        quantity_from=0,
        quantity_to=seats,
        amount_minor=0,
        currency="USD",
        requested_by="seed",
        requested_at=bought,
        attempts=1,
        effective_at=bought,
        finished_at=bought,
    )
    return subscription, change


def confirmed_acceptance(
    customer: Customer, provider_key: str, accepted_at: datetime
) -> AgreementAcceptance:
    return AgreementAcceptance(
        partner_id=customer.partner_id,
        customer_id=customer.id,
        provider_key=provider_key,
        template_id="seed-template",
        agreement_link="https://www.microsoft.com/licensing/docs/customeragreement",
        first_name="Signer",
        last_name=customer.name,
        email="signer@example.com",
        accepted_at=accepted_at,
        request_id=str(uuid.uuid4()),
        state=AttestationState.CONFIRMED,
        confirmed_at=accepted_at,
    )
