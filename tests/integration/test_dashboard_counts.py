"""The dashboard's counts: members, and invitations still waiting for an answer (not accepted,
not revoked, not expired), of the account being worked on only, through the prebuilt query of
:func:`portal.features.identity.services.people.headcount`."""

from __future__ import annotations

from datetime import timedelta

from flask import Flask

from portal.core import db
from portal.core.db import get_database, utcnow
from portal.core.roles import CustomerRole
from portal.core.scoping import Scope, set_scope
from portal.features.identity.models import Invitation
from portal.features.identity.services import people
from tests.support import HttpsClient, Tenant, sign_in


def _invite(app: Flask, tenant: Tenant, key: str, state: str, number: int) -> None:
    now = utcnow()
    expires_in = timedelta(days=-1 if state == "expired" else 1)
    with app.app_context(), get_database(app).sessions() as s:
        s.add(
            Invitation(
                customer_id=tenant.customers[key].id,
                email=f"{state}{number}@{key}.example",
                role=CustomerRole.FINANCE_MANAGER,
                token_hash=f"{key}-{state}-{number}".ljust(64, "0"),
                invited_by="test",
                created_at=now - timedelta(days=8),
                expires_at=now + expires_in,
                accepted_at=now if state == "accepted" else None,
                revoked_at=now if state == "revoked" else None,
            )
        )
        s.commit()


def _seed(app: Flask, tenant: Tenant) -> None:
    for number, state in enumerate(["live", "live", "accepted", "revoked", "expired"]):
        _invite(app, tenant, "a", state, number)
    _invite(app, tenant, "b", "live", 9)  # another account's


def headcount(customer_id: int) -> tuple[int, int]:
    return people.headcount(db.session, customer_id)


def test_the_prebuilt_counts_count_live_invitations_of_the_account(
    app: Flask, tenant: Tenant
) -> None:
    _seed(app, tenant)
    with app.test_request_context("/", headers={"Host": tenant.host}):
        set_scope(db.session, Scope(tenant.partner.id, tenant.customers["a"].id))
        assert headcount(tenant.customers["a"].id) == (3, 2)
        # the tenant scope still applies: another account's rows are never counted
        assert headcount(tenant.customers["b"].id) == (0, 0)


def test_the_dashboard_shows_members_and_waiting_invitations(
    app: Flask, client: HttpsClient, tenant: Tenant
) -> None:
    _seed(app, tenant)
    sign_in(client, "administrator@a.alpha.example")
    html = client.get("/").get_data(as_text=True)
    assert "3 people can sign in to this account." in html
    assert "2 invitations waiting for an answer." in html


def test_only_administrators_see_the_invitations(
    app: Flask, client: HttpsClient, tenant: Tenant
) -> None:
    _seed(app, tenant)
    sign_in(client, "subscription_manager@a.alpha.example")
    html = client.get("/").get_data(as_text=True)
    assert "3 people can sign in to this account." in html
    assert "waiting for an answer" not in html
