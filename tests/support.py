"""Test helpers: seeding tenants, signing in through the real forms, reading CSRF tokens."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from portal.db import get_database
from portal.domain.roles import CustomerRole, StaffRole
from portal.models import Customer, Membership, Partner, PartnerHost, StaffUser, User
from portal.services.passwords import hash_password

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
