"""A customer Administrator invites users with a role, changes roles and removes users; staff
invite a customer's first Administrator. Every change is audited."""

from __future__ import annotations

import re
from datetime import timedelta

import time_machine
from flask import Flask
from sqlalchemy import select

from portal.core.db import get_database
from portal.features.identity.models import AuditEvent, Membership
from portal.features.tenancy.models import Customer
from tests.conftest import Mailbox
from tests.support import HttpsClient, Tenant, csrf_token, post_form, sign_in

NEW_PASSWORD = "a brand new passphrase 2026"


def _invite(client: HttpsClient, email: str, role: str) -> str:
    response = post_form(
        client,
        "/account/invitations",
        {"email": email, "role": role},
        page="/account/",
        follow_redirects=True,
    )
    return response.get_data(as_text=True)


def _link(mailbox: Mailbox, email: str) -> str:
    match = re.search(
        r"https://portal-a\.test(/invitations/[\w-]+)", mailbox.body(mailbox.last_to(email))
    )
    assert match
    return match.group(1)


def _actions(app: Flask) -> list[str]:
    with app.app_context(), get_database(app).sessions() as s:
        return list(s.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))


def test_admin_invites_a_new_person_who_joins(
    app: Flask, client: HttpsClient, tenant: Tenant, mailbox: Mailbox
) -> None:
    sign_in(client, "administrator@a.alpha.example")
    page = _invite(client, "new.person@a.alpha.example", "finance_manager")
    assert "Invitation sent to new.person@a.alpha.example." in page
    assert "new.person@a.alpha.example · Finance Manager" in page
    message = mailbox.last_to("new.person@a.alpha.example")
    assert message["Subject"] == "You are invited to alpha customer a on Alpha Cloud"
    assert "as Finance Manager" in mailbox.body(message)

    newcomer: HttpsClient = app.test_client()  # type: ignore[assignment]
    link = _link(mailbox, "new.person@a.alpha.example")
    form = newcomer.get(link).get_data(as_text=True)
    assert "Join alpha customer a" in form and "new.person@a.alpha.example" in form
    response = post_form(newcomer, link, {"name": "New Person", "password": NEW_PASSWORD})
    assert response.status_code == 302
    dashboard = newcomer.get("/").get_data(as_text=True)
    assert "Welcome, New Person" in dashboard and "Finance Manager" in dashboard
    assert newcomer.get("/invoices").status_code == 200
    assert newcomer.get("/account/").status_code == 403
    # single use
    assert app.test_client().get(link).status_code == 400  # type: ignore[union-attr]
    assert "people.invited" in _actions(app) and "people.invitation_accepted" in _actions(app)


def test_an_existing_user_joins_a_second_account_with_their_password(
    app: Flask, client: HttpsClient, tenant: Tenant, mailbox: Mailbox
) -> None:
    sign_in(client, "administrator@a.alpha.example")
    _invite(client, "finance_manager@b.alpha.example", "subscription_manager")
    link = _link(mailbox, "finance_manager@b.alpha.example")
    person: HttpsClient = app.test_client()  # type: ignore[assignment]
    page = person.get(link).get_data(as_text=True)
    assert "You already have an account" in page
    wrong = post_form(person, link, {"password": "not my password at all"})
    assert "That is not the password of finance_manager@b.alpha.example." in wrong.get_data(
        as_text=True
    )
    assert post_form(person, link, {"password": "correct horse battery staple"}).status_code == 302
    page = person.get("/").get_data(as_text=True)
    assert "alpha customer a" in page and "Subscription Manager" in page
    # two accounts now: the switcher lists both and switching changes what is shown
    assert "alpha customer b" in page
    other_id = tenant.customers["b"].id
    token = csrf_token(page)
    person.post(f"/accounts/{other_id}/switch", data={"csrf_token": token})
    assert "Finance Manager" in person.get("/").get_data(as_text=True)


def test_invitation_expires_after_seven_days(
    app: Flask, client: HttpsClient, tenant: Tenant, mailbox: Mailbox
) -> None:
    with time_machine.travel("2026-11-22 10:00:00+00:00", tick=False) as clock:
        sign_in(client, "administrator@a.alpha.example")
        _invite(client, "late@a.alpha.example", "finance_manager")
        link = _link(mailbox, "late@a.alpha.example")
        clock.shift(timedelta(days=7, minutes=1))
        assert app.test_client().get(link).status_code == 400


def test_bad_invitations_are_refused_with_a_message_and_change_nothing(
    app: Flask, client: HttpsClient, tenant: Tenant, mailbox: Mailbox
) -> None:
    sign_in(client, "administrator@a.alpha.example")
    before = _actions(app)
    cases = {
        ("not-an-email", "finance_manager"): "Enter a valid email address.",
        ("", "finance_manager"): "Enter an email address.",
        ("someone@a.alpha.example", "owner"): "Not a valid choice",
        ("finance_manager@a.alpha.example", "finance_manager"): "is already a user of this account",
    }
    for (email, role), message in cases.items():
        response = post_form(
            client, "/account/invitations", {"email": email, "role": role}, page="/account/"
        )
        assert response.status_code == 422, (email, role)
        page = response.get_data(as_text=True)
        assert message in page, (email, role)
        assert f'value="{email}"' in page or not email  # the entered value is kept
    assert _actions(app) == before and mailbox.messages == []


def test_admin_withdraws_an_invitation(
    app: Flask, client: HttpsClient, tenant: Tenant, mailbox: Mailbox
) -> None:
    sign_in(client, "administrator@a.alpha.example")
    _invite(client, "maybe@a.alpha.example", "finance_manager")
    link = _link(mailbox, "maybe@a.alpha.example")
    page = client.get("/account/").get_data(as_text=True)
    invitation_id = re.search(r"/account/invitations/(\d+)/revoke", page)
    assert invitation_id
    page = post_form(
        client,
        f"/account/invitations/{invitation_id.group(1)}/revoke",
        {},
        page="/account/",
        follow_redirects=True,
    ).get_data(as_text=True)
    assert "Invitation to maybe@a.alpha.example withdrawn." in page
    assert "maybe@a.alpha.example · " not in page
    assert app.test_client().get(link).status_code == 400


def test_admin_changes_a_role(app: Flask, client: HttpsClient, tenant: Tenant) -> None:
    sign_in(client, "administrator@a.alpha.example")
    membership = tenant.memberships["a:finance_manager"]
    response = post_form(
        client,
        f"/account/users/{membership.id}/role",
        {"role": "subscription_manager"},
        page="/account/",
        follow_redirects=True,
    )
    assert "Finance_Manager A is now Subscription Manager." in response.get_data(as_text=True)
    person: HttpsClient = app.test_client()  # type: ignore[assignment]
    sign_in(person, "finance_manager@a.alpha.example")
    assert person.get("/subscriptions").status_code == 200
    assert person.get("/invoices").status_code == 403
    assert "people.role_changed" in _actions(app)


def test_the_last_administrator_cannot_be_demoted_or_removed(
    app: Flask, client: HttpsClient, tenant: Tenant
) -> None:
    sign_in(client, "administrator@a.alpha.example")
    me = tenant.memberships["a:administrator"]
    page = post_form(
        client,
        f"/account/users/{me.id}/role",
        {"role": "finance_manager"},
        page="/account/",
        follow_redirects=True,
    ).get_data(as_text=True)
    assert "An account needs at least one Administrator." in page
    page = post_form(
        client, f"/account/users/{me.id}/remove", {}, page="/account/", follow_redirects=True
    ).get_data(as_text=True)
    assert "An account needs at least one Administrator." in page
    assert client.get("/account/").status_code == 200


def test_a_removed_user_loses_access_at_once(
    app: Flask, client: HttpsClient, tenant: Tenant
) -> None:
    person: HttpsClient = app.test_client()  # type: ignore[assignment]
    sign_in(person, "subscription_manager@a.alpha.example")
    assert person.get("/subscriptions").status_code == 200
    sign_in(client, "administrator@a.alpha.example")
    membership = tenant.memberships["a:subscription_manager"]
    page = post_form(
        client,
        f"/account/users/{membership.id}/remove",
        {},
        page="/account/",
        follow_redirects=True,
    ).get_data(as_text=True)
    assert "Subscription_Manager A no longer has access to this account." in page
    response = person.get("/subscriptions")
    assert response.status_code == 302 and response.location.startswith("/login")
    assert "people.removed" in _actions(app)


def test_sign_out_other_sessions(app: Flask, tenant: Tenant) -> None:
    laptop: HttpsClient = app.test_client()  # type: ignore[assignment]
    phone: HttpsClient = app.test_client()  # type: ignore[assignment]
    sign_in(laptop, "finance_manager@a.alpha.example")
    sign_in(phone, "finance_manager@a.alpha.example")
    page = laptop.get("/account/security").get_data(as_text=True)
    assert page.count("<tr>") == 3 and "this browser" in page
    response = post_form(
        laptop,
        "/account/security/sign-out-others",
        {},
        page="/account/security",
        follow_redirects=True,
    )
    assert "Signed out of 1 other session." in response.get_data(as_text=True)
    assert phone.get("/").status_code == 302
    assert laptop.get("/").status_code == 200


def test_staff_invite_a_customers_first_administrator(
    app: Flask, client: HttpsClient, tenant: Tenant, mailbox: Mailbox
) -> None:
    with app.app_context(), get_database(app).sessions() as s:
        fresh = Customer(partner_id=tenant.partner.id, name="Brand New Co", default_currency="EUR")
        s.add(fresh)
        s.commit()
        fresh_id = fresh.id
    sign_in(client, "service@staff.alpha.example", staff=True)
    page = client.get(f"/staff/customers/{fresh_id}").get_data(as_text=True)
    assert "No users yet. Invite the first Administrator." in page
    response = post_form(
        client,
        f"/staff/customers/{fresh_id}/invitations",
        {"email": "boss@brandnew.example", "role": "administrator"},
        page=f"/staff/customers/{fresh_id}",
        follow_redirects=True,
    )
    assert "Invitation sent to boss@brandnew.example." in response.get_data(as_text=True)
    newcomer: HttpsClient = app.test_client()  # type: ignore[assignment]
    post_form(
        newcomer,
        _link(mailbox, "boss@brandnew.example"),
        {"name": "The Boss", "password": NEW_PASSWORD},
    )
    page = newcomer.get("/account/").get_data(as_text=True)
    assert "Brand New Co" in page and "The Boss" in page
    with app.app_context(), get_database(app).sessions() as s:
        roles = list(s.scalars(select(Membership.role).where(Membership.customer_id == fresh_id)))
    assert [r.value for r in roles] == ["administrator"]
