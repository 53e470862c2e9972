"""The single-use link staff email so that a customer can add a card without signing in: sent
only by finance staff and administrators, its token stored hashed, working once, until it
expires, on its own partner's portal only."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from flask import Flask

from portal.core.db import get_database, utcnow
from portal.features.identity.models import AuditEvent
from portal.features.payments.models import CardLink
from tests.conftest import Mailbox
from tests.integration.payments_support import (
    DECLINED,
    SUCCEEDS,
    back_to_portal,
    card_form,
    cards_of,
    demo_gateway,
    payments_app,
)
from tests.support import HttpsClient, Tenant, csrf_token, sign_in

CUSTOMER_EMAIL = "ap@customer-a.example"


@pytest.fixture
def app(payment_apps: Callable[..., Flask]) -> Flask:
    return payments_app(payment_apps)


def staff(app: Flask, role: str = "finance") -> HttpsClient:
    client: HttpsClient = app.test_client()  # type: ignore[assignment]
    assert sign_in(client, f"{role}@staff.alpha.example", staff=True).status_code == 302
    return client


def send_link(client: HttpsClient, customer_id: int, email: str = CUSTOMER_EMAIL) -> Any:
    page = client.get(f"/staff/customers/{customer_id}").get_data(as_text=True)
    return client.post(
        f"/staff/customers/{customer_id}/card-link",
        data={"csrf_token": csrf_token(page), "email": email},
    )


def link_in(mailbox: Mailbox, email: str = CUSTOMER_EMAIL) -> str:
    body = Mailbox.body(mailbox.last_to(email))
    match = re.search(r"https://portal-a\.test(/card-link/[\w-]+)", body)
    assert match, body
    return match.group(1)


def anonymous(app: Flask) -> HttpsClient:
    return app.test_client()  # type: ignore[return-value]


def use_link(client: HttpsClient, path: str, card: str) -> str:
    """Open the link, continue to the gateway's form, type ``card``, come back: the result."""
    page = client.get(path)
    assert page.status_code == 200, page.status_code
    started = client.post(path, data={"csrf_token": csrf_token(page.data)})
    assert started.status_code == 302
    assert urlsplit(started.headers["Location"]).path.startswith("/p/demo_payments/setup/")
    done = back_to_portal(client, card_form(client, started.headers["Location"], card))
    return done.get_data(as_text=True)


def test_finance_staff_send_a_link_the_customer_uses_once_without_signing_in(
    app: Flask, tenant: Tenant, mailbox: Mailbox
) -> None:
    customer = tenant.customers["a"]
    sent = send_link(staff(app), customer.id)
    assert sent.status_code == 302
    mail = mailbox.last_to(CUSTOMER_EMAIL)
    assert mail["Subject"] == "Add a card for alpha customer a at Alpha Cloud"
    body = Mailbox.body(mail)
    assert "The link works once, for 72 hours." in body
    path = link_in(mailbox)
    token = path.rsplit("/", 1)[1]
    # only the token's hash is stored
    with app.app_context(), get_database(app).sessions() as s:
        (stored,) = s.scalars(sa.select(CardLink)).all()
        actions = list(s.scalars(sa.select(AuditEvent.action)))
    assert stored.token_hash == hashlib.sha256(token.encode()).hexdigest() != token
    assert stored.email == CUSTOMER_EMAIL and stored.used_at is None
    assert "payment_method.link_sent" in actions
    visitor = anonymous(app)
    page = visitor.get(path).get_data(as_text=True)
    assert "Add a card for alpha customer a" in page
    assert "This link works once" in page
    result = use_link(visitor, path, SUCCEEDS)
    assert "Card saved" in result and "Visa ending in 4242 is saved for alpha customer a" in result
    (card,) = cards_of(app, customer.id)
    assert card.is_default and card.created_by.startswith("card-link:")
    # used up: the link leads nowhere now, and nothing more can be saved with it
    again = visitor.get(path)
    assert again.status_code == 404
    assert "This link is not valid any more" in again.get_data(as_text=True)
    assert visitor.post(path, data={"csrf_token": csrf_token(again.data)}).status_code == 404
    # the customer's finance people see the card when they sign in
    finance: HttpsClient = app.test_client()  # type: ignore[assignment]
    sign_in(finance, "finance_manager@a.alpha.example")
    assert "Visa •••• 4242" in finance.get("/payment-methods").get_data(as_text=True)
    # and staff see it on the customer page
    assert "Visa •••• 4242" in staff(app).get(f"/staff/customers/{customer.id}").get_data(
        as_text=True
    )


def test_a_declined_card_keeps_the_link_usable(
    app: Flask, tenant: Tenant, mailbox: Mailbox
) -> None:
    send_link(staff(app), tenant.customers["a"].id)
    path = link_in(mailbox)
    visitor = anonymous(app)
    result = use_link(visitor, path, DECLINED)
    assert "No card was saved" in result and "Try another card" in result
    assert visitor.get(path).status_code == 200
    assert "Card saved" in use_link(visitor, path, SUCCEEDS)
    assert len(cards_of(app, tenant.customers["a"].id)) == 1


def test_an_expired_link_does_not_work(app: Flask, tenant: Tenant, mailbox: Mailbox) -> None:
    send_link(staff(app), tenant.customers["a"].id)
    path = link_in(mailbox)
    with app.app_context(), get_database(app).sessions() as s:
        s.execute(sa.update(CardLink).values(expires_at=utcnow() - timedelta(seconds=1)))
        s.commit()
    response = anonymous(app).get(path)
    assert response.status_code == 404
    assert "This link is not valid any more" in response.get_data(as_text=True)


def test_a_new_link_to_the_same_address_replaces_the_old_one(
    app: Flask, tenant: Tenant, mailbox: Mailbox
) -> None:
    client = staff(app)
    send_link(client, tenant.customers["a"].id)
    first = link_in(mailbox)
    send_link(client, tenant.customers["a"].id)
    second = link_in(mailbox)
    assert first != second
    visitor = anonymous(app)
    assert visitor.get(first).status_code == 404
    assert visitor.get(second).status_code == 200


def test_two_tabs_of_one_link_save_one_card(app: Flask, tenant: Tenant, mailbox: Mailbox) -> None:
    """Both tabs reach the gateway's form; the second to come back finds the link used, and
    its card is removed from the gateway again rather than kept."""
    send_link(staff(app), tenant.customers["a"].id)
    path = link_in(mailbox)
    one, two = anonymous(app), anonymous(app)
    first = one.post(path, data={"csrf_token": csrf_token(one.get(path).data)})
    second = two.post(path, data={"csrf_token": csrf_token(two.get(path).data)})
    done_one = back_to_portal(one, card_form(one, first.headers["Location"], SUCCEEDS))
    # the second tab's setup is the link's newest, so come back through it
    after = card_form(two, second.headers["Location"], SUCCEEDS)
    done_two = back_to_portal(two, after)
    texts = [done_one.get_data(as_text=True), done_two.get_data(as_text=True)]
    assert sum("Card saved" in text for text in texts) == 1
    (card,) = cards_of(app, tenant.customers["a"].id)
    listed = demo_gateway(app).list_cards(card.gateway_customer_ref)
    assert [c.card_ref for c in listed.value] == [card.card_ref]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("role", "allowed"), [("admin", True), ("finance", True), ("service", False), ("sales", False)]
)
def test_only_finance_staff_and_administrators_send_links(
    app: Flask, tenant: Tenant, mailbox: Mailbox, role: str, allowed: bool
) -> None:
    client = staff(app, role)
    page = client.get(f"/staff/customers/{tenant.customers['a'].id}").get_data(as_text=True)
    assert ("Send card link" in page) is allowed
    response = client.post(
        f"/staff/customers/{tenant.customers['a'].id}/card-link",
        data={"csrf_token": csrf_token(page), "email": CUSTOMER_EMAIL},
    )
    assert response.status_code == (302 if allowed else 403)
    assert bool([m for m in mailbox.messages if m["To"] == CUSTOMER_EMAIL]) is allowed


@pytest.mark.parametrize(
    ("email", "message"),
    [
        ("", "Enter the email address to send the link to."),
        ("not-an-email", "Enter a valid email address."),
    ],
)
def test_a_bad_address_is_explained_beside_the_field_and_sends_nothing(
    app: Flask, tenant: Tenant, mailbox: Mailbox, email: str, message: str
) -> None:
    response = send_link(staff(app), tenant.customers["a"].id, email)
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert message in html and 'id="error-summary"' in html
    assert f'value="{email}"' in html
    assert mailbox.messages == []
    with app.app_context(), get_database(app).sessions() as s:
        assert s.scalars(sa.select(CardLink)).all() == []


def test_a_link_works_on_its_own_partner_s_portal_only(
    app: Flask, tenant: Tenant, other_tenant: Tenant, mailbox: Mailbox
) -> None:
    send_link(staff(app), tenant.customers["a"].id)
    path = link_in(mailbox)
    elsewhere: HttpsClient = app.test_client()  # type: ignore[assignment]
    elsewhere.host = "portal-b.test"
    assert elsewhere.get(path).status_code == 404
    assert anonymous(app).get(path).status_code == 200


def test_made_up_tokens_lead_nowhere(app: Flask, tenant: Tenant) -> None:
    visitor = anonymous(app)
    for token in ("x", "a" * 43, "a" * 300):
        assert visitor.get(f"/card-link/{token}").status_code == 404
        assert visitor.get(f"/card-link/{token}/done").status_code == 404
