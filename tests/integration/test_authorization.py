"""Authorization: every route declares who may use it, every role is checked, and nobody reaches
another customer's or another partner's objects (the url_map matrix)."""

from __future__ import annotations

import pytest
from flask import Flask

from portal.core.roles import CUSTOMER_PERMISSIONS, CustomerRole
from portal.web.access import access_of
from tests.integration.routes import (
    NOT_OBJECT_ARGUMENTS,
    OBJECT_ROUTES,
    add_invitations,
    add_invoices,
    object_argument_names,
)
from tests.support import HttpsClient, Tenant, csrf_token, seed_licences, sign_in

SAFE_METHODS = {"HEAD", "OPTIONS"}


def endpoints_with_arguments(app: Flask) -> set[str]:
    return {rule.endpoint for rule in app.url_map.iter_rules() if rule.arguments}


def test_every_route_with_arguments_is_in_the_matrix(app: Flask) -> None:
    unlisted = endpoints_with_arguments(app) - set(OBJECT_ROUTES) - set(NOT_OBJECT_ARGUMENTS)
    assert not unlisted, (
        f"routes {sorted(unlisted)} take arguments but tests/integration/routes.py does not say "
        "which objects they name: add them to OBJECT_ROUTES (or NOT_OBJECT_ARGUMENTS with why)"
    )
    stale = (set(OBJECT_ROUTES) | set(NOT_OBJECT_ARGUMENTS)) - endpoints_with_arguments(app)
    assert not stale, f"matrix entries for routes that no longer exist: {sorted(stale)}"


def test_every_route_declares_its_access(app: Flask) -> None:
    undeclared = [
        e for e, view in app.view_functions.items() if e != "static" and access_of(view) is None
    ]
    assert undeclared == []


def test_app_refuses_to_start_with_an_undeclared_route(app_factory) -> None:  # type: ignore[no-untyped-def]
    from portal import create_app

    app = app_factory()
    config = dict(app.config)

    from flask import Blueprint

    rogue = Blueprint("rogue", __name__)

    @rogue.route("/rogue")
    def rogue_view() -> str:
        return "secret"

    import portal

    original = portal._register_blueprints

    def with_rogue(app: Flask) -> None:
        original(app)
        app.register_blueprint(rogue)

    portal._register_blueprints = with_rogue  # type: ignore[assignment]
    try:
        with pytest.raises(RuntimeError, match=r"rogue\.rogue_view"):
            create_app(config)
    finally:
        portal._register_blueprints = original  # type: ignore[assignment]


def _request(client: HttpsClient, method: str, url: str, token: str) -> int:
    if method == "GET":
        return client.get(url).status_code
    return client.open(url, method=method, data={"csrf_token": token}).status_code


def _url(app: Flask, endpoint: str, **values: object) -> str:
    with app.test_request_context(base_url="https://portal-a.test"):
        from flask import url_for

        return url_for(endpoint, **values)


def _methods(app: Flask, endpoint: str) -> set[str]:
    rules = [r for r in app.url_map.iter_rules() if r.endpoint == endpoint]
    return set().union(*(r.methods or set() for r in rules)) - SAFE_METHODS


def test_customer_a_never_reaches_customer_b_objects(
    app: Flask, client: HttpsClient, tenant: Tenant
) -> None:
    add_invitations(app, tenant)
    add_invoices(app, tenant)
    seed_licences(app, tenant)
    sign_in(client, "administrator@a.alpha.example")
    token = csrf_token(client.get("/account/").data)
    checked = 0
    for endpoint, route in OBJECT_ROUTES.items():
        if endpoint.startswith("staff"):
            continue
        assert object_argument_names(app, endpoint) == set(route.ids(tenant, "b"))
        url = _url(app, endpoint, **route.ids(tenant, "b"))
        for method in _methods(app, endpoint):
            status = _request(client, method, url, token)
            assert status in (403, 404), f"{method} {url} as customer a answered {status}"
            checked += 1
    assert checked >= 4
    # and nothing of B's changed: B's invitation is still pending, B's members are all there
    assert sign_in(client, "administrator@b.alpha.example").status_code == 302
    page = client.get("/account/").get_data(as_text=True)
    assert "pending@b.alpha.example" in page
    assert page.count("Save role") == 3


def test_staff_of_one_partner_never_reach_another_partners_customers(
    app: Flask, tenant: Tenant, other_tenant: Tenant
) -> None:
    add_invitations(app, other_tenant)
    add_invoices(app, other_tenant)
    seed_licences(app, other_tenant)
    client: HttpsClient = app.test_client()  # type: ignore[assignment]
    sign_in(client, "admin@staff.alpha.example", staff=True)
    token = csrf_token(client.get("/staff/").data)
    checked = 0
    for endpoint, route in OBJECT_ROUTES.items():
        if not endpoint.startswith("staff"):
            continue
        url = _url(app, endpoint, **route.ids(other_tenant, "a"))
        for method in _methods(app, endpoint):
            status = _request(client, method, url, token)
            assert status in (403, 404), f"{method} {url} as alpha staff answered {status}"
            checked += 1
    assert checked >= 3


def test_a_session_of_one_partner_means_nothing_on_another_partners_host(
    app: Flask, tenant: Tenant, other_tenant: Tenant
) -> None:
    client: HttpsClient = app.test_client()  # type: ignore[assignment]
    sign_in(client, "administrator@a.alpha.example")
    cookie = client.get_cookie("__Host-portal_session", domain="portal-a.test")
    assert cookie is not None
    other: HttpsClient = app.test_client()  # type: ignore[assignment]
    other.host = "portal-b.test"
    other.set_cookie("__Host-portal_session", cookie.value, domain="portal-b.test")
    response = other.get("/")
    assert response.status_code == 302 and response.location.startswith("/login")


def test_customer_users_cannot_open_the_staff_area(client: HttpsClient, tenant: Tenant) -> None:
    sign_in(client, "administrator@a.alpha.example")
    response = client.get(f"/staff/customers/{tenant.customers['a'].id}")
    assert response.status_code == 302 and response.location.startswith("/staff/login")


def test_staff_are_not_customer_users(client: HttpsClient, tenant: Tenant) -> None:
    sign_in(client, "admin@staff.alpha.example", staff=True)
    response = client.get("/account/")
    assert response.status_code == 302 and response.location.startswith("/login")


CUSTOMER_PAGES = {
    "/": "view_dashboard",
    "/subscriptions": "view_subscriptions",
    "/usage": "view_usage",
    "/invoices": "view_invoices",
    "/account/": "manage_users",
}


@pytest.mark.parametrize("role", list(CustomerRole))
def test_each_role_sees_exactly_its_pages(app: Flask, tenant: Tenant, role: CustomerRole) -> None:
    client: HttpsClient = app.test_client()  # type: ignore[assignment]
    sign_in(client, f"{role.value}@a.alpha.example")
    allowed = {p.value for p in CUSTOMER_PERMISSIONS[role]}
    dashboard = client.get("/").get_data(as_text=True)
    for path, permission in CUSTOMER_PAGES.items():
        status = client.get(path).status_code
        assert status == (200 if permission in allowed else 403), (role, path, status)
        # the navigation offers exactly the pages the role may open
        assert (f'href="{path}"' in dashboard) == (permission in allowed) or path == "/", (
            role,
            path,
        )


def test_only_administrators_manage_users(app: Flask, tenant: Tenant) -> None:
    client: HttpsClient = app.test_client()  # type: ignore[assignment]
    sign_in(client, "finance_manager@a.alpha.example")
    token = csrf_token(client.get("/").data)
    membership = tenant.memberships["a:subscription_manager"]
    response = client.post(
        f"/account/users/{membership.id}/role", data={"csrf_token": token, "role": "administrator"}
    )
    assert response.status_code == 403
    response = client.post(
        "/account/invitations",
        data={"csrf_token": token, "email": "x@a.alpha.example", "role": "administrator"},
    )
    assert response.status_code == 403


STAFF_ACTIONS = {
    "credit_hold": ("admin", "finance"),
    "invite": ("admin", "service"),
}


@pytest.mark.parametrize("staff_role", ["admin", "service", "finance", "sales"])
def test_staff_roles_are_checked(app: Flask, tenant: Tenant, staff_role: str) -> None:
    client: HttpsClient = app.test_client()  # type: ignore[assignment]
    sign_in(client, f"{staff_role}@staff.alpha.example", staff=True)
    customer_id = tenant.customers["a"].id
    token = csrf_token(client.get(f"/staff/customers/{customer_id}").data)
    hold = client.post(
        f"/staff/customers/{customer_id}/credit-hold",
        data={"csrf_token": token, "on_hold": "y", "reason": "overdue"},
    )
    assert (hold.status_code == 302) == (staff_role in STAFF_ACTIONS["credit_hold"])
    assert hold.status_code in (302, 403)
    invite = client.post(
        f"/staff/customers/{customer_id}/invitations",
        data={
            "csrf_token": token,
            "email": f"new-{staff_role}@a.alpha.example",
            "role": "administrator",
        },
    )
    assert (invite.status_code == 302) == (staff_role in STAFF_ACTIONS["invite"])
    assert invite.status_code in (302, 403)
