"""Security headers on every route, CSRF on every form, and the CSRF exemption list."""

from __future__ import annotations

from flask import Flask

from portal.web.access import access_of
from portal.web.csrf import csrf
from tests.integration.routes import OBJECT_ROUTES, add_invitations, add_invoices
from tests.support import HttpsClient, Tenant, seed_licences, sign_in

TOKEN_ARGUMENTS = {"token": "not-a-real-token", "filename": "missing.css"}
# the views that may be CSRF-exempt: webhooks authenticated by their signature
SIGNED_WEBHOOKS = frozenset({"stripe_payments.views.webhook"})


def _urls(app: Flask, tenant: Tenant, method: str) -> dict[str, str]:
    """A URL for every route accepting ``method``, with the signed-in user's own ids."""
    from flask import url_for

    urls: dict[str, str] = {}
    with app.test_request_context(base_url="https://portal-a.test"):
        for rule in app.url_map.iter_rules():
            if method not in (rule.methods or set()) or rule.endpoint == "static":
                continue
            values: dict[str, object] = {}
            if rule.endpoint in OBJECT_ROUTES:
                values = dict(OBJECT_ROUTES[rule.endpoint].ids(tenant, "a"))
            else:
                arguments = {**TOKEN_ARGUMENTS, "product_id": tenant.products["standard"]}
                values = {name: arguments[name] for name in rule.arguments}
            urls[rule.endpoint] = url_for(rule.endpoint, **values)
    return urls


def _client_for(app: Flask, endpoint: str) -> HttpsClient:
    client: HttpsClient = app.test_client()  # type: ignore[assignment]
    access = access_of(app.view_functions[endpoint])
    assert access is not None
    if access.kind == "customer":
        sign_in(client, "administrator@a.alpha.example")
    elif access.kind == "staff":
        sign_in(client, "admin@staff.alpha.example", staff=True)
    return client


def test_every_page_carries_the_security_headers(app: Flask, tenant: Tenant) -> None:
    app.config["PORTAL_RATELIMIT_LOGIN_ACCOUNT"] = "1000 per minute"
    app.config["PORTAL_RATELIMIT_LOGIN_IP"] = "1000 per minute"
    add_invitations(app, tenant)
    add_invoices(app, tenant)
    seed_licences(app, tenant)
    urls = _urls(app, tenant, "GET")
    assert len(urls) >= 15
    for endpoint, url in urls.items():
        response = _client_for(app, endpoint).get(url)
        headers = response.headers
        where = f"{endpoint} {url} ({response.status_code})"
        csp = headers.get("Content-Security-Policy", "")
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, where
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, where
        assert headers.get("X-Content-Type-Options") == "nosniff", where
        assert headers.get("Referrer-Policy") == "strict-origin-when-cross-origin", where
        assert headers.get("X-Frame-Options") == "DENY", where
        assert headers.get("Strict-Transport-Security") == "max-age=31536000; includeSubDomains", (
            where
        )
        if endpoint not in {"branding.brand_css", "branding.theme_static"}:
            assert headers.get("Cache-Control") == "no-store", where
        if response.mimetype == "text/html":
            assert "charset=utf-8" in headers.get("Content-Type", ""), where


def test_no_hsts_on_plain_http(app: Flask, tenant: Tenant) -> None:
    response = app.test_client().get("/login", base_url="http://portal-a.test")
    assert "Strict-Transport-Security" not in response.headers
    assert response.headers["Content-Security-Policy"]


def test_every_post_route_refuses_a_request_without_csrf_token(app: Flask, tenant: Tenant) -> None:
    app.config["PORTAL_RATELIMIT_LOGIN_ACCOUNT"] = "1000 per minute"
    app.config["PORTAL_RATELIMIT_LOGIN_IP"] = "1000 per minute"
    add_invitations(app, tenant)
    add_invoices(app, tenant)
    seed_licences(app, tenant)
    urls = _urls(app, tenant, "POST")
    assert len(urls) >= 14
    for endpoint, url in urls.items():
        client = _client_for(app, endpoint)
        response = client.post(
            url,
            data={
                "email": "x@a.alpha.example",
                "role": "administrator",
                "password": "correct horse battery staple",
                "on_hold": "y",
                "reason": "r",
                "locale": "es",
            },
        )
        assert response.status_code == 400, (
            f"POST {url} without CSRF answered {response.status_code}"
        )
        assert "This form has expired" in response.get_data(as_text=True), url
    # and nothing changed: customer a is not on hold, nobody was invited or removed
    client = _client_for(app, "pages.dashboard")
    page = client.get("/account/").get_data(as_text=True)
    assert page.count("Save role") == 3 and "x@a.alpha.example" not in page
    assert "credit hold" not in client.get("/").get_data(as_text=True)


def test_csrf_exemptions_are_exactly_the_allowlist(app: Flask) -> None:
    # only signed webhooks may ever be exempt, one view at a time, and the foundation has none.
    # Flask-WTF keeps exemptions on its one module-level instance, so a plugin's webhook
    # imported by another test of this process is listed too: what matters is this app's views.
    exempt = {
        endpoint
        for endpoint, view in app.view_functions.items()
        if f"{view.__module__}.{view.__name__}" in csrf._exempt_views
    }
    assert exempt == set()
    assert set(csrf._exempt_blueprints) == set()
    assert set(csrf._exempt_views) <= SIGNED_WEBHOOKS


def test_cross_origin_post_is_refused(client: HttpsClient, tenant: Tenant) -> None:
    sign_in(client, "administrator@a.alpha.example")
    from tests.support import csrf_token

    token = csrf_token(client.get("/account/").data)
    response = client.post(
        "/account/invitations",
        data={"csrf_token": token, "email": "y@a.alpha.example", "role": "administrator"},
        headers={"Referer": "https://evil.example/"},
    )
    assert response.status_code == 400
