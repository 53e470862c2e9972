"""A statement built once and run under one tenant scope after another gets each scope's criteria,
never a previous one's: the scoped copies are reused, so the scope is part of what picks them."""

from __future__ import annotations

from typing import Any

from flask import Flask
from sqlalchemy import Executable, bindparam, select, update

from portal.core import db
from portal.core.db import get_database
from portal.core.scoping import Scope, set_scope
from portal.features.identity.models import Membership, User
from portal.features.tenancy.models import Customer
from tests.support import HttpsClient, Tenant, sign_in

# built once, as the pages' own statements are (a membership has no partner of its own: the
# partner's criteria come in with its customer)
MEMBERSHIPS = select(Membership.customer_id).join(Customer).order_by(Membership.customer_id)
PARTNER_WIDE_MEMBERSHIPS = MEMBERSHIPS.execution_options(unscoped_customer=True)
USERS = select(User.email).order_by(User.email)
RENAME = update(Customer).values(name=bindparam("new_name"))


def _scalars(app: Flask, tenant: Tenant, key: str | None, statement: Executable) -> list[Any]:
    customer_id = tenant.customers[key].id if key else None
    with app.test_request_context("/", headers={"Host": tenant.host}):
        set_scope(db.session, Scope(tenant.partner.id, customer_id))
        return list(db.session.scalars(statement))


def _names(app: Flask) -> dict[int, str]:
    with app.app_context(), get_database(app).sessions() as s:
        return {row.id: row.name for row in s.execute(select(Customer.id, Customer.name))}


def test_a_reused_select_follows_each_scope(
    app: Flask, tenant: Tenant, other_tenant: Tenant
) -> None:
    a, b = tenant.customers["a"].id, tenant.customers["b"].id
    for _ in range(2):
        assert _scalars(app, tenant, "a", MEMBERSHIPS) == [a, a, a]
        assert _scalars(app, tenant, "b", MEMBERSHIPS) == [b, b, b]
        # the partner's scope alone: both of its customers, none of the other partner's
        assert _scalars(app, tenant, None, MEMBERSHIPS) == [a, a, a, b, b, b]
        # unscoped_customer lifts the customer criteria, never the partner's
        assert _scalars(app, tenant, "a", PARTNER_WIDE_MEMBERSHIPS) == [a, a, a, b, b, b]
        users = _scalars(app, tenant, "b", USERS)
        assert len(users) == 3 and all(email.endswith("@b.alpha.example") for email in users)
        users = _scalars(app, tenant, "a", USERS)
        assert len(users) == 3 and all(email.endswith("@a.alpha.example") for email in users)


def test_a_reused_update_changes_only_the_scope_it_runs_in(
    app: Flask, tenant: Tenant, other_tenant: Tenant
) -> None:
    before = _names(app)
    a, b = tenant.customers["a"].id, tenant.customers["b"].id
    for key, name in (("b", "Renamed B"), ("a", "Renamed A")):
        with app.test_request_context("/", headers={"Host": tenant.host}):
            set_scope(db.session, Scope(tenant.partner.id, tenant.customers[key].id))
            db.session.execute(RENAME, {"new_name": name})
            db.session.commit()
    assert _names(app) == {**before, a: "Renamed A", b: "Renamed B"}


def test_account_pages_of_two_customers_in_turn_list_their_own_people(
    app: Flask, tenant: Tenant
) -> None:
    clients: dict[str, HttpsClient] = {}
    for key in ("a", "b"):
        clients[key] = app.test_client()  # type: ignore[assignment]
        sign_in(clients[key], f"administrator@{key}.alpha.example")
    for _ in range(2):
        for key, other in (("a", "b"), ("b", "a")):
            page = clients[key].get("/account/").get_data(as_text=True)
            assert page.count("Save role") == 3
            assert f"@{key}.alpha.example" in page and f"@{other}.alpha.example" not in page
